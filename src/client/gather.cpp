#include "client/gather.hpp"

#include <algorithm>

#include "log.hpp"

namespace amqprpc::detail {

bool GatherCall::add(std::string instance, Reply reply) {
  for (const InstanceReply& r : result.replies) {
    if (r.instance == instance) return false;
  }
  result.replies.push_back(InstanceReply{std::move(instance), std::move(reply)});
  return true;
}

void GatherCall::finish(Status status, const Logger& logger) {
  result.status = std::move(status);
  if (auto* p = std::get_if<std::promise<GatherResult>>(&done)) {
    p->set_value(std::move(result));
    return;
  }
  auto* fn = std::get_if<std::function<void(GatherResult)>>(&done);
  if (fn == nullptr || !*fn) return;
  if (auto threw =
          thrown_by([&] { (*fn)(std::move(result)); }, "a gather's completion callback threw")) {
    log(logger, LogLevel::error, *threw);
  }
}

GatherCall& GatherTable::accept(Ptr gather) {
  GatherCall& ref = *gather;
  deadlines_.emplace(gather->deadline, gather->correlation_id);
  std::string key = gather->correlation_id;
  gathers_.emplace(std::move(key), std::move(gather));
  return ref;
}

GatherCall* GatherTable::find(const std::string& correlation_id) {
  auto it = gathers_.find(correlation_id);
  return it == gathers_.end() ? nullptr : it->second.get();
}

GatherTable::Ptr GatherTable::take(const std::string& correlation_id) {
  auto it = gathers_.find(correlation_id);
  if (it == gathers_.end()) return nullptr;
  Ptr gather = std::move(it->second);
  gathers_.erase(it);
  deadlines_.erase({gather->deadline, gather->correlation_id});
  return gather;
}

std::optional<Clock::time_point> GatherTable::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

GatherTable::Ptr GatherTable::take_expired(Clock::time_point now) {
  if (deadlines_.empty() || deadlines_.begin()->first > now) return nullptr;
  return take(deadlines_.begin()->second);
}

std::vector<GatherTable::Ptr> GatherTable::take_all() {
  std::vector<Ptr> out;
  for (auto& [id, gather] : gathers_) out.push_back(std::move(gather));
  gathers_.clear();
  deadlines_.clear();
  return out;
}

void InstanceMemory::remember(const std::string& queue, GatherResult& result) {
  std::vector<std::string> answered;
  for (const InstanceReply& r : result.replies) answered.push_back(r.instance);
  auto it = last_.find(queue);
  if (it != last_.end() && result.missing() > 0) {
    for (const std::string& instance : it->second) {
      if (std::find(answered.begin(), answered.end(), instance) == answered.end()) {
        result.silent.push_back(instance);
      }
    }
  }
  // Never more names than instances missing.
  if (result.silent.size() > result.missing()) result.silent.resize(result.missing());
  // Who answered now, and who is still missing by name, is who the next gather expects to
  // hear from; an empty answer (nobody took part, or nothing came) teaches nothing.
  if (answered.empty()) return;
  answered.insert(answered.end(), result.silent.begin(), result.silent.end());
  if (it == last_.end() && last_.size() >= kQueues) last_.erase(last_.begin());
  last_[queue] = std::move(answered);
}

}  // namespace amqprpc::detail
