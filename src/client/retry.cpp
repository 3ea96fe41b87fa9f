#include "client/retry.hpp"

#include <algorithm>

#include "io/io_loop.hpp"
#include "log.hpp"
#include "protocol/wire.hpp"

namespace amqprpc::detail {

// One call under a policy, from take() until its caller has the outcome.
struct RetryEngine::Call {
  std::uint64_t id = 0;
  // The caller's call: its completion, options (the template of every attempt, without the
  // policies), body (kept between attempts), first span, and the recorders of calls' latency
  // and errors, which only it feeds.
  std::unique_ptr<PendingCall> call;
  CallPolicy::Kind kind = CallPolicy::Kind::none;
  // The call's own policy, when it has one; `retry` or `hedging` points to it or to a default.
  std::optional<RetryPolicy> own_retry;
  std::optional<HedgingPolicy> own_hedging;
  const RetryPolicy* retry = nullptr;
  const HedgingPolicy* hedging = nullptr;
  Clock::time_point deadline;
  int sent = 0;               // attempts launched
  std::size_t body_size = 0;  // what a retry's attempt must hand back
  // The correlation ids of the attempts launched and not yet completed ("": a free slot).
  std::array<std::string, kMaxPolicyAttempts> waiting;
  // The outcome of the last attempt that failed, for a call that ends without another one.
  Reply last;
  // Hedging: stops attempts still on their way to the call table (the client drops them
  // unsent) once the call has ended. A retry's attempts carry the caller's own token instead:
  // one attempt at a time, which the caller's cancel ends as it ends any call.
  std::optional<std::stop_source> attempts_stop;
  // Registered with the caller's CallOptions::cancel.
  std::optional<std::stop_callback<CancelCall>> on_cancel;
  Timer timer;

