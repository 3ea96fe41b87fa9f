// A streaming method's stream on the server: the credit its client granted (items it may send
// before hearing from the client again), the items sent, and whether it must stop. The writer
// (a worker thread) waits for credit here; the I/O thread adds credit or stops the stream when
// the client says so (its messages reach this server's control queue), or when the
// connection goes; the request's context stops it at its deadline and when the server stops.
//
// Thread safety: all of it from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "amqprpc/message.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc::detail {

class ServerStream {
 public:
  ServerStream(std::string caller, std::string reply_to, std::uint32_t credit,
               std::uint32_t max_credit)
      : caller_(std::move(caller)),
        reply_to_(std::move(reply_to)),
        credit_(credit),
        max_credit_(max_credit) {}

  // The writer: waits for credit (or the stop), takes one and numbers the item. nullopt: stop.
  std::optional<std::uint64_t> take(const std::stop_token& context) {
    // Registered before the lock is taken and ended after it is released: the callback takes
    // the lock itself (it may run right here, or on the thread that stops the context).
    std::stop_callback wake(context, [this] {
      std::lock_guard guard(mutex_);
      changed_.notify_all();
    });
    std::unique_lock lock(mutex_);
    if (credit_ == 0) waiting_since_ = std::chrono::steady_clock::now();
    changed_.wait(lock, [&] { return credit_ > 0 || stopped_ || context.stop_requested(); });
    waiting_since_.reset();
    if (stopped_ || context.stop_requested()) {
      cut_ = true;
      return std::nullopt;
    }
    --credit_;
    return ++written_;
  }

  // The I/O thread: the client made room for `n` more (never beyond what one grant may hold:
  // a client cannot make this server buffer more than it allows).
  void grant(std::uint32_t n) {
    std::lock_guard lock(mutex_);
    credit_ = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(static_cast<std::uint64_t>(credit_) + n, max_credit_));
    changed_.notify_all();
  }

  // Stops the stream: `why` is what its caller is told, whatever the handler returns then.
  // False: it was stopped already (and keeps the first reason).
  bool stop(Status why) {
    std::lock_guard lock(mutex_);
    if (stopped_) return false;
    why_ = std::move(why);
    stopped_ = true;
    changed_.notify_all();
    return true;
  }

  // Why the writer was told to stop, when it was: the status that ends the stream instead of
  // the handler's (a stream cut short does not end ok). `context_why`: the context's reason
  // (its deadline passed, or the server is stopping).
  std::optional<Status> cut_short(const Status& context_why) const {
    std::lock_guard lock(mutex_);
    if (!cut_) return std::nullopt;
    return stopped_ ? why_ : context_why;
  }

  std::uint64_t written() const {
    std::lock_guard lock(mutex_);
    return written_;
  }
  // Since when the writer has been waiting for credit (nullopt: it is not). A writer that has
  // waited long may be waiting for a caller that is gone without a word: the server checks.
  std::optional<std::chrono::steady_clock::time_point> waiting_since() const {
    std::lock_guard lock(mutex_);
    return waiting_since_;
  }
  // The verified caller of the request: only it may grant credit or cancel (empty: anyone who
  // knows the correlation id, a random UUID).
  const std::string& caller() const { return caller_; }
  // Where the items go: the caller's reply queue (or its direct reply-to address).
  const std::string& reply_to() const { return reply_to_; }

  // Set by the server before the handler runs: how to send an item (false: it cannot be), and
  // the request's context, which stops the stream at its deadline or when the server stops.
  std::function<bool(Reply&&, std::uint64_t seq)> send;
  std::stop_token stop_token;

 private:
  const std::string caller_;
  const std::string reply_to_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::uint32_t credit_;
  const std::uint32_t max_credit_;
  std::uint64_t written_ = 0;
  bool stopped_ = false;
  bool cut_ = false;  // a write was refused
  std::optional<std::chrono::steady_clock::time_point> waiting_since_;
  Status why_;
};

}  // namespace amqprpc::detail
