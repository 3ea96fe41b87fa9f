#include "amqprpc/tracing.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "framework/call_name.hpp"
#include "protocol/wire.hpp"

namespace amqprpc {
namespace {

constexpr const char* kRpcSystem = "amqp-rpc";

// The attributes every span has, client or server (OpenTelemetry's rpc.* conventions). A call
// to the default handler has no method, and no rpc.method rather than an empty one.
void add_rpc_attributes(Span& span, const std::string& queue, const std::string& method) {
  span.attributes["rpc.system"] = kRpcSystem;
  span.attributes["rpc.service"] = queue;
  if (!method.empty()) span.attributes["rpc.method"] = method;
}

}  // namespace

JsonLinesExporter::JsonLinesExporter(const std::string& path) {
  auto file = std::make_unique<std::ofstream>(path, std::ios::out | std::ios::app);
  if (!*file) {
    open_ = Status{StatusCode::unavailable,
                   "cannot open span file '" + path + "': " + std::strerror(errno)};
    return;
  }
  owned_ = std::move(file);
  out_ = owned_.get();
}

JsonLinesExporter::JsonLinesExporter(std::ostream& out) : out_(&out) {}

JsonLinesExporter::~JsonLinesExporter() = default;

std::string JsonLinesExporter::to_json(const Span& span) {
  nlohmann::json j;
  j["trace_id"] = span.trace_id;
  j["span_id"] = span.span_id;
  j["parent_span_id"] = span.parent_span_id;
  j["name"] = span.name;
  j["kind"] = span.kind == Span::Kind::client ? "client" : "server";
  j["start_unix_nano"] =
      std::chrono::duration_cast<std::chrono::nanoseconds>(span.start.time_since_epoch()).count();
  j["duration_nano"] = span.duration.count();
  j["status"] = to_string(span.status.code());
  j["status_message"] = span.status.message();
  j["attributes"] = nlohmann::json::object();
  for (const auto& [key, value] : span.attributes) j["attributes"][key] = value;
  // Messages and names can come from the network and need not be UTF-8: replace what is not
  // rather than throw from a thread that finishes calls.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void JsonLinesExporter::export_span(const Span& span) {
  if (!out_) return;
  std::string line = to_json(span);
  line.push_back('\n');
  // One write per line under the lock: spans from concurrent calls never interleave, and a
  // reader tailing the file sees whole lines only.
  std::lock_guard lock(mutex_);
  out_->write(line.data(), static_cast<std::streamsize>(line.size()));
  out_->flush();
}

TracingInterceptor::TracingInterceptor(std::shared_ptr<SpanExporter> exporter)
    : exporter_(std::move(exporter)) {}

// The client fills call.trace (the span's ids) and call.start before any interceptor runs, so
// the span is complete once the outcome is known: nothing to do before the call.
Status TracingInterceptor::before_call(ClientCall& /*call*/, std::any& /*state*/) {
  return {};
}

void TracingInterceptor::after_call(const ClientCall& call, Reply& reply,
                                    std::chrono::nanoseconds latency, std::any& /*state*/) {
  if (!exporter_ || !call.trace.sampled || !call.trace.valid()) return;
  Span span;
  span.kind = Span::Kind::client;
  span.name = detail::call_name(call.queue, call.options.method);
  span.trace_id = call.trace.trace_id;
  span.span_id = call.trace.span_id;
  span.parent_span_id = call.parent_span_id;
  span.start = call.start;
  span.duration = latency;
  span.status = reply.status;
  add_rpc_attributes(span, call.queue, call.options.method);
  // Links this span to the server's even when the server exports elsewhere: its span id is
  // the one the reply names.
  if (auto server = detail::wire::trace_of(reply.headers)) {
    span.attributes["amqprpc.reply.span_id"] = server->span_id;
  }
  exporter_->export_span(span);
}

Status TracingInterceptor::before_handler(const Request& /*request*/, std::any& state) {
  // The latency the server reports is a duration; a span also needs when it began.
  state = std::chrono::system_clock::now();
  return {};
}

void TracingInterceptor::after_handler(const Request& request, Reply& reply,
                                       std::chrono::nanoseconds latency, std::any& state) {
  const TraceContext& trace = request.context.trace();
  if (!exporter_ || !trace.sampled || !trace.valid()) return;
  Span span;
  span.kind = Span::Kind::server;
  span.name = detail::call_name(request.queue, request.method);
  span.trace_id = trace.trace_id;
  span.span_id = trace.span_id;
  span.parent_span_id = request.context.parent_span_id();
  const auto* start = std::any_cast<std::chrono::system_clock::time_point>(&state);
  // Without a start (our before-hook did not run), the latency tells it well enough.
  span.start = start ? *start
                     : std::chrono::system_clock::now() -
                           std::chrono::duration_cast<std::chrono::system_clock::duration>(latency);
  span.duration = latency;
  span.status = reply.status;
  add_rpc_attributes(span, request.queue, request.method);
  if (!request.correlation_id.empty()) {
    span.attributes["messaging.message.conversation_id"] = request.correlation_id;
  }
  if (!request.caller.empty()) span.attributes["enduser.id"] = request.caller;
  exporter_->export_span(span);
}

}  // namespace amqprpc
