// One connection, one I/O thread. The thread alone touches the rabbitmq-c handle (an
// amqp::Channel); other threads put work in their owner's outboxes and call wake(). The loop
// polls the socket and an eventfd, drains what rabbitmq-c has buffered before polling, runs
// timers, watches heartbeats, and reconnects after a loss (exponential backoff with jitter,
// endpoints in turn; the TCP connect and login run on a short-lived connector thread, so timers
// and outboxes keep being served meanwhile).
//
// Thread safety: wake(), connected(), reconnecting(), lost_reason(), reconnects(), endpoint()
// and in_io_thread() from any thread; start() and stop() from the owner's thread; the rest from
// the I/O thread (the hooks run there).
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "amqp/channel.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"
#include "thread_annotations.hpp"

namespace amqprpc::detail {

using Clock = std::chrono::steady_clock;

// The brokers a client or a server tries in turn: `connection`, then `alternates`.
template <class Options>
std::vector<ConnectionOptions> endpoints_of(const Options& o) {
  std::vector<ConnectionOptions> all{o.connection};
  all.insert(all.end(), o.alternates.begin(), o.alternates.end());
  return all;
}

class IoLoop final : private amqp::Channel::Events {
 public:
  // What the owner (client or server) does on the I/O thread. Every hook that concerns a
  // connection receives its channel; none should keep it.
  class Hooks {
   public:
    // A new connection (the first, or after a loss): per-connection state starts afresh here;
    // declare queues, start consumers. Non-ok aborts the start (or, on a reconnection, drops
    // the connection and tries again later).
    virtual Status on_open(amqp::Channel& channel) = 0;
    // Each turn of the loop: take work from outboxes. channel is null while disconnected.
    virtual void on_wake(amqp::Channel* channel) = 0;
    virtual void on_delivery(amqp::Channel& channel, amqp::Delivery&& delivery) = 0;
    // After each batch of frames read from the socket (and the deliveries in it).
    virtual void on_read_batch(amqp::Channel&) {}
    virtual void on_return(amqp::Channel&, amqp::Returned&&) {}
    virtual void on_consumer_cancelled(amqp::Channel&, const std::string& /*consumer_tag*/) {}
    virtual void on_cancel_ok(amqp::Channel&, const std::string& /*consumer_tag*/) {}
    // The broker blocked or unblocked publishing (can_publish() says so from now on).
    virtual void on_blocked(amqp::Channel&, bool /*blocked*/) {}
    virtual void on_confirm(amqp::Channel&, std::uint64_t /*seq*/, bool /*multiple*/,
                            bool /*ack*/) {}
    // The answer to a Channel::probe.
    virtual void on_probe(amqp::Channel&, amqp::ProbeResult&&) {}
    // The earliest time on_timer wants to run, if any.
    virtual std::optional<Clock::time_point> next_deadline() { return std::nullopt; }
    virtual void on_timer(Clock::time_point) {}
    // The connection is gone: fail (or set aside) what waits on it.
    virtual void on_lost(const Status& why) = 0;
    // A polite stop: last chance to publish and ack before the connection closes.
    virtual void on_closing(amqp::Channel&) {}
    // After on_closing: whether to keep reading (bounded) before closing, e.g. for confirms.
    virtual bool closing_needs_more() { return false; }
    // Between turns, before the loop sleeps, on the loop's own thread: work to run right here
    // (a server's handler), with the loop left to a stand-in meanwhile (rescue()). Empty:
    // none. What it returns must touch neither the hooks nor the loop: if it never returns,
    // both may be destroyed under it (stop()).
    virtual std::function<void()> take_work() { return {}; }

   protected:
    ~Hooks() = default;
  };

  IoLoop(std::vector<ConnectionOptions> endpoints, ReconnectOptions reconnect, Hooks& hooks,
         Logger logger);
  ~IoLoop();
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  // Starts the thread; returns once connected (to the first endpoint that answers) and on_open
  // ran, or why that failed.
  Status start();
  // Makes the loop take a turn soon. Any thread. Callers that batch work in an outbox need only
  // wake when the outbox goes from empty to non-empty: the loop notes the wake-ups before it
  // takes the outbox. Only a loop that sleeps (or is about to) costs the waker a syscall.
  void wake();
  // Closes politely (on_closing, then channel and connection) and joins. Idempotent; not from
  // the I/O thread itself. The loop's own thread, when it is running work from take_work()
  // (which the owner has given its time to end by now), is left behind, and the loop is
  // closed from the calling thread.
  void stop();

