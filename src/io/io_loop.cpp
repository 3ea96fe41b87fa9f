#include "io/io_loop.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <system_error>
#include <utility>

#include "io/backoff.hpp"
#include "log.hpp"

namespace amqprpc::detail {

namespace {

void signal_eventfd(int fd) {
  std::uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop will wake anyway.
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

}  // namespace

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
  if (Status st = validate(reconnect_); !st.ok()) return st;
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
    io_thread.assert_held();
    self_woken_ = true;
    return;
  }
  wakes_.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst)) signal_eventfd(wake_fd_);
}

void IoLoop::stop() {
  stop_requested_.store(true, std::memory_order_release);
  wake();
  if (!thread_.joinable()) return;
  if (in_io_thread() || on_own_thread()) {
    log(logger_, LogLevel::error, "IoLoop::stop called from its own thread; not joining");
    thread_.detach();
    return;
  }
  {
    std::unique_lock away(away_->mutex);
    if (away_->away) {
      // Its own thread runs work that did not end in the time the owner gave it: it is left
      // there (it touches nothing of this loop when it returns), and the loop closes from here.
      away_->abandoned = true;
      away.unlock();
      thread_.detach();
      own_thread_id_.store({});
      end_rescue();
      MutexLock lead(lead_);
      MutexLock turn(turn_);
      io_thread.assert_held();
      io_thread_id_.store(std::this_thread::get_id());
      close_politely();
      io_thread_id_.store({});
      return;
    }
  }
  thread_.join();
}

void IoLoop::end_rescue() {
  rescue_ended_.store(true, std::memory_order_seq_cst);
  wake();
}

void IoLoop::rescue() {
  if (rescue_ended_.load(std::memory_order_seq_cst) ||
      stop_requested_.load(std::memory_order_acquire)) {
    return;
  }
  if (!lead_.try_lock()) return;  // the loop's own thread runs it
  {
    std::lock_guard away(away_->mutex);
    if (!away_->away) {
      lead_.unlock();
      return;
    }
  }
  turn_.lock();
  io_thread.assert_held();
  io_thread_id_.store(std::this_thread::get_id());
  for (;;) {
    wakes_seen_ = wakes_.load(std::memory_order_seq_cst);
    // Its own thread's wake-up (back_) or end_rescue()'s: loaded after wakes_seen_, like stop.
    if (stop_requested_.load(std::memory_order_seq_cst) || back_.load(std::memory_order_seq_cst) ||
        rescue_ended_.load(std::memory_order_seq_cst)) {
      break;
    }
    if (!turn_then_may_sleep()) continue;
    poll_once();
  }
  io_thread_id_.store({});
  turn_.unlock();
  lead_.unlock();
}

bool IoLoop::can_publish() const {
  if (!link_.channel || link_.blocked) return false;
  return link_.heartbeat.count() == 0 || Clock::now() - link_.last_rx <= link_.heartbeat ||
         link_.listened < link_.heartbeat / 2;
}

Status IoLoop::lost_reason() const {
  MutexLock lock(lost_mutex_);
  return lost_reason_;
}

std::string IoLoop::endpoint() const {
  return endpoints_[current_.load(std::memory_order_relaxed) % endpoints_.size()].to_string();
}

void IoLoop::heard() {
  link_.last_rx = Clock::now();
  link_.listened = Clock::duration::zero();
}

void IoLoop::up(std::unique_ptr<amqp::Channel> channel, std::size_t endpoint) {
  link_ = Link{};
  link_.heartbeat = channel->heartbeat();
  link_.last_rx = link_.up_since = Clock::now();
  link_.channel = std::move(channel);
  current_.store(endpoint, std::memory_order_relaxed);
}

