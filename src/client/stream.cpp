#include "client/stream.hpp"

#include "log.hpp"

namespace amqprpc::detail {

void StreamState::deliver(Reply item, const Logger& logger) {
  if (on_item_) {
    if (auto threw =
            thrown_by([&] { on_item_(std::move(item)); }, "a stream's item callback threw")) {
      log(logger, LogLevel::error, *threw);
    }
    consumed(1);
    return;
  }
  std::function<void(std::optional<Reply>)> waiting;
  {
    std::lock_guard lock(mutex_);
    if (final_) return;
    if (!waiting_) {
      items_.push_back(std::move(item));
      ready_.notify_all();
      return;
    }
    waiting = std::exchange(waiting_, nullptr);
  }
  if (auto threw = thrown_by([&] { waiting(std::move(item)); }, "a stream's async_next threw")) {
    log(logger, LogLevel::error, *threw);
  }
  consumed(1);
}

void StreamState::end(Status status, const Logger& logger) {
  std::function<void(std::optional<Reply>)> waiting;
  {
    std::lock_guard lock(mutex_);
    if (final_) return;
    final_ = status;
    // A parked reader hears of the end once the items before it are taken (none are: it would
    // not be parked otherwise).
    if (items_.empty()) waiting = std::exchange(waiting_, nullptr);
    ready_.notify_all();
  }
  if (waiting) {
    if (auto threw = thrown_by([&] { waiting(std::nullopt); }, "a stream's async_next threw")) {
      log(logger, LogLevel::error, *threw);
    }
  }
  if (on_done_) {
    if (auto threw = thrown_by([&] { on_done_(std::move(status)); },
                               "a stream's completion callback threw")) {
      log(logger, LogLevel::error, *threw);
    }
  }
}

std::optional<Reply> StreamState::next() {
  std::optional<Reply> item;
  {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return !items_.empty() || final_.has_value(); });
    if (items_.empty()) return std::nullopt;
    item = std::move(items_.front());
    items_.pop_front();
  }
  consumed(1);
  return item;
}

void StreamState::async_next(std::function<void(std::optional<Reply>)> on_item) {
  std::optional<Reply> item;
  bool ended = false;
  {
    std::lock_guard lock(mutex_);
    if (!items_.empty()) {
      item = std::move(items_.front());
      items_.pop_front();
    } else if (final_) {
      ended = true;
    } else {
      waiting_ = std::move(on_item);
      return;
    }
  }
  if (item) {
    on_item(std::move(item));
    consumed(1);
  } else if (ended) {
    on_item(std::nullopt);
  }
}

void StreamState::cancel() {
  stop_.request_stop();  // the call's cancellation: ends it, and tells its server
}

Status StreamState::status() const {
  std::lock_guard lock(mutex_);
  return final_.value_or(Status{StatusCode::failed_precondition, "the stream has not ended yet"});
}

bool StreamState::done() const {
  std::lock_guard lock(mutex_);
  return final_.has_value() && items_.empty();
}

void StreamState::consumed(std::size_t n) {
  std::uint32_t grant = 0;
  {
    std::lock_guard lock(mutex_);
    if (final_) return;
    unreported_ += static_cast<std::uint32_t>(n);
    if (unreported_ < std::max<std::uint32_t>(1, window_ / 2)) return;
    grant = std::exchange(unreported_, 0);
  }
  StreamControl c{correlation_id_, grant};
  control_->push(c);
}

}  // namespace amqprpc::detail
