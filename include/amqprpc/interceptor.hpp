// Interceptors: ordered hooks around every call, on the client (ClientOptions::interceptors)
// and on the server (ServerOptions::interceptors). They read and add headers, end a call early
// with a status (authentication, authorization, quotas), and observe each outcome and its
// latency (logging, metrics, tracing: the built-in ones in tracing.hpp are interceptors).
//
// Order: before-hooks run first to last, after-hooks last to first, like nested scopes. An
// interceptor whose before-hook returns an error ends the call there: the ones after it do not
// run, and the after-hooks of the ones before it (itself included) see that error.
//
// Each hook gets a `std::any& state`: this interceptor's slot for this one call, empty at first,
// to carry what its before-hook learnt (a start time, a span) to its after-hook.
//
// A call under a retry or hedging policy (RetryPolicy, HedgingPolicy in options.hpp) is made of
// attempts, and client interceptors run around each attempt, as gRPC's per-attempt interceptors
// do: before_call on the client's I/O thread (also for the first attempt), with the attempt's own
// span and, after the first, header x-rpc-previous-attempts in its options; after_call with the
// attempt's outcome (a hedging race's loser ends with cancelled). A refusal fails that attempt,
// which the policy may retry.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "amqprpc/context.hpp"
#include "amqprpc/message.hpp"
#include "amqprpc/metrics.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// One outgoing call as client interceptors see it.
struct ClientCall {
  std::string queue;
  // The call's options; a before-hook may change them (add headers, shorten the timeout).
  CallOptions options;
  bool oneway = false;  // Client::notify
  // This call's client span: the request's traceparent. Its trace is the parent's
  // (CallOptions::trace) or a new one.
  TraceContext trace;
  std::string parent_span_id;  // empty: this call started the trace
  std::chrono::system_clock::time_point start;
};

class ClientInterceptor {
 public:
  virtual ~ClientInterceptor() = default;
  // Before the call is sent, on the calling thread (for an attempt of a call under a policy, on
  // the client's I/O thread: keep it short). A non-ok status fails the call with it, unsent.
  virtual Status before_call(ClientCall& /*call*/, std::any& /*state*/) { return {}; }
  // Once the call has its outcome (a reply, an error reply, a timeout, a lost connection...),
  // before the caller sees it; may change it. Runs where the outcome is delivered: the client's
  // I/O thread (keep it short, never block), or the calling thread for a call refused at once.
  virtual void after_call(const ClientCall& /*call*/, Reply& /*reply*/,
                          std::chrono::nanoseconds /*latency*/, std::any& /*state*/) {}
};

class ServerInterceptor {
 public:
  virtual ~ServerInterceptor() = default;
  // Before the method's allow-list and handler, on the thread that would run the handler. The
  // request carries the method, the verified caller, the headers and the context. A non-ok
  // status answers the request with it; the handler does not run.
  virtual Status before_handler(const Request& /*request*/, std::any& /*state*/) { return {}; }
  // Once the request is answered (also a one-way call, whose reply goes nowhere), before the
  // reply is sent; may change it (add headers). Runs on the thread that answered: a worker, the
  // I/O thread, or whichever thread completed an asynchronous handler's Responder.
  virtual void after_handler(const Request& /*request*/, Reply& /*reply*/,
                             std::chrono::nanoseconds /*latency*/, std::any& /*state*/) {}
};

}  // namespace amqprpc

// ---- built-in interceptors ----

namespace amqprpc {

// Logs one line per call and per request served, such as
//   call prices/Get -> ok in 1.235 ms
//   served prices/Get for 'alice' -> invalid_argument in 0.120 ms: <message>
// Calls and requests that succeed are logged at `ok_level`, failures at warning. An empty Logger
// logs nothing.
class LoggingInterceptor final : public ClientInterceptor, public ServerInterceptor {
 public:
  explicit LoggingInterceptor(Logger logger, LogLevel ok_level = LogLevel::info);
  void after_call(const ClientCall& call, Reply& reply, std::chrono::nanoseconds latency,
                  std::any& state) override;
  void after_handler(const Request& request, Reply& reply, std::chrono::nanoseconds latency,
                     std::any& state) override;

 private:
  Logger logger_;
  LogLevel ok_level_;
};

// Counts calls (client side) or requests served (server side) per method, named
// "<queue>/<method>" ("<queue>" for the default handler): how many, their errors by status code,
// and a latency histogram. Thread-safe; a snapshot is consistent. One instance may serve several
// clients and servers: it shows their sum.
class MetricsInterceptor final : public ClientInterceptor, public ServerInterceptor {
 public:
  struct MethodStats {
    std::uint64_t count = 0;
    std::map<StatusCode, std::uint64_t> errors;
    LatencyHistogram latency;
  };
  MetricsInterceptor();
  ~MetricsInterceptor() override;
  void after_call(const ClientCall& call, Reply& reply, std::chrono::nanoseconds latency,
                  std::any& state) override;
  void after_handler(const Request& request, Reply& reply, std::chrono::nanoseconds latency,
                     std::any& state) override;
  // A snapshot, by method.
  std::map<std::string, MethodStats> snapshot() const;

 private:
  void record(const std::string& method, const Status& status, std::chrono::nanoseconds latency);
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace amqprpc