void IoLoop::lose(Status why) {
  if (!link_.channel) return;
  const Clock::time_point up_since = link_.up_since;
  link_ = Link{};
  connected_.store(false, std::memory_order_release);
  log(logger_, LogLevel::error,
      "connection to " + endpoint() + " lost: " + why.to_string() +
          (reconnect_.enabled ? "; reconnecting" : ""));
  {
    MutexLock lock(lost_mutex_);
    lost_reason_ = why;
  }
  down_since_ = Clock::now();
  attempts_ = 0;
  // A connection that died soon after it came up keeps the grown backoff: no reconnect storms
  // against a broker that accepts and then drops us.
  if (backoff_.count() == 0 || Clock::now() - up_since > std::chrono::seconds(10)) {
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
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  next_attempt_ = Clock::now() + backoff_delay(backoff_, reconnect_, unit(rng_));
  backoff_ = backoff_grow(backoff_, reconnect_);
}

void IoLoop::begin_connect() {
  next_attempt_.reset();
  connecting_endpoint_ = next_endpoint_++ % endpoints_.size();
  ++attempts_;
  ConnectionOptions target = endpoints_[connecting_endpoint_];
  std::promise<Result<std::unique_ptr<amqp::Channel>>> result;
  connecting_ = result.get_future();
  connector_ = std::thread([this, target, result = std::move(result)]() mutable {
    result.set_value(amqp::Channel::open(target));
    // Only now is the future ready: a wake-up sent earlier could be consumed too soon.
    signal_eventfd(wake_fd_);
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
  up(std::move(opened.value()), connecting_endpoint_);
  if (Status st = hooks_.on_open(*link_.channel); !st.ok()) {
    log(logger_, LogLevel::warning,
        "reconnected to " + where + " but could not set up: " + st.to_string());
    link_ = Link{};
    schedule_reconnect();
    return;
  }
  connected_.store(true, std::memory_order_release);
  reconnects_.fetch_add(1, std::memory_order_relaxed);
  auto down = std::chrono::duration_cast<std::chrono::milliseconds>(
      Clock::now() - down_since_.value_or(Clock::now()));
  log(logger_, LogLevel::info,
      "reconnected to " + where + " after " + std::to_string(down.count()) + " ms (" +
          std::to_string(attempts_) + " attempts)");
  down_since_.reset();
}

void IoLoop::on_delivery(amqp::Delivery&& d) {
  io_thread.assert_held();
  hooks_.on_delivery(*link_.channel, std::move(d));
}
void IoLoop::on_return(amqp::Returned&& r) {
  io_thread.assert_held();
  hooks_.on_return(*link_.channel, std::move(r));
}
void IoLoop::on_consumer_cancelled(const std::string& tag) {
  io_thread.assert_held();
  hooks_.on_consumer_cancelled(*link_.channel, tag);
}
void IoLoop::on_cancel_ok(const std::string& tag) {
  io_thread.assert_held();
  hooks_.on_cancel_ok(*link_.channel, tag);
}
void IoLoop::on_confirm(std::uint64_t seq, bool multiple, bool ack) {
  io_thread.assert_held();
  hooks_.on_confirm(*link_.channel, seq, multiple, ack);
}
void IoLoop::on_probe(amqp::ProbeResult&& result) {
  io_thread.assert_held();
  hooks_.on_probe(*link_.channel, std::move(result));
}
void IoLoop::on_blocked(bool blocked, const std::string& reason) {
  io_thread.assert_held();
  log(logger_, LogLevel::warning,
      blocked ? "broker blocked publishing on this connection: " + reason
              : std::string("broker unblocked publishing on this connection"));
  link_.blocked = blocked;
  link_.blocked_reason = reason;
  hooks_.on_blocked(*link_.channel, blocked);
  if (!blocked) self_woken_ = true;  // send what was held
}

Status IoLoop::open_first() {
  Status last;
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    auto opened = amqp::Channel::open(endpoints_[i]);
    if (!opened) {
      last = opened.status();
      continue;
    }
    up(std::move(opened.value()), i);
    if (Status st = hooks_.on_open(*link_.channel); !st.ok()) {
      link_ = Link{};
      return st;
    }
    connected_.store(true, std::memory_order_release);
    return {};
  }
  return last;
}

void IoLoop::run(std::promise<Status>& started) {
  // Not scoped locks: a thread that stop() left behind in run_work() returns from here without
  // touching this object again.
  own_thread_id_.store(std::this_thread::get_id());
  lead_.lock();
  turn_.lock();  // let go only while poll_once sleeps
  io_thread.assert_held();
  io_thread_id_.store(std::this_thread::get_id());
  Status opened = open_first();
  started.set_value(opened);
  if (opened.ok()) {
    for (;;) {
      // Noted before the stop flag and the outboxes are looked at: a wake-up after this
      // (stop()'s too) makes poll_once take another turn rather than sleep.
      wakes_seen_ = wakes_.load(std::memory_order_seq_cst);
      if (stop_requested_.load(std::memory_order_seq_cst)) break;
      if (!turn_then_may_sleep()) continue;
      if (auto work = hooks_.take_work()) {
        if (!run_work(work)) return;  // left behind: this object may be gone
        take_back();
        continue;
      }
      poll_once();
    }
    close_politely();
  }
  io_thread_id_.store({});
  own_thread_id_.store({});
  turn_.unlock();
  lead_.unlock();
}

bool IoLoop::turn_then_may_sleep() {
  serve_turn();
  // What the turn published and acked leaves now, in one write.
  if (link_.channel) {
    if (Status st = link_.channel->flush(); !st.ok()) lose(st);
  }
  // A turn that read all the socket had a moment ago does not read again in the turn right
  // after it (a wake-up from this thread, say: its recv() would almost always find nothing);
  // poll() says whether anything came since. The turn after that one reads in any case.
  maybe_readable_ = !(link_.channel && link_.channel->read_it_all());
  if (self_woken_) {
    self_woken_ = false;
    return false;
  }
  return !(link_.channel && link_.channel->has_buffered());
}

bool IoLoop::run_work(std::function<void()>& work) {
  const std::shared_ptr<Away> away = away_;  // outlives this object if need be
  {
    std::lock_guard guard(away->mutex);
    away->away = true;
  }
  io_thread_id_.store({});
  turn_.unlock();
  lead_.unlock();
  work();
  {
    std::lock_guard guard(away->mutex);
    if (away->abandoned) return false;
    away->away = false;
  }
  return true;
}

void IoLoop::take_back() {
  if (!lead_.try_lock()) {
    // A rescue()r runs the loop: it hands it back at its next turn.
    back_.store(true, std::memory_order_seq_cst);
    wake();
    lead_.lock();
    back_.store(false, std::memory_order_seq_cst);
  }
  turn_.lock();
  io_thread.assert_held();
  io_thread_id_.store(std::this_thread::get_id());
}

void IoLoop::serve_turn() {
  if (!link_.channel) {
    if (connecting_.valid() &&
        connecting_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      finish_connect();
    } else if (!connecting_.valid() && next_attempt_ && Clock::now() >= *next_attempt_) {
      begin_connect();
    }
  }
  drop_pending();  // a write on a lent turn failed
  hooks_.on_wake(link_.channel.get());
  if (link_.channel) {
    auto frames = link_.channel->frames_read();
    if (Status st = link_.channel->read(*this, maybe_readable_); !st.ok()) lose(st);
    if (link_.channel && link_.channel->frames_read() != frames) heard();
    if (link_.channel) hooks_.on_read_batch(*link_.channel);
  }
  drop_pending();
  if (link_.channel && link_.heartbeat.count() > 0 &&
      Clock::now() - link_.last_rx > 2 * link_.heartbeat && link_.listened >= link_.heartbeat) {
    // rabbitmq-c notices missed heartbeats only inside a blocking wait, which this loop never
    // does: it watches the socket itself. Heartbeats (or any traffic) come twice an interval,
    // so a whole interval of listening without a byte, two intervals after the last one, means
    // the peer is gone; time spent busy does not count.
    lose(Status{StatusCode::unavailable,
                "no data from the broker for " + std::to_string(2 * link_.heartbeat.count()) +
                    " s (heartbeat " + std::to_string(link_.heartbeat.count()) +
                    " s): connection presumed dead"});
  }
  hooks_.on_timer(Clock::now());
}

void IoLoop::poll_once() {
  int timeout_ms = -1;
  auto now = Clock::now();
  auto consider = [&](Clock::duration d) {
    auto ms = std::chrono::ceil<std::chrono::milliseconds>(d).count();
    if (ms < 0) ms = 0;
    // A deadline weeks away (30 days is allowed) does not fit poll's int: wake within one.
    ms = std::min<decltype(ms)>(ms, std::numeric_limits<int>::max());
    if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = static_cast<int>(ms);
  };
  if (auto deadline = hooks_.next_deadline()) consider(*deadline - now);
  if (link_.channel) {
    if (auto tick = link_.channel->heartbeat_tick()) consider(*tick);
  } else if (next_attempt_ && !connecting_.valid()) {
    consider(*next_attempt_ - now);
  }
  pollfd fds[2];
  fds[0] = {wake_fd_, POLLIN, 0};
  int nfds = 1;
  if (link_.channel) {
    // Writable too, when the socket did not take all of the last turn's frames.
    const short events = link_.channel->wants_write() ? POLLIN | POLLOUT : POLLIN;
    fds[1] = {link_.channel->fd(), events, 0};
    nfds = 2;
  }
  // A wake-up since the turn began (its work may have missed the outboxes' take): another turn
  // instead of sleeping. From here on a waker sees sleeping_ and signals.
  sleeping_.store(true, std::memory_order_seq_cst);
  if (wakes_.load(std::memory_order_seq_cst) != wakes_seen_) {
    sleeping_.store(false, std::memory_order_relaxed);
    return;
  }
  const auto waiting_since = Clock::now();
  // Asleep, the loop lends its turn (lend()): other threads may write to the connection.
  turn_.unlock();
  int rc = ::poll(fds, nfds, timeout_ms);
  const int poll_errno = errno;
  sleeping_.store(false, std::memory_order_relaxed);
  turn_.lock();
  if (rc < 0 && poll_errno != EINTR) {
    lose(Status{StatusCode::internal, std::string("poll failed: ") + std::strerror(poll_errno)});
  }
  maybe_readable_ = rc > 0 && nfds == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR));
  if (maybe_readable_) {
    heard();
  } else if (link_.channel) {
    link_.listened += Clock::now() - waiting_since;
  }
  if (rc > 0 && (fds[0].revents & POLLIN)) {
    // Consume the wake-up before on_wake takes the outboxes (see wake()).
    std::uint64_t counter;
    [[maybe_unused]] ssize_t n = ::read(wake_fd_, &counter, sizeof counter);
  }
}

