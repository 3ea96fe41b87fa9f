// Calls under a retry or hedging policy (RetryPolicy, HedgingPolicy in options.hpp). Each such
// call is sent as attempts, each an ordinary call of the client (its own correlation id, its
// interceptors, the call table, the deadline timer) whose completion comes back here; between
// attempts the call waits on a timer of the client's I/O loop (next_deadline / on_timer), never
// on a thread of its own. The caller's completion runs once, with the outcome that ends the call.
//
// The first attempt keeps the call's correlation id and span, so a call whose first attempt
// succeeds looks on the wire like one without a policy. Later attempts get ids of their own,
// spans that are children of the first attempt's, and the header x-rpc-previous-attempts.
//
// Thread safety: take() and counters() from any thread; the rest on the client's I/O thread
// (the loop's), or, once the loop is joined, on the thread that closes the client.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "amqprpc/options.hpp"
#include "client/call_table.hpp"
#include "client/deadline_heap.hpp"
#include "client/retry_policy.hpp"
#include "io/outbox.hpp"
#include "thread_annotations.hpp"

namespace amqprpc::detail {

class IoLoop;

// What the engine needs of the client (Client::Impl). On the I/O thread.
class AttemptHost {
 public:
  // Gives an attempt after the first a correlation id of its own and a span, child of `first`
  // (the first attempt's).
  virtual void identify_attempt(PendingCall& attempt, const TraceContext& first) = 0;
  // Sends an attempt as the client sends a call: interceptors, checks, the call table, the
  // outbox. The attempt may complete (refused) before this returns.
  virtual void launch_attempt(std::unique_ptr<PendingCall> attempt) = 0;
  // Ends an attempt that is on the wire (in the call table, sent) with `why`; true if it was.
  // Safe while the client's hooks run: such an attempt is in none of the lists they walk.
  virtual bool end_sent_attempt(const std::string& correlation_id, const Status& why) = 0;
  // Ends an attempt still in the call table, whatever its state, with `why`. Only between the
  // client's hooks (from on_timer, or once the loop is joined).
  virtual void end_attempt(const std::string& correlation_id, const Status& why) = 0;

 protected:
  ~AttemptHost() = default;
};

class RetryEngine {
 public:
  struct Counters {
    std::uint64_t retries = 0;       // attempts a retry policy sent after a failure
    std::uint64_t hedges = 0;        // attempts a hedging policy sent after the first
    std::uint64_t hedge_losses = 0;  // replies to hedged attempts that had lost: dropped
    std::uint64_t cancelled = 0;     // calls cancelled by their callers while no attempt ran
  };

  // Runs on `loop` (its owner's hooks call next_deadline and on_timer); `options` gives the
  // defaults (checked by validate_defaults) and the default timeout.
  RetryEngine(AttemptHost& host, IoLoop& loop, const ClientOptions& options,
              std::chrono::milliseconds max_timeout);
  ~RetryEngine();
  RetryEngine(const RetryEngine&) = delete;
  RetryEngine& operator=(const RetryEngine&) = delete;

  // Any thread. Takes `call` (identified, not yet intercepted) when a policy governs it: one that
  // is not valid completes it here with invalid_argument; otherwise the I/O thread sends its
  // attempts. False, with `call` untouched, for a call with no policy: without a policy in the
  // client's defaults or the call's options, this costs two tests.
  bool take(std::unique_ptr<PendingCall>& call) {
    if (!defaults_on_ && !call->options.retry && !call->options.hedging) return false;
    return take_governed(call);
  }

  // ---- I/O thread ----
  // When on_timer wants to run next.
  std::optional<Clock::time_point> next_deadline() const;
  // Starts the calls handed over, cancels what callers cancelled, ends attempts set aside, and
  // sends the attempts whose time has come. Cheap when there is nothing to do.
  void on_timer(Clock::time_point now);
  // Whether a reply with an unknown correlation id answers an attempt that lost a hedging race
  // (then it is counted as a hedge loss).
  bool take_hedge_loser(const std::string& correlation_id);
  // The client closes (its loop is joined): every call still under way ends with cancelled; no
  // attempt is sent any more.
  void close();

