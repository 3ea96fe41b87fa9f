// Retry and hedging policies against the real broker: a retried call succeeds once its server
// stops failing and the server sees every attempt; what is not retryable (a code, a call not
// marked idempotent, a passed deadline) gets one attempt; cancelling or closing ends a call
// waiting to retry; a hedged call takes the first good reply and counts the loser's reply as a
// hedge loss; bad policies are refused. Outcomes are waited for (bounded), never timed.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/interceptor.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

constexpr const char* kPrevious = "x-rpc-previous-attempts";

// What the server saw: every request, in the order its handler started.
struct Seen {
  std::mutex mutex;
  std::vector<Request> requests;

  // Records a request; returns how many requests with this body came so far, this one included.
  int add(const Request& r) {
    std::lock_guard lock(mutex);
    requests.push_back(r);
    int n = 0;
    for (const auto& q : requests) n += q.body == r.body ? 1 : 0;
    return n;
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return requests.size();
  }
  // The x-rpc-previous-attempts header of each request ("-" when absent).
  std::vector<std::string> previous() {
    std::lock_guard lock(mutex);
    std::vector<std::string> out;
    for (const auto& r : requests) {
      auto it = r.headers.find(kPrevious);
      out.push_back(it == r.headers.end() ? "-" : it->second);
    }
    return out;
  }
};

// A gate a handler waits at (bounded) until the test opens it.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 30s, [this] { return open; });
  }
  void release() {
    {
      std::lock_guard lock(mutex);
      open = true;
    }
    cv.notify_all();
  }
};

RetryPolicy quick_retry(int attempts) {
  RetryPolicy p;
  p.max_attempts = attempts;
  p.initial_backoff = 5ms;
  p.max_backoff = 20ms;
  return p;
}

// A backoff so long that no retry can start before any test's deadline (the chance that a
// random wait in [0, 30 days) is shorter than 20 s is below 1e-5).
RetryPolicy endless_backoff(int attempts) {
  RetryPolicy p;
  p.max_attempts = attempts;
  p.initial_backoff = std::chrono::hours(24 * 30);
  p.max_backoff = p.initial_backoff;
  return p;
}

CallOptions idempotent_with(RetryPolicy p) {
  CallOptions o;
  o.idempotent = true;
  o.retry = std::move(p);
  o.timeout = 20s;
  return o;
}

CallOptions idempotent_with(HedgingPolicy p) {
  CallOptions o;
  o.idempotent = true;
  o.hedging = std::move(p);
  o.timeout = 20s;
  return o;
}

class RetryTest : public testing::Test {
 protected:
  void TearDown() override {
    server.reset();
    try {
      testbroker::Raw().remove(queue);
    } catch (...) {
    }
  }
  // Serves `queue`; the handler gets each request and how many with its body came so far.
  void serve(std::function<Reply(const Request&, int)> handler, std::size_t workers = 1) {
    auto o = testbroker::server_options(workers);
    o.queue = queue;
    auto s = Server::start(o, [this, handler = std::move(handler)](const Request& r) {
      return handler(r, seen.add(r));
    });
    if (!s) throw std::runtime_error(s.status().to_string());
    server = std::move(*s);
  }
  // Answers unavailable to the first `failures` attempts of each body, then echoes it.
  void serve_failing_first(int failures) {
    serve([failures](const Request& r, int n) {
      if (n <= failures)
        return Reply::error(StatusCode::unavailable, "not yet #" + std::to_string(n));
      return Reply::ok("done: " + r.body);
    });
  }

  std::string queue = testbroker::unique("retry");
  Seen seen;
  std::unique_ptr<Server> server;
};

}  // namespace

// ---- retry ----