void IoLoop::after_lent_turn() {
  self_woken_ = false;  // the wake-up below covers what a wake() on the lent turn asked for
  if (link_.channel) {
    if (Status st = link_.channel->flush(); !st.ok() && !pending_drop_) pending_drop_ = st;
  }
  // The loop takes a turn after every lent one, as if it had been handed the work: it sees to
  // what the turn left (unsent output, a failed write, new deadlines), and the request has left
  // without waiting for it. Measured on a 2-vCPU VM, skipping this wake-up gained little over
  // not lending at all, while with it a lone caller's p50 dropped by a sixth
  // (docs/WORKER_POOL.md). lend() has given the I/O thread's identity back by now, so this is
  // another thread's wake().
  wake();
}

void IoLoop::drop_pending() {
  if (!pending_drop_) return;
  Status why = std::move(*pending_drop_);
  pending_drop_.reset();
  lose(why);
}

void IoLoop::close_politely() {
  if (connector_.joinable()) connector_.join();  // bounded by the connect timeout
  if (link_.channel) {
    hooks_.on_closing(*link_.channel);
    // E.g. publisher confirms of the last replies: read them before closing, for a while.
    const auto until = Clock::now() + std::chrono::seconds(2);
    while (link_.channel && hooks_.closing_needs_more() && Clock::now() < until) {
      if (!link_.channel->flush().ok()) break;
      pollfd fd{link_.channel->fd(), POLLIN, 0};
      ::poll(&fd, 1, 50);
      if (!link_.channel->read(*this).ok()) break;
    }
    link_.channel->close();
    link_ = Link{};
  }
  connected_.store(false, std::memory_order_release);
}

}  // namespace amqprpc::detail