  Counters counters() const;

 private:
  struct Call;
  // A call's pending timer (for the next retry or hedge), in the heap by `deadline`.
  struct Timer {
    Clock::time_point deadline;
    std::size_t heap_index = DeadlineHeap<Timer>::npos;
    Call* owner = nullptr;
  };
  // How a call ends, for the attempts still under way.
  enum class Ending { decided, cancelled, closed };
  // Runs on the canceller's thread: hands the call's id to the I/O thread.
  struct CancelCall {
    RetryEngine* engine;
    std::uint64_t id;
    void operator()() const;
  };
  using Live = std::unordered_map<std::uint64_t, std::unique_ptr<Call>>;

  bool take_governed(std::unique_ptr<PendingCall>& call);
  void begin(std::unique_ptr<Call> call, Clock::time_point now) REQUIRES(io_thread_);
  void cancel(std::uint64_t id) REQUIRES(io_thread_);
  void fire(Call& call, Clock::time_point now) REQUIRES(io_thread_);
  // Sends the next attempt. Bookkeeping first: the call may have ended when this returns.
  void launch_next(Call& call) REQUIRES(io_thread_);
  void attempt_done(std::uint64_t id, PendingCall& attempt, Reply reply);
  void retry_done(Live::iterator it, PendingCall& attempt, Reply reply, Clock::time_point now)
      REQUIRES(io_thread_);
  void hedge_done(Live::iterator it, Reply reply, Clock::time_point now) REQUIRES(io_thread_);
  void finish(Live::iterator it, Reply reply, Ending ending) REQUIRES(io_thread_);
  void arm(Call& call, Clock::time_point at) REQUIRES(io_thread_);
  void end_set_aside() REQUIRES(io_thread_);
  void remember_loser(const std::string& correlation_id) REQUIRES(io_thread_);
  double unit_random() REQUIRES(io_thread_);

  AttemptHost& host_;
  ThreadRole& io_thread_;
  const Logger logger_;
  const RetryPolicy default_retry_;
  const HedgingPolicy default_hedging_;
  const bool defaults_on_;
  const std::chrono::milliseconds default_timeout_;
  const std::chrono::milliseconds max_timeout_;

  // Handed over by other threads. `inbox_` is set when either outbox turns non-empty (under its
  // lock), so that on_timer takes the locks only when there is something to take.
  std::atomic<bool> inbox_{false};
  Outbox<std::unique_ptr<Call>> starts_;
  Outbox<std::uint64_t> cancels_;
  std::atomic<std::uint64_t> next_id_{1};

  Live live_ GUARDED_BY(io_thread_);
  DeadlineHeap<Timer> timers_ GUARDED_BY(io_thread_);
  std::vector<std::unique_ptr<Call>> start_batch_ GUARDED_BY(io_thread_);
  std::vector<std::uint64_t> cancel_batch_ GUARDED_BY(io_thread_);
  // Attempts of ended calls that were held in the call table (not sent): ended in on_timer.
  std::vector<std::pair<std::string, Status>> set_aside_ GUARDED_BY(io_thread_);
  // Hedged attempts that lost while on the wire, by hash of their ids, the last few thousand
  // (in a ring): their replies count as hedge losses, not as late replies.
  static constexpr std::size_t kLosers = 4096;
  std::unordered_set<std::size_t> losers_ GUARDED_BY(io_thread_);
  std::vector<std::size_t> loser_ring_ GUARDED_BY(io_thread_);
  std::size_t loser_next_ GUARDED_BY(io_thread_) = 0;
  std::mt19937_64 rng_ GUARDED_BY(io_thread_){std::random_device{}()};
  bool closed_ GUARDED_BY(io_thread_) = false;

  std::atomic<std::uint64_t> retries_{0}, hedges_{0}, hedge_losses_{0}, cancelled_{0};
};

}  // namespace amqprpc::detail
