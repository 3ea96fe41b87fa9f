// The built-in LoggingInterceptor and MetricsInterceptor (amqprpc/interceptor.hpp).
#include <cstdio>
#include <utility>

#include "amqprpc/interceptor.hpp"
#include "framework/call_name.hpp"
#include "metrics_recorder.hpp"
#include "thread_annotations.hpp"

namespace amqprpc {
namespace {

// "ok in 1.234 ms", or "invalid_argument in 0.120 ms: <message>".
std::string outcome(const Status& status, std::chrono::nanoseconds latency) {
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.3f", std::chrono::duration<double, std::milli>(latency).count());
  std::string out(to_string(status.code()));
  out.append(" in ").append(ms).append(" ms");
  if (!status.ok() && !status.message().empty()) out.append(": ").append(status.message());
  return out;
}

}  // namespace

LoggingInterceptor::LoggingInterceptor(Logger logger, LogLevel ok_level)
    : logger_(std::move(logger)), ok_level_(ok_level) {}

void LoggingInterceptor::after_call(const ClientCall& call, Reply& reply,
                                    std::chrono::nanoseconds latency, std::any& /*state*/) {
  // The logger itself, not detail::log: an interceptor the user installed to log calls must not
  // fall back to writing failures to stderr when given no logger.
  if (!logger_) return;
  std::string line = call.oneway ? "notify " : "call ";
  line.append(detail::call_name(call.queue, call.options.method))
      .append(" -> ")
      .append(outcome(reply.status, latency));
  logger_(reply.status.ok() ? ok_level_ : LogLevel::warning, line);
}

void LoggingInterceptor::after_handler(const Request& request, Reply& reply,
                                       std::chrono::nanoseconds latency, std::any& /*state*/) {
  if (!logger_) return;
  std::string line = "served ";
  line.append(detail::call_name(request.queue, request.method));
  if (!request.caller.empty()) line.append(" for '").append(request.caller).append("'");
  line.append(" -> ").append(outcome(reply.status, latency));
  logger_(reply.status.ok() ? ok_level_ : LogLevel::warning, line);
}

struct MetricsInterceptor::State {
  struct Method {
    std::uint64_t count = 0;
    detail::ErrorCounter errors;
    detail::LatencyRecorder latency;
  };
  mutable detail::Mutex mutex;
  // Every update holds the mutex (not only the lookup), so that a snapshot's count, errors and
  // histogram agree with each other.
  std::map<std::string, Method, std::less<>> methods GUARDED_BY(mutex);
};

MetricsInterceptor::MetricsInterceptor() : state_(std::make_unique<State>()) {}

MetricsInterceptor::~MetricsInterceptor() = default;

void MetricsInterceptor::after_call(const ClientCall& call, Reply& reply,
                                    std::chrono::nanoseconds latency, std::any& /*state*/) {
  record(detail::call_name(call.queue, call.options.method), reply.status, latency);
}

void MetricsInterceptor::after_handler(const Request& request, Reply& reply,
                                       std::chrono::nanoseconds latency, std::any& /*state*/) {
  record(detail::call_name(request.queue, request.method), reply.status, latency);
}

void MetricsInterceptor::record(const std::string& method, const Status& status,
                                std::chrono::nanoseconds latency) {
  detail::MutexLock lock(state_->mutex);
  State::Method& m = state_->methods.try_emplace(method).first->second;
  ++m.count;
  if (!status.ok()) m.errors.count(status.code());
  m.latency.record(std::chrono::duration_cast<std::chrono::steady_clock::duration>(latency));
}

std::map<std::string, MetricsInterceptor::MethodStats> MetricsInterceptor::snapshot() const {
  std::map<std::string, MethodStats> out;
  detail::MutexLock lock(state_->mutex);
  for (const auto& [name, m] : state_->methods) {
    MethodStats& s = out[name];
    s.count = m.count;
    s.errors = m.errors.snapshot();
    s.latency = m.latency.snapshot();
  }
  return out;
}

}  // namespace amqprpc
