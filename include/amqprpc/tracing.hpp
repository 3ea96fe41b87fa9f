// Spans: one per call on the client, one per request on the server, linked by the W3C trace
// context every request and reply carries (traceparent, tracestate). TracingInterceptor makes
// them and hands each finished span to a SpanExporter: JsonLinesExporter writes them as JSON
// lines; a bridge to OpenTelemetry (not packaged by Debian) is one class:
//
//   class OtelExporter : public amqprpc::SpanExporter {
//     void export_span(const amqprpc::Span& s) override {
//       // build an opentelemetry::sdk::trace::SpanData from s and hand it to your exporter
//     }
//   };
//
//   auto tracing = std::make_shared<amqprpc::TracingInterceptor>(
//       std::make_shared<amqprpc::JsonLinesExporter>("spans.jsonl"));
//   client_options.interceptors.push_back(tracing);
//   server_options.interceptors.push_back(tracing);
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

#include "amqprpc/interceptor.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

struct Span {
  enum class Kind { client, server };
  Kind kind = Kind::client;
  std::string name;  // "<queue>/<method>" ("<queue>" for the default handler)
  std::string trace_id;
  std::string span_id;
  std::string parent_span_id;  // empty: a root span
  std::chrono::system_clock::time_point start;
  std::chrono::nanoseconds duration{0};
  Status status;
  // OpenTelemetry's semantic conventions where they fit: rpc.system ("amqp-rpc"), rpc.service
  // (the queue), rpc.method (absent for the default handler); on a server span
  // messaging.message.conversation_id (the correlation id, when the request has one) and
  // enduser.id (the verified caller, when known); on a client span amqprpc.reply.span_id: the
  // server span the reply's traceparent names, so the two link up even when exported apart.
  std::map<std::string, std::string> attributes;
};

// Where finished spans go. export_span is called from the threads that finish calls (client
// I/O threads, server workers, ...), possibly at once: implementations must be thread-safe and
// quick (queue the span if exporting is slow).
class SpanExporter {
 public:
  virtual ~SpanExporter() = default;
  virtual void export_span(const Span& span) = 0;
};

// One JSON object per line and span: {"trace_id", "span_id", "parent_span_id", "name",
// "kind": "client"|"server", "start_unix_nano", "duration_nano", "status": wire name,
// "status_message", "attributes": {...}}. Lines are written whole and flushed.
class JsonLinesExporter final : public SpanExporter {
 public:
  // Appends to the file at `path`; check ok(): unavailable, naming the file and the reason, when
  // it could not be opened (the exporter then drops every span).
  explicit JsonLinesExporter(const std::string& path);
  // Writes to `out`, which must outlive the exporter.
  explicit JsonLinesExporter(std::ostream& out);
  ~JsonLinesExporter() override;
  Status ok() const { return open_; }
  void export_span(const Span& span) override;
  // The line export_span writes for `span` (without the newline).
  static std::string to_json(const Span& span);

 private:
  std::unique_ptr<std::ostream> owned_;
  std::ostream* out_ = nullptr;
  Status open_;
  std::mutex mutex_;
};

// Makes a span per call (client) and per request served (server), for sampled traces, and
// hands it to the exporter when the call ends. Install the same instance on clients and servers.
// It reads the trace context the client and the server already set (ClientCall::trace,
// Request::context.trace()), and changes neither the call nor the reply: a request without a
// trace context, or whose trace is not sampled, gives no span. Thread-safe.
class TracingInterceptor final : public ClientInterceptor, public ServerInterceptor {
 public:
  explicit TracingInterceptor(std::shared_ptr<SpanExporter> exporter);
  Status before_call(ClientCall& call, std::any& state) override;
  void after_call(const ClientCall& call, Reply& reply, std::chrono::nanoseconds latency,
                  std::any& state) override;
  Status before_handler(const Request& request, std::any& state) override;
  void after_handler(const Request& request, Reply& reply, std::chrono::nanoseconds latency,
                     std::any& state) override;

 private:
  std::shared_ptr<SpanExporter> exporter_;
};

}  // namespace amqprpc
