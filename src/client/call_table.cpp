#include "client/call_table.hpp"

#include <algorithm>

#include "log.hpp"

namespace amqprpc::detail {

Status PendingCall::intercept(const Logger& logger) {
  if (interceptors == nullptr || interceptors->empty()) return {};
  interceptor_state.resize(interceptors->size());
  for (std::size_t i = 0; i < interceptors->size(); ++i) {
    interceptors_ran = i + 1;
    Status refused;
    if (auto threw = thrown_by(
            [&] { refused = (*interceptors)[i]->before_call(*this, interceptor_state[i]); },
            "a client interceptor threw")) {
      log(logger, LogLevel::error, *threw);
      return {StatusCode::internal, *threw};
    }
    if (!refused.ok()) return refused;
  }
  return {};
}

void PendingCall::complete(Reply reply, const Logger& logger) {
  const auto elapsed = Clock::now() - submitted;
  for (std::size_t i = interceptors_ran; i-- > 0;) {
    if (auto threw = thrown_by(
            [&] { (*interceptors)[i]->after_call(*this, reply, elapsed, interceptor_state[i]); },
            "a client interceptor's after_call threw")) {
      log(logger, LogLevel::error, *threw);
    }
  }
  interceptors_ran = 0;  // complete() runs once, but never runs the hooks twice
  if (latency != nullptr) latency->record(elapsed);
  if (errors != nullptr && !reply.status.ok()) errors->count(reply.status.code());
  if (auto* p = std::get_if<std::promise<Reply>>(&done)) {
    p->set_value(std::move(reply));
    return;
  }
  auto* fn = std::get_if<std::function<void(Reply)>>(&done);
  if (fn == nullptr || !*fn) return;
  if (auto threw =
          thrown_by([&] { (*fn)(std::move(reply)); }, "a call's completion callback threw")) {
    log(logger, LogLevel::error, *threw);
  }
}

PendingCall& CallTable::accept(Ptr call) {
  PendingCall& ref = *call;
  deadlines_.push(call.get());
  const std::string_view key = call->correlation_id;
  calls_.emplace(key, std::move(call));
  return ref;
}

PendingCall* CallTable::find(const std::string& correlation_id) {
  auto it = calls_.find(correlation_id);
  return it == calls_.end() ? nullptr : it->second.get();
}

CallTable::Ptr CallTable::take(const std::string& correlation_id) {
  auto it = calls_.find(correlation_id);
  if (it == calls_.end()) return nullptr;
  Ptr call = std::move(it->second);
  calls_.erase(it);
  deadlines_.remove(call.get());
  return call;
}

CallTable::Ptr CallTable::take_answered(const std::string& correlation_id) {
  Ptr call = take(correlation_id);
  if (call) remember(correlation_id);
  return call;
}

bool CallTable::answered_recently(const std::string& correlation_id) const {
  const std::size_t h = std::hash<std::string>{}(correlation_id);
  return std::find(recent_ring_.begin(), recent_ring_.end(), h) != recent_ring_.end();
}

void CallTable::hold(PendingCall& call) {
  call.sent = false;
  if (held_.size() > 2 * calls_.size() + 64) {
    // Held calls that timed out or were cancelled leave stale ids behind: drop them.
    std::erase_if(held_, [this](const std::string& id) { return !calls_.count(id); });
  }
  held_.push_back(call.correlation_id);
}

std::vector<PendingCall*> CallTable::take_held() {
  std::vector<PendingCall*> out;
  out.reserve(held_.size());
  for (const auto& id : held_) {
    auto it = calls_.find(id);
    if (it != calls_.end() && !it->second->sent) out.push_back(it->second.get());
  }
  held_.clear();
  return out;
}

std::optional<Clock::time_point> CallTable::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.top()->deadline;
}

CallTable::Ptr CallTable::take_expired(Clock::time_point now) {
  if (deadlines_.empty() || deadlines_.top()->deadline > now) return nullptr;
  return take(deadlines_.top()->correlation_id);
}

std::vector<CallTable::Ptr> CallTable::take_all() {
  std::vector<Ptr> out;
  out.reserve(calls_.size());
  for (auto& [id, call] : calls_) out.push_back(std::move(call));
  calls_.clear();
  deadlines_.clear();
  held_.clear();
  return out;
}

std::vector<CallTable::Ptr> CallTable::take_unless(const std::function<bool(PendingCall&)>& keep) {
  std::vector<Ptr> out;
  for (auto it = calls_.begin(); it != calls_.end();) {
    if (keep(*it->second)) {
      ++it;
      continue;
    }
    deadlines_.remove(it->second.get());
    out.push_back(std::move(it->second));
    it = calls_.erase(it);
  }
  return out;
}

void CallTable::remember(const std::string& id) {
  const std::size_t h = std::hash<std::string>{}(id);
  if (recent_ring_.size() < kRecent) {
    if (recent_ring_.empty()) recent_ring_.reserve(kRecent);
    recent_ring_.push_back(h);
    return;
  }
  recent_ring_[recent_next_] = h;
  recent_next_ = (recent_next_ + 1) % kRecent;
}

}  // namespace amqprpc::detail