  int max_attempts() const {
    return retry != nullptr ? retry->max_attempts : hedging->max_attempts;
  }
  bool any_waiting() const {
    return std::any_of(waiting.begin(), waiting.end(), [](const auto& id) { return !id.empty(); });
  }
  void forget(const std::string& correlation_id) {
    for (auto& id : waiting) {
      if (id == correlation_id) {
        id.clear();
        return;
      }
    }
  }
};

void RetryEngine::CancelCall::operator()() const {
  engine->cancels_.push(std::uint64_t{id});
}

RetryEngine::RetryEngine(AttemptHost& host, IoLoop& loop, const ClientOptions& options,
                         std::chrono::milliseconds max_timeout)
    : host_(host),
      io_thread_(loop.io_thread),
      logger_(options.logger),
      default_retry_(options.retry),
      default_hedging_(options.hedging),
      defaults_on_(options.retry.max_attempts > 1 || options.hedging.max_attempts > 1),
      default_timeout_(options.default_timeout),
      max_timeout_(max_timeout),
      starts_([this, &loop] {
        inbox_.store(true, std::memory_order_release);
        loop.wake();
      }),
      cancels_([this, &loop] {
        inbox_.store(true, std::memory_order_release);
        loop.wake();
      }) {}

RetryEngine::~RetryEngine() = default;

bool RetryEngine::take_governed(std::unique_ptr<PendingCall>& call) {
  const CallPolicy policy =
      policy_for(call->options, call->oneway, default_retry_, default_hedging_);
  if (policy.kind == CallPolicy::Kind::none) return false;
  if (policy.kind == CallPolicy::Kind::invalid) {
    call->complete(Reply{policy.invalid, {}, {}, {}}, logger_);
    return true;
  }
  auto c = std::make_unique<Call>();
  c->id = next_id_.fetch_add(1, std::memory_order_relaxed);
  c->kind = policy.kind;
  // The policy moves out of the options every attempt copies.
  if (call->options.retry && policy.retry == &*call->options.retry) {
    c->own_retry = std::move(call->options.retry);
    c->retry = &*c->own_retry;
  } else {
    c->retry = policy.retry;
  }
  if (call->options.hedging && policy.hedging == &*call->options.hedging) {
    c->own_hedging = std::move(call->options.hedging);
    c->hedging = &*c->own_hedging;
  } else {
    c->hedging = policy.hedging;
  }
  call->options.retry.reset();
  call->options.hedging.reset();
  // The deadline as the client computes it for a call (a timeout that is not positive leaves
  // it now: the first attempt is refused for it, and nothing is tried after).
  const auto now = Clock::now();
  const auto timeout = std::min(call->options.timeout.value_or(default_timeout_), max_timeout_);
  c->deadline = now + std::max(timeout, std::chrono::milliseconds::zero());
  if (call->options.deadline && *call->options.deadline < c->deadline) {
    c->deadline = *call->options.deadline;
  }
  c->body_size = call->body.size();
  c->call = std::move(call);
  if (c->call->options.cancel.stop_possible()) {
    // May run at once, or on any thread later; begin() also checks the token, so a cancel that
    // overtakes its call still takes effect.
    c->on_cancel.emplace(c->call->options.cancel, CancelCall{this, c->id});
  }
  if (!starts_.push(c)) {
    c->on_cancel.reset();
    c->call->complete(Reply::error(StatusCode::cancelled, "the client was closed"), logger_);
  }
  return true;
}

std::optional<Clock::time_point> RetryEngine::next_deadline() const {
  io_thread_.assert_held();
  if (timers_.empty()) return std::nullopt;
  return timers_.top()->deadline;
}

void RetryEngine::on_timer(Clock::time_point now) {
  io_thread_.assert_held();
  if (inbox_.exchange(false, std::memory_order_acquire)) {
    // Starts before cancels: a cancel handed over with its call finds it.
    starts_.take(start_batch_);
    for (auto& call : start_batch_) begin(std::move(call), now);
    start_batch_.clear();
    cancels_.take(cancel_batch_);
    for (std::uint64_t id : cancel_batch_) cancel(id);
    cancel_batch_.clear();
  }
  end_set_aside();
  while (!timers_.empty() && timers_.top()->deadline <= now) {
    Call& call = *timers_.pop()->owner;
    fire(call, now);
  }
  end_set_aside();
}

void RetryEngine::begin(std::unique_ptr<Call> call, Clock::time_point now) {
  if (call->call->options.cancel.stop_requested()) {
    call->on_cancel.reset();
    call->call->complete(Reply::error(StatusCode::cancelled, "cancelled before it was sent"),
                         logger_);
    return;
  }
  Call& c = *call;
  live_.emplace(c.id, std::move(call));
  if (c.kind == CallPolicy::Kind::hedging) arm(c, now + c.hedging->delay);
  launch_next(c);
}

void RetryEngine::cancel(std::uint64_t id) {
  auto it = live_.find(id);
  if (it == live_.end()) return;  // ended already
  cancelled_.fetch_add(1, std::memory_order_relaxed);
  finish(it, Reply::error(StatusCode::cancelled, "cancelled by the caller"), Ending::cancelled);
}

void RetryEngine::fire(Call& call, Clock::time_point now) {
  if (call.kind == CallPolicy::Kind::retry) {
    // Armed only before the deadline; a loop that ran late may find it passed.
    if (now >= call.deadline) {
      Reply last = std::move(call.last);
      finish(live_.find(call.id), std::move(last), Ending::decided);
      return;
    }
    launch_next(call);
    return;
  }
  // Hedging: the attempts under way end the call, at its deadline at the latest.
  if (now >= call.deadline || call.sent >= call.max_attempts()) return;
  if (call.sent + 1 < call.max_attempts()) arm(call, now + call.hedging->delay);
  launch_next(call);
}

void RetryEngine::launch_next(Call& c) {
  const int n = ++c.sent;
  PendingCall& call = *c.call;
  auto attempt = std::make_unique<PendingCall>();
  // A retry's attempt (one at a time) takes the queue and the body, and hands them back when it
  // completes (an idempotent call keeps its body while it is under way: the client may have to
  // send it again). Hedged attempts run side by side: all but the last possible one get copies.
  const bool take = c.kind == CallPolicy::Kind::retry || n == c.max_attempts();
  attempt->queue = take ? std::move(call.queue) : call.queue;
  attempt->body = take ? std::move(call.body) : call.body;
  attempt->options = call.options;
  // The attempt ends with the call: never later than its deadline, and, once a hedged call has
  // ended, unsent if it has not reached the call table yet.
  attempt->options.deadline = c.deadline;
  if (c.kind == CallPolicy::Kind::hedging) {
    if (!c.attempts_stop) c.attempts_stop.emplace();
    attempt->options.cancel = c.attempts_stop->get_token();
  }
  attempt->interceptors = call.interceptors;
  if (call.interceptors != nullptr && !call.interceptors->empty()) {
    // What interceptors see of the attempt; the call itself records its own latency.
    attempt->submitted = Clock::now();
    attempt->start = std::chrono::system_clock::now();
  }
  if (n == 1) {
    // The call's own id and span: the first attempt is on the wire what a call without a
    // policy is. A retry's first attempt takes the span too (it comes back for the second).
    attempt->correlation_id = std::move(call.correlation_id);
    attempt->trace = c.kind == CallPolicy::Kind::retry ? std::move(call.trace) : call.trace;
    attempt->parent_span_id = call.parent_span_id;
  } else {
    attempt->options.headers.insert_or_assign(std::string(wire::kPreviousAttemptsHeader),
                                              std::to_string(n - 1));
    host_.identify_attempt(*attempt, call.trace);
    if (c.kind == CallPolicy::Kind::retry) {
      retries_.fetch_add(1, std::memory_order_relaxed);
    } else {
      hedges_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  for (auto& id : c.waiting) {
    if (id.empty()) {
      id = attempt->correlation_id;
      break;
    }
  }
  attempt->done = std::function<void(Reply)>([this, id = c.id, self = attempt.get()](Reply reply) {
    // `self` is the attempt completing: alive while its completion runs.
    attempt_done(id, *self, std::move(reply));
  });
  host_.launch_attempt(std::move(attempt));  // `c` may have ended here
}

void RetryEngine::attempt_done(std::uint64_t id, PendingCall& attempt, Reply reply) {
  io_thread_.assert_held();
  auto it = live_.find(id);
  if (it == live_.end()) return;  // its call has ended: nothing to decide
  it->second->forget(attempt.correlation_id);
  if (reply.status.ok()) {
    finish(it, std::move(reply), Ending::decided);  // the common case, under either policy
    return;
  }
  const auto now = Clock::now();
  if (it->second->kind == CallPolicy::Kind::retry) {
    retry_done(it, attempt, std::move(reply), now);
  } else {
    hedge_done(it, std::move(reply), now);
  }
}

void RetryEngine::retry_done(Live::iterator it, PendingCall& attempt, Reply reply,
                             Clock::time_point now) {
  Call& c = *it->second;
  // Back for the next attempt: what the attempt took (launch_next).
  c.call->queue = std::move(attempt.queue);
  c.call->body = std::move(attempt.body);
  if (c.sent == 1) c.call->trace = std::move(attempt.trace);  // the parent of later attempts' spans
  std::optional<Clock::time_point> next;
  if (c.call->body.size() != c.body_size) {
    // The client keeps an idempotent call's body while it may send it again; if it ever stops
    // doing so, a retry must not send what is left.
    log(logger_, LogLevel::error,
        "retry policy: the attempt did not keep the call's body; not retried (a bug)");
  } else if (!closed_) {
    next = next_retry(*c.retry, c.sent, reply.status.code(), now, c.deadline, unit_random());
  }
  if (!next) {
    finish(it, std::move(reply), Ending::decided);
    return;
  }
  c.last = std::move(reply);
  arm(c, *next);
}

void RetryEngine::hedge_done(Live::iterator it, Reply reply, Clock::time_point now) {
  Call& c = *it->second;
  if (closed_ || !non_fatal(*c.hedging, reply.status.code())) {
    finish(it, std::move(reply), Ending::decided);  // a success or a fatal error: it wins
    return;
  }
  c.last = std::move(reply);
  if (c.sent < c.max_attempts() && now < c.deadline) {
    // gRPC's rule: a non-fatal error sends the next attempt at once; the one after waits the
    // delay again.
    timers_.remove(&c.timer);
    if (c.sent + 1 < c.max_attempts()) arm(c, now + c.hedging->delay);
    launch_next(c);
    return;
  }
  if (!c.any_waiting()) {
    Reply last = std::move(c.last);
    finish(it, std::move(last), Ending::decided);
  }
}

void RetryEngine::finish(Live::iterator it, Reply reply, Ending ending) {
  // Out of the table first: the attempts ended below find their call gone.
  std::unique_ptr<Call> c = std::move(it->second);
  live_.erase(it);
  timers_.remove(&c->timer);
  if (c->any_waiting()) {
    const Status why =
        ending == Ending::decided
            ? Status{StatusCode::cancelled, "another attempt of this call ended it first"}
        : ending == Ending::cancelled ? Status{StatusCode::cancelled, "cancelled by the caller"}
                                      : Status{StatusCode::cancelled, "the client was closed"};
    for (auto& id : c->waiting) {
      if (id.empty()) continue;
      if (host_.end_sent_attempt(id, why)) {
        // Its reply may still come: a hedging race's loser, unless the caller gave up.
        if (c->kind == CallPolicy::Kind::hedging && ending == Ending::decided) remember_loser(id);
      } else {
        set_aside_.emplace_back(std::move(id), why);  // held, or on its way to the call table
      }
      id.clear();
    }
    if (c->attempts_stop) c->attempts_stop->request_stop();
  }
  // Unregistered before the caller's completion, which may destroy the token's source.
  c->on_cancel.reset();
  c->call->complete(std::move(reply), logger_);
}

void RetryEngine::arm(Call& c, Clock::time_point at) {
  timers_.remove(&c.timer);
  c.timer.owner = &c;
  c.timer.deadline = at;
  timers_.push(&c.timer);
}

void RetryEngine::end_set_aside() {
  if (set_aside_.empty()) return;
  std::vector<std::pair<std::string, Status>> batch;
  batch.swap(set_aside_);
  for (const auto& [id, why] : batch) host_.end_attempt(id, why);
}

void RetryEngine::remember_loser(const std::string& correlation_id) {
  const std::size_t h = std::hash<std::string>{}(correlation_id);
  if (!losers_.insert(h).second) return;
  if (loser_ring_.size() < kLosers) {
    loser_ring_.push_back(h);
    return;
  }
  losers_.erase(loser_ring_[loser_next_]);
  loser_ring_[loser_next_] = h;
  loser_next_ = (loser_next_ + 1) % kLosers;
}

bool RetryEngine::take_hedge_loser(const std::string& correlation_id) {
  io_thread_.assert_held();
  if (losers_.empty() || losers_.erase(std::hash<std::string>{}(correlation_id)) == 0) {
    return false;
  }
  hedge_losses_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

double RetryEngine::unit_random() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

void RetryEngine::close() {
  io_thread_.assert_held();
  closed_ = true;
  for (auto& call : starts_.close()) {
    call->on_cancel.reset();
    call->call->complete(Reply::error(StatusCode::cancelled, "the client was closed"), logger_);
  }
  cancels_.close();
  while (!live_.empty()) {
    finish(live_.begin(),
           Reply::error(StatusCode::cancelled, "the client was closed before the reply came"),
           Ending::closed);
  }
  end_set_aside();
}

RetryEngine::Counters RetryEngine::counters() const {
  Counters c;
  c.retries = retries_.load(std::memory_order_relaxed);
  c.hedges = hedges_.load(std::memory_order_relaxed);
  c.hedge_losses = hedge_losses_.load(std::memory_order_relaxed);
  c.cancelled = cancelled_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace amqprpc::detail
