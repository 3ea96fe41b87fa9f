// The requests a server has in hand (given to a handler, not yet answered), by their caller's
// deadline: the I/O thread cancels each one's context when its deadline passes, and a stopping
// server waits for them to be answered, then cancels those left.
//
// Thread safety: every member from any thread. Cancelling (request_stop) runs the contexts'
// stop callbacks, which may answer their requests and so call remove(): it happens outside the
// lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <vector>

namespace amqprpc::detail {

class InHand {
 public:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::stop_source stop;
    bool cancelled = false;  // its deadline passed: cancelled already
  };
  using Entries = std::multimap<Clock::time_point, Entry>;
  using Handle = Entries::iterator;

  // `wake` tells the I/O loop that the earliest deadline moved closer.
  explicit InHand(std::function<void()> wake) : wake_(std::move(wake)) {}

  Handle add(std::optional<Clock::time_point> deadline, std::stop_source stop) {
    bool earliest = false;
    Handle h;
    {
      std::lock_guard lock(mutex_);
      h = entries_.emplace(deadline.value_or(kNone), Entry{std::move(stop)});
      // The earliest deadline the I/O thread waits for: none before it but cancelled ones
      // (which next_deadline() skips).
      earliest = deadline.has_value();
      for (auto it = entries_.begin(); earliest && it != h; ++it) earliest = it->second.cancelled;
    }
    if (earliest) wake_();
    return h;
  }

  void remove(Handle h) {
    bool wake_waiter = false;
    {
      std::lock_guard lock(mutex_);
      entries_.erase(h);
      // Only a stopping server waits: the common case pays no notify.
      wake_waiter = entries_.empty() && waiters_ > 0;
    }
    if (wake_waiter) emptied_.notify_all();
  }

  // The earliest deadline not yet cancelled. (Cancelled ones stay first until answered: a
  // handler that ignores its cancellation costs a step here, bounded by the prefetch.)
  std::optional<Clock::time_point> next_deadline() const {
    std::lock_guard lock(mutex_);
    for (const auto& [deadline, entry] : entries_) {
      if (deadline == kNone) break;
      if (!entry.cancelled) return deadline;
    }
    return std::nullopt;
  }

  // Cancels the contexts whose deadline passed by `now`; they stay in hand until answered.
  void cancel_expired(Clock::time_point now) {
    std::vector<std::stop_source> due;
    {
      std::lock_guard lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end() && it->first <= now; ++it) {
        if (it->second.cancelled) continue;
        it->second.cancelled = true;
        due.push_back(it->second.stop);
      }
    }
    for (auto& stop : due) stop.request_stop();
  }

  void cancel_all() {
    std::vector<std::stop_source> all;
    {
      std::lock_guard lock(mutex_);
      for (auto& [deadline, entry] : entries_) all.push_back(entry.stop);
    }
    for (auto& stop : all) stop.request_stop();
  }

  // Waits until nothing is in hand, or until `until`. True when nothing is.
  bool wait_empty(Clock::time_point until) {
    std::unique_lock lock(mutex_);
    ++waiters_;
    const bool empty = emptied_.wait_until(lock, until, [this] { return entries_.empty(); });
    --waiters_;
    return empty;
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }

 private:
  static constexpr Clock::time_point kNone = Clock::time_point::max();
  const std::function<void()> wake_;
  mutable std::mutex mutex_;
  std::condition_variable emptied_;
  Entries entries_;
  int waiters_ = 0;  // threads in wait_empty
};

}  // namespace amqprpc::detail