  // ---- any thread but the loop's own ----
  // Runs the loop on the calling thread while its own thread runs work from take_work(), and
  // returns when that thread is back for it (or the loop stops, or end_rescue() is called).
  // Returns at once when the loop's own thread is not away.
  void rescue();
  // Makes a rescue() under way return soon, and later ones at once.
  void end_rescue();

  // ---- I/O thread ----
  // The role of the loop's thread: the hooks run with it, and owners guard their I/O-thread
  // state with it (GUARDED_BY(loop_.io_thread)).
  ThreadRole io_thread;
  // Whether publishing now is safe and useful: connected, not blocked by the broker, and not
  // quiet. A connection silent for a whole heartbeat interval (the broker sends two per
  // interval) may be cut: publishing into it can block this thread inside rabbitmq-c (which
  // sends without a deadline) before the two-interval check declares it dead, so output waits.
  bool can_publish() const REQUIRES(io_thread);
  bool blocked() const REQUIRES(io_thread) { return link_.blocked; }
  const std::string& blocked_reason() const REQUIRES(io_thread) { return link_.blocked_reason; }
  // The user the current connection logged in as.
  const std::string& user() const REQUIRES(io_thread) {
    return endpoints_[current_.load(std::memory_order_relaxed)].user;
  }
  // From a hook: give up this connection (and reconnect, if enabled) once the hook returns.
  void drop(Status why) REQUIRES(io_thread) { pending_drop_ = std::move(why); }

  // ---- any thread but the loop's ----
  // While the loop sleeps, runs `fn(channel)` on the calling thread in the loop's place (its
  // turn is the loop's to lend: the thread holds it, and is the I/O thread meanwhile), writes
  // what `fn` queued, and wakes the loop to take a turn after it: work handed over by another
  // thread (a caller's request) goes out at once instead of after the loop's wake-up. `fn`
  // returns whether it did its work; false from lend() means it did not run (the loop is awake,
  // busy, disconnected or stopping; or the connection is TLS, whose writes may block) or
  // declined: the caller hands the work over the usual way (an outbox and wake()).
  template <class F>
  bool lend(F&& fn) EXCLUDES(turn_) {
    // Only a sleeping loop is worth it: an awake one takes its outboxes itself, soon.
    if (in_io_thread() || !sleeping_.load(std::memory_order_seq_cst)) return false;
    if (!turn_.try_lock()) return false;
    io_thread.assert_held();
    bool done = false;
    std::exception_ptr failed;
    if (link_.channel && link_.channel->writes_without_blocking() &&
        !stop_requested_.load(std::memory_order_acquire)) {
      const std::thread::id loop_thread = io_thread_id_.exchange(std::this_thread::get_id());
      try {
        done = fn(*link_.channel);
      } catch (...) {
        failed = std::current_exception();  // the turn goes back to the loop first
      }
      io_thread_id_.store(loop_thread);
      after_lent_turn();
    }
    turn_.unlock();
    if (failed) std::rethrow_exception(failed);
    return done;
  }

  // ---- any thread ----
  // Whether the calling thread runs the loop now (holds io_thread).
  bool in_io_thread() const { return std::this_thread::get_id() == io_thread_id_.load(); }
  // Whether the calling thread is the loop's own (started by start()), running it or not.
  bool on_own_thread() const { return std::this_thread::get_id() == own_thread_id_.load(); }
  bool connected() const { return connected_.load(std::memory_order_acquire); }
  bool reconnecting() const { return reconnect_.enabled && !connected(); }
  // Why the loop lost its connection, once it has.
  Status lost_reason() const;
  std::uint64_t reconnects() const { return reconnects_.load(std::memory_order_relaxed); }
  // The endpoint in use (or last used), password masked.
  std::string endpoint() const;

 private:
  // What lives and dies with one connection.
  struct Link {
    std::unique_ptr<amqp::Channel> channel;
    std::chrono::seconds heartbeat{0};  // negotiated
    Clock::time_point up_since;
    Clock::time_point last_rx;  // when the socket last had data for us
    // Time spent waiting on the socket since last_rx: silence is only evidence of a dead peer
    // while this loop was listening, not while it was busy (publishing a burst, say).
    Clock::duration listened{0};
    bool blocked = false;
    std::string blocked_reason;
  };