TEST_F(RetryTest, TheCallSucceedsOnceTheServerStopsFailingAndTheServerSawEveryAttempt) {
  serve_failing_first(2);
  auto c = testbroker::connect();
  Reply r = c->try_call(queue, "payload", idempotent_with(quick_retry(4)));
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "done: payload");
  ASSERT_EQ(seen.size(), 3u);
  {
    std::lock_guard lock(seen.mutex);
    std::set<std::string> ids;
    for (const auto& req : seen.requests) {
      EXPECT_EQ(req.body, "payload") << "every attempt carries the whole body";
      ids.insert(req.correlation_id);
    }
    EXPECT_EQ(ids.size(), 3u) << "each attempt is a request of its own";
  }
  EXPECT_EQ(seen.previous(), (std::vector<std::string>{"-", "1", "2"}));
  auto s = c->stats();
  EXPECT_EQ(s.calls, 1u) << "one call, however many attempts";
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.replies, 3u) << "replies count requests answered";
  EXPECT_TRUE(s.errors.empty()) << "the call succeeded";
  EXPECT_EQ(s.latency.count(), 1u);
  EXPECT_EQ(s.late_replies, 0u);
}

TEST_F(RetryTest, AfterTheLastAttemptTheCallEndsWithItsStatus) {
  serve_failing_first(100);
  auto c = testbroker::connect();
  Reply r = c->try_call(queue, "x", idempotent_with(quick_retry(3)));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_EQ(r.status.message(), "not yet #3") << "the last attempt's status";
  EXPECT_EQ(seen.size(), 3u);
  auto s = c->stats();
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.errors[StatusCode::unavailable], 1u) << "errors count calls";
}

TEST_F(RetryTest, ACodeThatIsNotRetryableEndsTheCallAtTheFirstAttempt) {
  serve([](const Request&, int) { return Reply::error(StatusCode::invalid_argument, "bad"); });
  auto c = testbroker::connect();
  Reply r = c->try_call(queue, "x", idempotent_with(quick_retry(5)));
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(c->stats().retries, 0u);
}

TEST_F(RetryTest, ACallNotMarkedIdempotentGetsOneAttempt) {
  serve_failing_first(1);
  auto c = testbroker::connect();
  CallOptions o = idempotent_with(quick_retry(5));
  o.idempotent = false;
  Reply r = c->try_call(queue, "x", o);
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(c->stats().retries, 0u);
}

TEST_F(RetryTest, ARetryThatCouldNotStartBeforeTheDeadlineIsNotWaitedFor) {
  serve_failing_first(100);
  auto c = testbroker::connect();
  // The wait before a second attempt would outlast the call's 20 s: the call ends at once with
  // the first attempt's status, not at its deadline with deadline_exceeded.
  Reply r = c->try_call(queue, "x", idempotent_with(endless_backoff(5)));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable) << r.status.to_string();
  EXPECT_EQ(r.status.message(), "not yet #1");
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(c->stats().retries, 0u);
  EXPECT_EQ(c->stats().timeouts, 0u);
}

TEST_F(RetryTest, AnAttemptStillWaitingAtTheDeadlineEndsTheCallWithDeadlineExceeded) {
  testbroker::Raw raw;
  raw.declare(queue);  // nobody consumes: the attempt waits for its deadline, the call's
  auto c = testbroker::connect();
  RetryPolicy p = quick_retry(5);
  p.retryable_codes.push_back(StatusCode::deadline_exceeded);
  CallOptions o = idempotent_with(p);
  o.timeout = 300ms;
  o.wait_for_ready = true;  // sent to the queue for a server, not failed fast
  Reply r = c->try_call(queue, "anyone?", o);
  EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded) << r.status.to_string();
  auto s = c->stats();
  EXPECT_EQ(s.retries, 0u) << "no attempt after the deadline, even for a retryable code";
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_TRUE(eventually([&] { return raw.depth(queue) == 0; }))
      << "the request expired in the queue with the call";
}

TEST_F(RetryTest, AQueueThatDoesNotExistIsRetriedLikeAnyUnavailable) {
  auto c = testbroker::connect();
  Reply r = c->try_call(queue + "-missing", "x", idempotent_with(quick_retry(3)));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_NE(r.status.message().find("no route"), std::string::npos) << r.status.message();
  auto s = c->stats();
  EXPECT_EQ(s.unroutable, 3u) << "unroutable counts requests";
  EXPECT_EQ(s.retries, 2u);
  EXPECT_EQ(s.calls, 1u);
}

