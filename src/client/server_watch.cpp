#include "client/server_watch.hpp"

#include <algorithm>

namespace amqprpc::detail {

namespace {

// A queue no call used for this long is forgotten (and no longer asked about).
constexpr ServerWatch::Clock::duration kForgetAfter = std::chrono::seconds(30);

}  // namespace

ServerWatch::Verdict ServerWatch::check(const std::string& queue, Clock::time_point now) {
  Entry& e = entries_[queue];
  e.used = now;
  if (!e.known) return Verdict::unknown;
  if (e.unknowable) return Verdict::send;
  if (!e.exists) return Verdict::no_queue;
  return e.consumers == 0 ? Verdict::no_server : Verdict::send;
}

std::uint32_t ServerWatch::consumers(const std::string& queue) const {
  auto it = entries_.find(queue);
  return it == entries_.end() ? 0 : it->second.consumers;
}

void ServerWatch::wait(const std::string& queue, std::string correlation_id, Wait how,
                       Clock::time_point now) {
  Entry& e = entries_[queue];
  if (how == Wait::answer) {
    e.for_answer.emplace_back(std::move(correlation_id), now);
  } else {
    e.for_queue.push_back(std::move(correlation_id));
  }
}

ServerWatch::Clock::time_point ServerWatch::next_probe(const Entry& e) const {
  // The first answer, or one a call waits for, is wanted now (the epoch of the steady clock is
  // in the past, and safe to subtract from).
  if (!e.known || !e.for_answer.empty()) return Clock::time_point{};
  // Asked more often while nobody serves it (calls fail meanwhile) or calls wait for it to
  // appear; a missing queue nobody waits for, at the normal pace (each such probe costs the
  // broker a channel error, and a line in its log).
  const bool eager = !e.for_queue.empty() || (e.exists && e.consumers == 0);
  return e.answered + (eager ? refresh_ / 4 : refresh_);
}

std::vector<std::string> ServerWatch::due(Clock::time_point now) {
  std::vector<std::string> out;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    const bool waited_on = !e.for_answer.empty() || !e.for_queue.empty();
    if (!e.asked && !waited_on && now - e.used > kForgetAfter) {
      it = entries_.erase(it);
      continue;
    }
    if (!e.asked && now >= next_probe(e)) {
      e.asked = true;
      e.asked_at = now;
      out.push_back(it->first);
    }
    ++it;
  }
  return out;
}

std::optional<ServerWatch::Clock::time_point> ServerWatch::next_due() const {
  std::optional<Clock::time_point> next;
  for (const auto& [queue, e] : entries_) {
    if (e.asked) continue;
    const bool waited_on = !e.for_answer.empty() || !e.for_queue.empty();
    // An idle entry is due once more, to be forgotten then.
    const Clock::time_point t =
        waited_on ? next_probe(e) : std::min(next_probe(e), e.used + kForgetAfter);
    if (!next || t < *next) next = t;
  }
  return next;
}

std::vector<std::string> ServerWatch::answer(const amqp::ProbeResult& result,
                                             Clock::time_point now) {
  auto it = entries_.find(result.probe.name);
  if (it == entries_.end() || !it->second.asked) return {};
  Entry& e = it->second;
  e.asked = false;
  e.known = true;
  e.answered = now;
  e.exists = result.status.ok();
  e.unknowable = !result.status.ok() && result.status.code() != StatusCode::not_found;
  e.consumers = result.status.ok() ? result.consumers : 0;
  std::vector<std::string> settled = std::exchange(e.for_queue, {});
  // Only an answer asked after a call began to wait speaks for it: older ones wait for the
  // next answer, asked at once.
  auto later = std::stable_partition(e.for_answer.begin(), e.for_answer.end(),
                                     [&](const auto& w) { return w.second > e.asked_at; });
  for (auto w = later; w != e.for_answer.end(); ++w) settled.push_back(std::move(w->first));
  e.for_answer.erase(later, e.for_answer.end());
  return settled;
}

}  // namespace amqprpc::detail
