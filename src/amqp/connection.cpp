#include "amqp/connection.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "log.hpp"

namespace amqprpc::detail {

IoLoop::IoLoop(std::vector<ConnectionOptions> endpoints, ReconnectOptions reconnect, Hooks& hooks,
               Logger logger)
    : endpoints_(std::move(endpoints)),
      reconnect_(reconnect),
      hooks_(hooks),
      logger_(std::move(logger)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

IoLoop::~IoLoop() {
  stop();
  ::close(wake_fd_);
}

Status IoLoop::start() {
  if (endpoints_.empty()) return {StatusCode::invalid_argument, "no broker to connect to"};
  const auto& r = reconnect_;
  if (r.enabled && (r.initial_delay.count() < 1 || r.max_delay < r.initial_delay ||
                    r.multiplier < 1.0 || r.jitter < 0.0 || r.jitter >= 1.0)) {
    return {StatusCode::invalid_argument,
            "reconnect options: need initial_delay >= 1 ms, max_delay >= initial_delay, "
            "multiplier >= 1 and 0 <= jitter < 1"};
  }
  std::promise<Status> started;
  auto ready = started.get_future();
  thread_ = std::thread([this, p = std::move(started)]() mutable { run(p); });
  Status st = ready.get();
  if (!st.ok()) {
    stop_requested_ = true;
    thread_.join();
  }
  return st;
}

void IoLoop::wake() {
  if (in_io_thread()) {
    // Work handed over from a callback on this thread: no syscall, just another turn.
    self_woken_ = true;
    return;
  }
  std::uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop will wake anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void IoLoop::stop() {
  stop_requested_.store(true, std::memory_order_release);
  wake();
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id()) {
      log(logger_, LogLevel::error, "IoLoop::stop called from its own thread; not joining");
      thread_.detach();
      return;
    }
    thread_.join();
  }
}

Status IoLoop::lost_reason() const {
  std::lock_guard lock(lost_mutex_);
  return lost_reason_;
}

std::string IoLoop::endpoint() const {
  return endpoints_[current_.load(std::memory_order_relaxed) % endpoints_.size()].to_string();
}

void IoLoop::lose(Status why) {
  if (!session_) return;
  session_.reset();
  connected_.store(false, std::memory_order_release);
  log(logger_, LogLevel::error,
      "connection to " + endpoint() + " lost: " + why.to_string() +
          (reconnect_.enabled ? "; reconnecting" : ""));
  {
    std::lock_guard lock(lost_mutex_);
    lost_reason_ = why;
  }
  down_since_ = Clock::now();
  attempts_ = 0;
  // A connection that died soon after it came up keeps the grown backoff: no reconnect storms
  // against a broker that accepts and then drops us.
  if (backoff_.count() == 0 || Clock::now() - up_since_ > std::chrono::seconds(10)) {
    backoff_ = reconnect_.initial_delay;
  }
  // Start with the endpoint after the one that failed: it is likelier to be up.
  next_endpoint_ = current_.load(std::memory_order_relaxed) + 1;
  hooks_.on_lost(why);
  schedule_reconnect();
}

void IoLoop::schedule_reconnect() {
  if (!reconnect_.enabled || stop_requested_.load(std::memory_order_acquire)) {
    next_attempt_.reset();
    return;
  }
  std::uniform_real_distribution<double> spread(1.0 - reconnect_.jitter, 1.0 + reconnect_.jitter);
  auto delay = std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(backoff_.count()) * spread(rng_)));
  next_attempt_ = Clock::now() + delay;
  auto grown = std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(backoff_.count()) * reconnect_.multiplier));
  backoff_ = std::clamp(grown, reconnect_.initial_delay, reconnect_.max_delay);
}

void IoLoop::begin_connect() {
  next_attempt_.reset();
  connecting_endpoint_ = next_endpoint_++ % endpoints_.size();
  ++attempts_;
  ConnectionOptions target = endpoints_[connecting_endpoint_];
  std::promise<Result<std::unique_ptr<Session>>> result;
  connecting_ = result.get_future();
  connector_ = std::thread([this, target, result = std::move(result)]() mutable {
    result.set_value(Session::open(target));
    // Only now is the future ready: a wake-up sent earlier could be consumed too soon.
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  });
}

void IoLoop::finish_connect() {
  auto opened = connecting_.get();
  connector_.join();
  const std::string where = endpoints_[connecting_endpoint_].to_string();
  if (!opened) {
    log(logger_, LogLevel::warning,
        "reconnect attempt " + std::to_string(attempts_) + " failed: " + opened.status().message());
    schedule_reconnect();
    return;
  }
  session_ = std::move(opened.value());
  current_.store(connecting_endpoint_, std::memory_order_relaxed);
  if (Status st = hooks_.on_open(*session_); !st.ok()) {
    log(logger_, LogLevel::warning,
        "reconnected to " + where + " but could not set up: " + st.to_string());
    session_.reset();
    schedule_reconnect();
    return;
  }
  connected_.store(true, std::memory_order_release);
  heartbeat_ = std::chrono::seconds(session_->heartbeat_seconds());
  last_rx_ = up_since_ = Clock::now();
  reconnects_.fetch_add(1, std::memory_order_relaxed);
  auto down = std::chrono::duration_cast<std::chrono::milliseconds>(
      Clock::now() - down_since_.value_or(Clock::now()));
  log(logger_, LogLevel::info,
      "reconnected to " + where + " after " + std::to_string(down.count()) + " ms (" +
          std::to_string(attempts_) + " attempts)");
  down_since_.reset();
}

