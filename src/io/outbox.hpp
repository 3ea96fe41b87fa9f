// Work handed to an I/O thread by other threads: a mutex-guarded batch that the I/O thread
// swaps out in one go. Producers wake the loop only when the outbox goes from empty to
// non-empty (the loop reads its wake-up before it takes the batch, so none is missed), and
// never after close().
//
// Thread safety: push() and close() from any thread; take() from the I/O thread.
#pragma once

#include <functional>
#include <utility>
#include <vector>

#include "thread_annotations.hpp"

namespace amqprpc::detail {

template <class T>
class Outbox {
 public:
  explicit Outbox(std::function<void()> wake) : wake_(std::move(wake)) {}
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Hands `item` over and wakes the loop if needed. Returns false, leaving `item` untouched,
  // once the outbox is closed.
  bool push(T& item) {
    MutexLock lock(mutex_);
    if (closed_) return false;
    const bool was_empty = items_.empty();
    items_.push_back(std::move(item));
    // Under the lock: once close() has returned, no push can wake a loop that may be gone.
    if (was_empty) wake_();
    return true;
  }
  bool push(T&& item) { return push(item); }

  // A push that wakes nobody, for a producer that may do the loop's part itself (IoLoop::lend).
  // `first`: it made the outbox non-empty, so it owes the loop a wake() unless it took the
  // outbox itself; `joined`: the producer of the first item owes it.
  enum class Pushed { closed, joined, first };
  Pushed push_quietly(T& item) {
    MutexLock lock(mutex_);
    if (closed_) return Pushed::closed;
    const bool was_empty = items_.empty();
    items_.push_back(std::move(item));
    return was_empty ? Pushed::first : Pushed::joined;
  }
  // The wake-up a push_quietly() owed (none once closed).
  void wake() {
    MutexLock lock(mutex_);
    if (!closed_) wake_();
  }

  // Moves everything handed over so far to the end of `into` (empty: a swap, no copy).
  void take(std::vector<T>& into) {
    MutexLock lock(mutex_);
    if (into.empty()) {
      into.swap(items_);
    } else {
      for (auto& item : items_) into.push_back(std::move(item));
      items_.clear();
    }
  }

  // Refuses further pushes and returns what is left.
  std::vector<T> close() {
    MutexLock lock(mutex_);
    closed_ = true;
    return std::exchange(items_, {});
  }

 private:
  std::function<void()> wake_;
  Mutex mutex_;
  std::vector<T> items_ GUARDED_BY(mutex_);
  bool closed_ GUARDED_BY(mutex_) = false;
};

}  // namespace amqprpc::detail