TEST_F(RetryTest, CancellingDuringTheBackoffEndsTheCallWithCancelled) {
  serve_failing_first(100);
  auto c = testbroker::connect();
  std::stop_source cancel;
  CallOptions o = idempotent_with(endless_backoff(3));
  o.timeout = std::chrono::hours(24 * 30);  // only the cancel can end it
  o.cancel = cancel.get_token();
  auto pending = c->async_call(queue, "x", o);
  // The first attempt's error reply came: the call waits to retry.
  ASSERT_TRUE(eventually([&] { return c->stats().replies == 1; }));
  cancel.request_stop();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  Reply r = pending.get();
  EXPECT_EQ(r.status.code(), StatusCode::cancelled);
  EXPECT_EQ(r.status.message(), "cancelled by the caller");
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(c->stats().cancelled, 1u);
  EXPECT_EQ(c->stats().retries, 0u);
}

TEST_F(RetryTest, CancellingWhileAnAttemptRunsEndsTheCallAndItsReplyIsLate) {
  Gate gate;
  serve([&gate](const Request&, int) {
    gate.wait();
    return Reply::ok("too late");
  });
  auto c = testbroker::connect();
  std::stop_source cancel;
  CallOptions o = idempotent_with(quick_retry(3));
  o.cancel = cancel.get_token();
  auto pending = c->async_call(queue, "x", o);
  ASSERT_TRUE(eventually([&] { return seen.size() == 1; }));
  cancel.request_stop();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(pending.get().status.code(), StatusCode::cancelled);
  gate.release();
  EXPECT_TRUE(eventually([&] { return c->stats().late_replies == 1; }));
  EXPECT_EQ(c->stats().hedge_losses, 0u);
  EXPECT_EQ(c->stats().cancelled, 1u);
  EXPECT_EQ(seen.size(), 1u);
}

TEST_F(RetryTest, ClosingTheClientEndsACallWaitingToRetry) {
  serve_failing_first(100);
  auto c = testbroker::connect();
  CallOptions o = idempotent_with(endless_backoff(3));
  o.timeout = std::chrono::hours(24 * 30);  // the retry waits: only closing can end the call
  auto pending = c->async_call(queue, "x", o);
  ASSERT_TRUE(eventually([&] { return c->stats().replies == 1; }));
  c.reset();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  Reply r = pending.get();
  EXPECT_EQ(r.status.code(), StatusCode::cancelled) << r.status.to_string();
}

TEST_F(RetryTest, TheClientsDefaultPolicyAppliesToIdempotentCallsAndACallMayTurnItOff) {
  serve_failing_first(1);
  ClientOptions co;
  co.retry = quick_retry(3);
  auto c = testbroker::connect(co);
  CallOptions idempotent;
  idempotent.idempotent = true;
  EXPECT_EQ(c->call(queue, "a", idempotent), "done: a");
  CallOptions off = idempotent;
  off.retry = RetryPolicy{};  // one attempt
  EXPECT_EQ(c->try_call(queue, "b", off).status.code(), StatusCode::unavailable);
  EXPECT_EQ(c->try_call(queue, "c").status.code(), StatusCode::unavailable)
      << "not idempotent: one attempt";
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(c->stats().retries, 1u);
  EXPECT_EQ(c->stats().calls, 3u);
}

TEST_F(RetryTest, EveryFormOfCallRetries) {
  serve_failing_first(1);
  auto c = testbroker::connect();
  const CallOptions o = idempotent_with(quick_retry(2));
  EXPECT_EQ(c->call(queue, "call", o), "done: call");
  EXPECT_EQ(c->try_call(queue, "try", o).body, "done: try");
  EXPECT_EQ(c->async_call(queue, "future", o).get().body, "done: future");
  std::promise<Reply> got;
  c->async_call(queue, "callback", o, [&got](Reply r) { got.set_value(std::move(r)); });
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get().body, "done: callback");
  EXPECT_EQ(c->stats().retries, 4u);
}