void IoLoop::on_delivery(Delivery&& d) {
  hooks_.on_delivery(*session_, std::move(d));
}
void IoLoop::on_return(Returned&& r) {
  hooks_.on_return(std::move(r));
}
void IoLoop::on_consumer_cancelled(const std::string& tag) {
  hooks_.on_consumer_cancelled(tag);
}
void IoLoop::on_confirm(std::uint64_t seq, bool multiple, bool ack) {
  hooks_.on_confirm(seq, multiple, ack);
}
void IoLoop::on_blocked(bool blocked, const std::string& reason) {
  log(logger_, LogLevel::warning,
      blocked ? "broker blocked publishing on this connection: " + reason
              : std::string("broker unblocked publishing on this connection"));
  hooks_.on_blocked(blocked, reason);
}

void IoLoop::run(std::promise<Status>& started) {
  {
    Status last;
    for (std::size_t i = 0; i < endpoints_.size() && !session_; ++i) {
      auto opened = Session::open(endpoints_[i]);
      if (opened) {
        session_ = std::move(opened.value());
        current_.store(i, std::memory_order_relaxed);
      } else {
        last = opened.status();
      }
    }
    if (!session_) {
      started.set_value(last);
      return;
    }
    if (Status st = hooks_.on_open(*session_); !st.ok()) {
      session_.reset();
      started.set_value(st);
      return;
    }
    connected_.store(true, std::memory_order_release);
    heartbeat_ = std::chrono::seconds(session_->heartbeat_seconds());
    last_rx_ = up_since_ = Clock::now();
    started.set_value(Status{});
  }

  while (!stop_requested_.load(std::memory_order_acquire)) {
    if (!session_) {
      if (connecting_.valid() &&
          connecting_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        finish_connect();
      } else if (!connecting_.valid() && next_attempt_ && Clock::now() >= *next_attempt_) {
        begin_connect();
      }
    }
    hooks_.on_wake(session_.get());
    if (session_) {
      auto frames = session_->frames_read();
      if (Status st = session_->pump(*this); !st.ok()) lose(st);
      if (session_ && session_->frames_read() != frames) last_rx_ = Clock::now();
      if (session_) hooks_.on_pumped(*session_);
    }
    if (pending_drop_) {
      Status why = std::move(*pending_drop_);
      pending_drop_.reset();
      lose(why);
    }
    if (session_ && heartbeat_.count() > 0 && Clock::now() - last_rx_ > 2 * heartbeat_) {
      // rabbitmq-c notices missed heartbeats only inside a blocking wait, which this loop never
      // does: it watches the socket itself. Heartbeats (or any traffic) come every interval.
      lose(Status{StatusCode::unavailable,
                  "no data from the broker for " + std::to_string(2 * heartbeat_.count()) +
                      " s (heartbeat " + std::to_string(heartbeat_.count()) +
                      " s): connection presumed dead"});
    }
    hooks_.on_timer(Clock::now());
    if (self_woken_) {
      self_woken_ = false;
      continue;
    }
    if (session_ && session_->has_buffered()) continue;

    int timeout_ms = -1;
    auto now = Clock::now();
    auto consider = [&](Clock::duration d) {
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
      if (ms < 0) ms = 0;
      if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = static_cast<int>(ms);
    };
    if (auto deadline = hooks_.next_deadline()) consider(*deadline - now);
    if (session_) {
      if (auto tick = session_->heartbeat_tick()) consider(*tick);
    } else if (next_attempt_ && !connecting_.valid()) {
      consider(*next_attempt_ - now);
    }
    pollfd fds[2];
    fds[0] = {wake_fd_, POLLIN, 0};
    int nfds = 1;
    if (session_) {
      fds[1] = {session_->fd(), POLLIN, 0};
      nfds = 2;
    }
    int rc = ::poll(fds, nfds, timeout_ms);
    if (rc < 0 && errno != EINTR) {
      lose(Status{StatusCode::internal, std::string("poll failed: ") + std::strerror(errno)});
    }
    if (rc > 0 && nfds == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      last_rx_ = Clock::now();
    }
    if (rc > 0 && (fds[0].revents & POLLIN)) {
      // Consume the wake-up before on_wake takes the outboxes (see wake()).
      std::uint64_t counter;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &counter, sizeof counter);
    }
  }

  if (connector_.joinable()) connector_.join();  // bounded by the connect timeout
  if (session_) {
    hooks_.on_closing(*session_);
    // E.g. publisher confirms of the last replies: read them before closing, for a while.
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (hooks_.closing_needs_more() && Clock::now() < until) {
      pollfd fd{session_->fd(), POLLIN, 0};
      ::poll(&fd, 1, 50);
      if (!session_->pump(*this).ok()) break;
    }
    session_->close();
    session_.reset();
  }
  connected_.store(false, std::memory_order_release);
}

}  // namespace amqprpc::detail
