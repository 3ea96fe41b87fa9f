// What a handler knows of the call it serves, and hands on to the calls it makes: the caller's
// deadline, a cancellation signal, the W3C trace context and the verified caller. Like gRPC's
// ServerContext, and like it, calls made "on behalf of" a request inherit its deadline,
// cancellation and trace:
//
//   server.method("Total", [&](const amqprpc::Request& req) {
//     // the nested call ends when the caller's deadline does, and is a child span of this one
//     return amqprpc::Reply::ok(client->call("prices", req.body, req.context.call_options()));
//   });
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

namespace amqprpc {

struct CallOptions;

// W3C Trace Context (https://www.w3.org/TR/trace-context/): which trace a call belongs to and
// which span stands for it. Travels in the headers `traceparent` and `tracestate` of every
// request and every reply (docs/PROTOCOL.md).
struct TraceContext {
  std::string trace_id;    // 32 lowercase hex digits, not all zero
  std::string span_id;     // 16 lowercase hex digits, not all zero
  bool sampled = true;     // trace-flags bit 0: whether spans of this trace are recorded
  std::string tracestate;  // vendor data, passed on unchanged (at most 512 bytes)

  // Both ids well-formed.
  bool valid() const;
  // The traceparent header: "00-<trace_id>-<span_id>-<flags>".
  std::string traceparent() const;
  // Reads a traceparent header (and its tracestate) as the W3C rules say: version 00 exactly,
  // a later version by its first four fields, lowercase hex, ids not all zero. nullopt for
  // anything else (the receiver then starts a new trace); a tracestate over 512 bytes is dropped.
  static std::optional<TraceContext> parse(std::string_view traceparent,
                                           std::string_view tracestate = {});
};

namespace detail {
struct ContextState;
}

// A handler's view of the call it serves. A cheap handle (copies share the same call); a
// default-constructed one has no deadline, is never cancelled and has no trace.
//
// Thread safety: every member is safe from any thread, also after the handler answered.
class Context {
 public:
  Context() = default;
  explicit Context(std::shared_ptr<const detail::ContextState> state);  // the server's

  // The caller's deadline (header x-rpc-deadline) on this machine's steady clock; nullopt when
  // the caller sent none (tutorial-6 clients).
  std::optional<std::chrono::steady_clock::time_point> deadline() const;
  // Time left until the deadline, zero once it passed; nullopt without a deadline.
  std::optional<std::chrono::milliseconds> remaining() const;

  // Asked to stop when the caller's deadline passes, or when a stopping server's grace ends
  // (ServerOptions::stop_grace). A handler that sees it may stop working: nobody waits for the
  // answer. Its stop callbacks run on the thread that cancels (the server's I/O thread, or the
  // thread stopping the server): keep them short.
  std::stop_token cancellation() const;
  bool cancelled() const;

  // This call's server span: the caller's trace id (or a new trace when the request carried
  // none) and a span id of its own, which the reply's traceparent carries back.
  const TraceContext& trace() const;
  // The caller's span (the request's traceparent); empty when this call started a trace.
  const std::string& parent_span_id() const;

  // The verified caller (Request::caller).
  const std::string& caller() const;

  // Options for a call made on behalf of this one, from `base`: its deadline is this call's
  // (or base's own, if earlier), it is cancelled with this call (unless base has a cancel token
  // of its own), and its span is a child of this call's span. Headers are not passed on.
  CallOptions call_options() const;
  CallOptions call_options(CallOptions base) const;

 private:
  std::shared_ptr<const detail::ContextState> state_;
};

}  // namespace amqprpc