namespace {

// Records each attempt it sees and adds a header to it.
class AttemptRecorder final : public ClientInterceptor {
 public:
  Status before_call(ClientCall& call, std::any&) override {
    std::lock_guard lock(mutex);
    auto it = call.options.headers.find(kPrevious);
    log.push_back("before " + (it == call.options.headers.end() ? "-" : it->second));
    call.options.headers["x-tenant"] = "acme";
    spans.insert(call.trace.span_id);
    trace_ids.insert(call.trace.trace_id);
    return {};
  }
  void after_call(const ClientCall&, Reply& reply, std::chrono::nanoseconds, std::any&) override {
    std::lock_guard lock(mutex);
    log.push_back("after " + std::string(to_string(reply.status.code())));
  }
  std::mutex mutex;
  std::vector<std::string> log;
  std::set<std::string> spans, trace_ids;
};

}  // namespace

TEST_F(RetryTest, InterceptorsSeeEveryAttemptAndEveryAttemptIsASpanOfOneTrace) {
  serve_failing_first(2);
  auto recorder = std::make_shared<AttemptRecorder>();
  ClientOptions co;
  co.interceptors.push_back(recorder);
  auto c = testbroker::connect(co);
  EXPECT_EQ(c->call(queue, "x", idempotent_with(quick_retry(3))), "done: x");
  {
    std::lock_guard lock(recorder->mutex);
    EXPECT_EQ(recorder->log,
              (std::vector<std::string>{"before -", "after unavailable", "before 1",
                                        "after unavailable", "before 2", "after ok"}));
    EXPECT_EQ(recorder->spans.size(), 3u);
    EXPECT_EQ(recorder->trace_ids.size(), 1u);
  }
  std::lock_guard lock(seen.mutex);
  for (const auto& r : seen.requests) EXPECT_EQ(r.headers.at("x-tenant"), "acme");
}

TEST_F(RetryTest, BadPoliciesAreRefusedWithInvalidArgument) {
  serve([](const Request&, int) { return Reply::ok("served"); });
  auto c = testbroker::connect();
  auto refused = [&](const CallOptions& o) { return c->try_call(queue, "x", o).status; };
  RetryPolicy too_many = quick_retry(6);
  EXPECT_EQ(refused(idempotent_with(too_many)).code(), StatusCode::invalid_argument);
  EXPECT_NE(refused(idempotent_with(too_many)).message().find("max_attempts"), std::string::npos);
  RetryPolicy no_backoff = quick_retry(3);
  no_backoff.initial_backoff = -1ms;
  EXPECT_EQ(refused(idempotent_with(no_backoff)).code(), StatusCode::invalid_argument);
  RetryPolicy shrinking = quick_retry(3);
  shrinking.backoff_multiplier = 0.5;
  EXPECT_EQ(refused(idempotent_with(shrinking)).code(), StatusCode::invalid_argument);
  HedgingPolicy negative;
  negative.max_attempts = 2;
  negative.delay = -1ms;
  EXPECT_EQ(refused(idempotent_with(negative)).code(), StatusCode::invalid_argument);
  CallOptions both = idempotent_with(quick_retry(2));
  both.hedging = HedgingPolicy{};
  EXPECT_EQ(refused(both).code(), StatusCode::invalid_argument);
  CallOptions not_idempotent = idempotent_with(too_many);
  not_idempotent.idempotent = false;
  EXPECT_EQ(refused(not_idempotent).code(), StatusCode::invalid_argument)
      << "a bad policy is a mistake on any call";
  EXPECT_EQ(seen.size(), 0u) << "nothing was sent";
  EXPECT_EQ(c->call(queue, "x"), "served") << "the client goes on";

  ClientOptions both_defaults;
  both_defaults.connection = testbroker::options();
  both_defaults.retry = quick_retry(2);
  both_defaults.hedging.max_attempts = 2;
  auto connected = Client::connect(both_defaults);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.status().code(), StatusCode::invalid_argument);
  ClientOptions bad_default;
  bad_default.connection = testbroker::options();
  bad_default.retry = too_many;
  EXPECT_EQ(Client::connect(bad_default).status().code(), StatusCode::invalid_argument);
}

// ---- hedging ----

