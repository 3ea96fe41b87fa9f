#include "amqp/connection.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <system_error>

#include "log.hpp"

namespace amqprpc::detail {

IoLoop::IoLoop(ConnectionOptions options, Hooks& hooks, Logger logger)
    : options_(std::move(options)), hooks_(hooks), logger_(std::move(logger)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

IoLoop::~IoLoop() {
  stop();
  ::close(wake_fd_);
}

Status IoLoop::start() {
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

void IoLoop::lose(Status why) {
  if (!session_) return;
  session_.reset();
  connected_.store(false, std::memory_order_release);
  log(logger_, LogLevel::error,
      "connection to " + options_.to_string() + " lost: " + why.to_string());
  {
    std::lock_guard lock(lost_mutex_);
    lost_reason_ = why;
  }
  hooks_.on_lost(why);
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
void IoLoop::on_blocked(bool blocked, const std::string& reason) {
  log(logger_, LogLevel::warning,
      blocked ? "broker blocked publishing on this connection: " + reason
              : std::string("broker unblocked publishing on this connection"));
}

void IoLoop::run(std::promise<Status>& started) {
  {
    auto opened = Session::open(options_);
    if (!opened) {
      started.set_value(opened.status());
      return;
    }
    session_ = std::move(opened.value());
    if (Status st = hooks_.on_open(*session_); !st.ok()) {
      session_.reset();
      started.set_value(st);
      return;
    }
    connected_.store(true, std::memory_order_release);
    started.set_value(Status{});
  }

  while (!stop_requested_.load(std::memory_order_acquire)) {
    hooks_.on_wake(session_.get());
    if (session_) {
      if (Status st = session_->pump(*this); !st.ok()) lose(st);
      if (session_) hooks_.on_pumped(*session_);
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
    if (rc > 0 && (fds[0].revents & POLLIN)) {
      // Consume the wake-up before on_wake takes the outboxes (see wake()).
      std::uint64_t counter;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &counter, sizeof counter);
    }
  }

  if (session_) {
    hooks_.on_closing(*session_);
    session_->close();
    session_.reset();
  }
  connected_.store(false, std::memory_order_release);
}

}  // namespace amqprpc::detail
