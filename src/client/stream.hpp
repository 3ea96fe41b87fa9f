// A streaming call's items between the client's I/O thread, which receives them in order, and
// the reader, who takes them (ReplyStream::next, async_next, or a callback). Taking an item is
// what grants the server room for another: every half window read, the reader hands the credit
// to the I/O thread, which sends it to the producing server. Nothing on either side buffers
// more than the window.
//
// Thread safety: deliver() and end() from the I/O thread; the reader's side from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "amqprpc/message.hpp"
#include "amqprpc/options.hpp"
#include "io/outbox.hpp"

namespace amqprpc::detail {

// What a reader asks of the I/O thread for its stream: room for more items. (A cancel goes as
// the call's own cancellation, through its stop token: see stop_token().)
struct StreamControl {
  std::string correlation_id;
  std::uint32_t credit = 0;  // more items the server may send
};
using ControlOutbox = Outbox<StreamControl>;

class StreamState {
 public:
  using ItemCallback = std::function<void(Reply)>;
  using DoneCallback = std::function<void(Status)>;

  StreamState(std::string correlation_id, std::uint32_t window,
              std::shared_ptr<ControlOutbox> control)
      : correlation_id_(std::move(correlation_id)), window_(window), control_(std::move(control)) {}

  // Callback form: each item goes to `on_item` on the I/O thread (its credit returns when it
  // returns), then the status to `on_done`. Set before the call is submitted.
  void use_callbacks(ItemCallback on_item, DoneCallback on_done) {
    on_item_ = std::move(on_item);
    on_done_ = std::move(on_done);
  }

  // ---- I/O thread ----
  void deliver(Reply item, const Logger& logger);
  // The stream is over (its final status, or why it broke); later items are dropped.
  void end(Status status, const Logger& logger);

  // ---- the reader: any thread ----
  std::optional<Reply> next();
  void async_next(std::function<void(std::optional<Reply>)> on_item);
  void cancel();
  Status status() const;
  bool done() const;

  // The token the streaming call is cancelled by: the reader's cancel() and, linked to it, the
  // caller's own CallOptions::cancel. Being the call's, it works before the call is sent too.
  std::stop_token stop_token(const std::stop_token& callers) {
    if (callers.stop_possible()) {
      callers_cancel_.emplace(callers, std::function<void()>([this] { stop_.request_stop(); }));
    }
    return stop_.get_token();
  }

  // The call's id, once the client gave it one (before the reader can see the stream).
  void bind(std::string correlation_id) { correlation_id_ = std::move(correlation_id); }

 private:
  // The reader took `n` items: credit goes back once half a window has been read.
  void consumed(std::size_t n);

  std::string correlation_id_;
  const std::uint32_t window_;
  const std::shared_ptr<ControlOutbox> control_;
  ItemCallback on_item_;
  DoneCallback on_done_;

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Reply> items_;
  std::optional<Status> final_;
  std::function<void(std::optional<Reply>)> waiting_;  // an async_next waiting for an item
  std::uint32_t unreported_ = 0;                       // read, credit not yet returned
  std::stop_source stop_;
  std::optional<std::stop_callback<std::function<void()>>> callers_cancel_;
};

}  // namespace amqprpc::detail