TEST_F(RetryTest, AHedgedCallTakesTheFirstReplyAndTheLosersReplyCountsAsAHedgeLoss) {
  Gate gate;
  // The first copy of a request is slow (it waits for the gate), the second fast.
  serve(
      [&gate](const Request& r, int) {
        if (r.headers.count(kPrevious) == 0) {
          gate.wait();
          return Reply::ok("slow");
        }
        return Reply::ok("fast");
      },
      /*workers=*/2);
  auto c = testbroker::connect();
  HedgingPolicy p;
  p.max_attempts = 2;
  p.delay = 20ms;
  std::atomic<int> completions{0};
  std::promise<Reply> got;
  c->async_call(queue, "x", idempotent_with(p), [&](Reply r) {
    if (completions.fetch_add(1) == 0) got.set_value(std::move(r));
  });
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  Reply r = f.get();
  EXPECT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "fast");
  EXPECT_EQ(c->stats().hedges, 1u);
  gate.release();  // the loser answers now
  EXPECT_TRUE(eventually([&] { return c->stats().hedge_losses == 1; }));
  auto s = c->stats();
  EXPECT_EQ(s.late_replies, 0u) << "a hedge loss, not merely a late reply";
  EXPECT_EQ(s.calls, 1u);
  EXPECT_EQ(completions.load(), 1) << "the caller got exactly one reply";
  EXPECT_EQ(seen.size(), 2u);
}

TEST_F(RetryTest, ANonFatalErrorSendsTheNextHedgedAttemptAtOnce) {
  serve_failing_first(1);
  auto c = testbroker::connect();
  HedgingPolicy p;
  p.max_attempts = 3;
  p.delay = std::chrono::hours(1);  // only a non-fatal error can send another attempt in time
  p.non_fatal_codes = {StatusCode::unavailable};
  Reply r = c->try_call(queue, "x", idempotent_with(p));
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "done: x");
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen.previous(), (std::vector<std::string>{"-", "1"}));
  EXPECT_EQ(c->stats().hedges, 1u);
  EXPECT_EQ(c->stats().retries, 0u);
}

TEST_F(RetryTest, AFatalErrorEndsAHedgedCall) {
  serve_failing_first(1);
  auto c = testbroker::connect();
  HedgingPolicy p;
  p.max_attempts = 3;
  p.delay = std::chrono::hours(1);
  Reply r = c->try_call(queue, "x", idempotent_with(p));  // no non-fatal codes
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(c->stats().hedges, 0u);
}

TEST_F(RetryTest, WhenEveryHedgedAttemptFailsNonFatallyTheCallEndsWithTheLastOne) {
  serve([](const Request&, int) { return Reply::error(StatusCode::unavailable, "busy"); });
  auto c = testbroker::connect();
  HedgingPolicy p;
  p.max_attempts = 3;
  p.delay = 0ms;  // all at once
  p.non_fatal_codes = {StatusCode::unavailable};
  Reply r = c->try_call(queue, "x", idempotent_with(p));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_EQ(r.status.message(), "busy");
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(c->stats().hedges, 2u);
  EXPECT_EQ(c->stats().hedge_losses, 0u);
  EXPECT_EQ(c->stats().replies, 3u);
}

TEST_F(RetryTest, CancellingAHedgedCallEndsEveryAttempt) {
  Gate gate;
  serve(
      [&gate](const Request&, int) {
        gate.wait();
        return Reply::ok("late");
      },
      /*workers=*/2);
  auto c = testbroker::connect();
  HedgingPolicy p;
  p.max_attempts = 2;
  p.delay = 0ms;
  std::stop_source cancel;
  CallOptions o = idempotent_with(p);
  o.cancel = cancel.get_token();
  auto pending = c->async_call(queue, "x", o);
  ASSERT_TRUE(eventually([&] { return seen.size() == 2; }));
  cancel.request_stop();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(pending.get().status.code(), StatusCode::cancelled);
  gate.release();
  EXPECT_TRUE(eventually([&] { return c->stats().late_replies == 2; }))
      << "the caller gave up: late replies, not hedge losses";
  EXPECT_EQ(c->stats().hedge_losses, 0u);
  EXPECT_EQ(c->stats().cancelled, 1u);
}
