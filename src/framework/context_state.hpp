#pragma once

#include <chrono>
#include <optional>
#include <stop_token>
#include <string>

#include "amqprpc/context.hpp"

namespace amqprpc::detail {
struct ContextState {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  std::stop_source stop;
  TraceContext trace;          // this request's server span
  std::string parent_span_id;  // the caller's span, empty for a new trace
  std::string caller;
};
}  // namespace amqprpc::detail