  void run(std::promise<Status>& started) EXCLUDES(turn_, lead_);
  // One turn and the flush after it; false when another turn is due at once (a wake-up from
  // this thread, or frames already read).
  bool turn_then_may_sleep() REQUIRES(io_thread);
  // Runs `work` (from take_work) with the loop let go. False: the loop was stopped meanwhile
  // and left this thread behind: `this` may be gone. True: take_back() next.
  bool run_work(std::function<void()>& work) REQUIRES(io_thread) RELEASE(turn_, lead_);
  // The loop's own thread takes the loop back from a rescue()r, if one runs it.
  void take_back() ACQUIRE(lead_, turn_);
  Status open_first() REQUIRES(io_thread);
  void serve_turn() REQUIRES(io_thread);
  void poll_once() REQUIRES(io_thread, turn_);
  void heard() REQUIRES(io_thread);  // the broker sent something
  void up(std::unique_ptr<amqp::Channel> channel, std::size_t endpoint) REQUIRES(io_thread);
  void lose(Status why) REQUIRES(io_thread);
  void schedule_reconnect() REQUIRES(io_thread);
  void begin_connect() REQUIRES(io_thread);
  void finish_connect() REQUIRES(io_thread);
  void close_politely() REQUIRES(io_thread);
  void after_lent_turn() REQUIRES(io_thread);
  void drop_pending() REQUIRES(io_thread);
  void on_delivery(amqp::Delivery&& d) override;
  void on_return(amqp::Returned&& r) override;
  void on_consumer_cancelled(const std::string& tag) override;
  void on_cancel_ok(const std::string& tag) override;
  void on_blocked(bool blocked, const std::string& reason) override;
  void on_confirm(std::uint64_t seq, bool multiple, bool ack) override;
  void on_probe(amqp::ProbeResult&& result) override;

  std::vector<ConnectionOptions> endpoints_;
  ReconnectOptions reconnect_;
  Hooks& hooks_;
  Logger logger_;
  int wake_fd_ = -1;
  // Wake-ups from other threads, counted; the loop compares the count with the one it saw
  // before its last turn just before it sleeps, and sleeping_ tells a waker whether to signal
  // wake_fd_ (both sequentially consistent: a waker that misses sleeping_ is seen by the loop).
  std::atomic<std::uint64_t> wakes_{0};
  std::atomic<bool> sleeping_{false};
  // The loop's turn: its thread holds this except while it sleeps in poll(), when lend() may
  // take it. Whoever holds it holds io_thread.
  Mutex turn_;
  // Held by the thread that runs the loop: its own thread, or a rescue()r while that thread
  // runs work from take_work(). Unlike turn_ it is kept across poll().
  Mutex lead_;
  // Whether the loop's own thread is away running work, and whether stop() has left it
  // behind there. Shared with that thread, which may outlive the loop.
  struct Away {
    std::mutex mutex;
    bool away = false;
    bool abandoned = false;
  };
  const std::shared_ptr<Away> away_ = std::make_shared<Away>();
  std::atomic<bool> back_{false};          // the own thread is back and waits for lead_
  std::atomic<bool> rescue_ended_{false};  // end_rescue() was called
  std::thread thread_;
  std::atomic<std::thread::id> own_thread_id_{};
  std::atomic<std::thread::id> io_thread_id_{};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::size_t> current_{0};

  // I/O thread only.
  Link link_ GUARDED_BY(io_thread);
  bool self_woken_ GUARDED_BY(io_thread) = false;
  std::uint64_t wakes_seen_ GUARDED_BY(io_thread) = 0;
  // Whether the socket may have data: poll() said so, or the loop took a turn without polling.
  // A turn that knows it has none reads nothing (poll is level-triggered: nothing is missed).
  bool maybe_readable_ GUARDED_BY(io_thread) = true;
  std::optional<Status> pending_drop_ GUARDED_BY(io_thread);
  // Reconnecting.
  std::size_t next_endpoint_ GUARDED_BY(io_thread) = 0;
  std::chrono::milliseconds backoff_ GUARDED_BY(io_thread){0};
  std::optional<Clock::time_point> next_attempt_ GUARDED_BY(io_thread);
  std::optional<Clock::time_point> down_since_ GUARDED_BY(io_thread);
  std::size_t attempts_ GUARDED_BY(io_thread) = 0;
  std::future<Result<std::unique_ptr<amqp::Channel>>> connecting_ GUARDED_BY(io_thread);
  // Runs one connection attempt while the loop goes on.
  std::thread connector_ GUARDED_BY(io_thread);
  std::size_t connecting_endpoint_ GUARDED_BY(io_thread) = 0;
  std::mt19937 rng_ GUARDED_BY(io_thread){std::random_device{}()};

  mutable Mutex lost_mutex_;
  Status lost_reason_ GUARDED_BY(lost_mutex_);
};

}  // namespace amqprpc::detail
