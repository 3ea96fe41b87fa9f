// Minimal Context for the tracing branch's tests; the core branch's context.cpp replaces it.
#include "amqprpc/context.hpp"

#include <utility>

#include "amqprpc/options.hpp"
#include "framework/context_state.hpp"

namespace amqprpc {
namespace {

// A default Context has no state: these stand in for its empty trace and names. Constants,
// not shared mutable state.
const TraceContext& no_trace() {
  static const TraceContext empty;
  return empty;
}
const std::string& no_string() {
  static const std::string empty;
  return empty;
}

}  // namespace

Context::Context(std::shared_ptr<const detail::ContextState> state) : state_(std::move(state)) {}

std::optional<std::chrono::steady_clock::time_point> Context::deadline() const {
  return state_ ? state_->deadline : std::nullopt;
}

std::optional<std::chrono::milliseconds> Context::remaining() const {
  auto d = deadline();
  if (!d) return std::nullopt;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*d - std::chrono::steady_clock::now());
  return left.count() > 0 ? left : std::chrono::milliseconds(0);
}

std::stop_token Context::cancellation() const {
  return state_ ? state_->stop.get_token() : std::stop_token{};
}

bool Context::cancelled() const {
  return state_ && state_->stop.stop_requested();
}

const TraceContext& Context::trace() const {
  return state_ ? state_->trace : no_trace();
}

const std::string& Context::parent_span_id() const {
  return state_ ? state_->parent_span_id : no_string();
}

const std::string& Context::caller() const {
  return state_ ? state_->caller : no_string();
}

CallOptions Context::call_options() const {
  return call_options(CallOptions{});
}

CallOptions Context::call_options(CallOptions base) const {
  if (!state_) return base;
  if (state_->deadline && (!base.deadline || *base.deadline > *state_->deadline)) {
    base.deadline = state_->deadline;
  }
  if (!base.cancel.stop_possible()) base.cancel = state_->stop.get_token();
  if (state_->trace.valid()) base.trace = state_->trace;
  return base;
}

}  // namespace amqprpc
