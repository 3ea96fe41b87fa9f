#include "amqprpc/context.hpp"

#include <algorithm>

#include "amqprpc/options.hpp"
#include "framework/context_state.hpp"

namespace amqprpc {

namespace {

// What a default Context shows: constants, shared by every such Context.
const TraceContext kNoTrace{};
const std::string kNothing{};

}  // namespace

Context::Context(std::shared_ptr<const detail::ContextState> state) : state_(std::move(state)) {}

std::optional<std::chrono::steady_clock::time_point> Context::deadline() const {
  if (!state_) return std::nullopt;
  return state_->deadline;
}

std::optional<std::chrono::milliseconds> Context::remaining() const {
  auto d = deadline();
  if (!d) return std::nullopt;
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(*d - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds::zero());
}

std::stop_token Context::cancellation() const {
  return state_ ? state_->stop.get_token() : std::stop_token{};
}

bool Context::cancelled() const {
  return state_ && state_->stop.stop_requested();
}

const TraceContext& Context::trace() const {
  return state_ ? state_->trace : kNoTrace;
}

const std::string& Context::parent_span_id() const {
  return state_ ? state_->parent_span_id : kNothing;
}

const std::string& Context::caller() const {
  return state_ ? state_->caller : kNothing;
}

CallOptions Context::call_options() const {
  return call_options(CallOptions{});
}

CallOptions Context::call_options(CallOptions base) const {
  if (!state_) return base;
  if (state_->deadline && (!base.deadline || *state_->deadline < *base.deadline)) {
    base.deadline = state_->deadline;
  }
  if (!base.cancel.stop_possible()) base.cancel = state_->stop.get_token();
  if (state_->trace.valid()) base.trace = state_->trace;
  return base;
}

}  // namespace amqprpc
