// The I/O layer's pure pieces: backoff, the outbox, the confirm tracker, the worker pool.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "io/backoff.hpp"
#include "io/confirm_tracker.hpp"
#include "io/outbox.hpp"
#include "io/worker_pool.hpp"
#include "server/in_hand.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using detail::backoff_delay;
using detail::backoff_grow;

namespace {
bool testing_eventually(const std::function<bool()>& what) {
  const auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end) {
    if (what()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return what();
}
}  // namespace

TEST(Backoff, GrowsByTheMultiplierUpToTheMaximum) {
  ReconnectOptions r;
  r.initial_delay = 100ms;
  r.max_delay = 1000ms;
  r.multiplier = 2.0;
  EXPECT_EQ(backoff_grow(100ms, r), 200ms);
  EXPECT_EQ(backoff_grow(800ms, r), 1000ms);
  EXPECT_EQ(backoff_grow(1000ms, r), 1000ms);
  EXPECT_EQ(backoff_grow(0ms, r), 100ms) << "never below the initial delay";
}

TEST(Backoff, JitterStretchesOrShrinksWithinItsFraction) {
  ReconnectOptions r;
  r.jitter = 0.2;
  EXPECT_EQ(backoff_delay(1000ms, r, 0.0), 800ms);
  EXPECT_EQ(backoff_delay(1000ms, r, 0.5), 1000ms);
  EXPECT_LE(backoff_delay(1000ms, r, 0.999999), 1200ms);
  EXPECT_GE(backoff_delay(1000ms, r, 0.999999), 1199ms);
  r.jitter = 0.0;
  EXPECT_EQ(backoff_delay(1000ms, r, 0.7), 1000ms);
}

TEST(Backoff, NonsenseOptionsAreRefused) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto with = [](auto change) {
    ReconnectOptions r;
    change(r);
    return detail::validate(r).code();
  };
  EXPECT_EQ(with([](ReconnectOptions&) {}), StatusCode::ok);
  EXPECT_EQ(with([&](ReconnectOptions& r) { r.multiplier = nan; }), StatusCode::invalid_argument);
  EXPECT_EQ(with([&](ReconnectOptions& r) { r.jitter = nan; }), StatusCode::invalid_argument);
  EXPECT_EQ(with([](ReconnectOptions& r) { r.multiplier = 0.5; }), StatusCode::invalid_argument);
  EXPECT_EQ(with([](ReconnectOptions& r) { r.jitter = 1.0; }), StatusCode::invalid_argument);
  EXPECT_EQ(with([](ReconnectOptions& r) { r.initial_delay = 0ms; }), StatusCode::invalid_argument);
  EXPECT_EQ(with([](ReconnectOptions& r) { r.max_delay = r.initial_delay - 1ms; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(with([&](ReconnectOptions& r) {
              r.enabled = false;
              r.multiplier = nan;
            }),
            StatusCode::ok)
      << "options of a disabled reconnect are never used";
}

TEST(Outbox, WakesOnlyWhenItGoesFromEmptyToNonEmpty) {
  int wakes = 0;
  detail::Outbox<int> box([&] { ++wakes; });
  box.push(1);
  box.push(2);
  EXPECT_EQ(wakes, 1);
  std::vector<int> batch;
  box.take(batch);
  EXPECT_EQ(batch, (std::vector<int>{1, 2}));
  box.push(3);
  EXPECT_EQ(wakes, 2);
  box.take(batch);
  EXPECT_EQ(batch, (std::vector<int>{1, 2, 3})) << "take appends to what the caller still holds";
}

TEST(Outbox, AQuietPushTellsWhoOwesTheWakeUpAndWakesNobody) {
  int wakes = 0;
  detail::Outbox<std::unique_ptr<int>> box([&] { ++wakes; });
  using Pushed = detail::Outbox<std::unique_ptr<int>>::Pushed;
  auto one = std::make_unique<int>(1);
  auto two = std::make_unique<int>(2);
  EXPECT_EQ(box.push_quietly(one), Pushed::first);  // the one who made it non-empty owes it
  EXPECT_EQ(box.push_quietly(two), Pushed::joined);
  EXPECT_EQ(wakes, 0);
  box.wake();  // the owed wake-up
  EXPECT_EQ(wakes, 1);
  std::vector<std::unique_ptr<int>> batch;
  box.take(batch);
  ASSERT_EQ(batch.size(), 2u);
  EXPECT_EQ(*batch[0], 1);
  EXPECT_EQ(*batch[1], 2);
  auto three = std::make_unique<int>(3);
  EXPECT_EQ(box.push_quietly(three), Pushed::first) << "empty again after the take";
  box.close();
  auto four = std::make_unique<int>(4);
  EXPECT_EQ(box.push_quietly(four), Pushed::closed);
  ASSERT_NE(four, nullptr) << "a closed outbox leaves the item with the caller";
  box.wake();
  EXPECT_EQ(wakes, 1) << "no wake-up once closed: the loop may be gone";
}

TEST(Outbox, AClosedOutboxRefusesAndLeavesTheItemWithTheCaller) {
  detail::Outbox<std::unique_ptr<int>> box([] {});
  box.push(std::make_unique<int>(1));
  auto left = box.close();
  ASSERT_EQ(left.size(), 1u);
  auto item = std::make_unique<int>(2);
  EXPECT_FALSE(box.push(item));
  ASSERT_NE(item, nullptr);
  EXPECT_EQ(*item, 2);
}

TEST(Outbox, ManyProducersLoseNothing) {
  std::atomic<int> wakes{0};
  detail::Outbox<int> box([&] { wakes.fetch_add(1); });
  std::vector<std::thread> producers;
  for (int p = 0; p < 4; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < 1000; ++i) box.push(p * 1000 + i);
    });
  }
  std::vector<int> all;
  while (all.size() < 4000) {
    std::vector<int> batch;
    box.take(batch);
    all.insert(all.end(), batch.begin(), batch.end());
  }
  for (auto& t : producers) t.join();
  std::sort(all.begin(), all.end());
  for (int i = 0; i < 4000; ++i) ASSERT_EQ(all[static_cast<std::size_t>(i)], i);
  EXPECT_GE(wakes.load(), 1);
}

TEST(ConfirmTracker, SettlesOneOrEveryOneUpToTheSequenceNumber) {
  detail::ConfirmTracker<std::string> t;
  for (std::uint64_t seq = 1; seq <= 5; ++seq) t.track(seq, "m" + std::to_string(seq));
  EXPECT_EQ(t.settle(3, false), (std::vector<std::string>{"m3"}));
  EXPECT_EQ(t.settle(4, true), (std::vector<std::string>{"m1", "m2", "m4"}));
  EXPECT_TRUE(t.settle(4, false).empty()) << "settled once";
  EXPECT_EQ(t.size(), 1u);
  EXPECT_EQ(t.settle(99, true), (std::vector<std::string>{"m5"}));
  EXPECT_TRUE(t.empty());
}

TEST(InHand, CancelsAtTheDeadlineAndWakesTheLoopForAnEarlierOne) {
  using namespace std::chrono_literals;
  int wakes = 0;
  amqprpc::detail::InHand in_hand([&] { ++wakes; });
  const auto t0 = amqprpc::detail::InHand::Clock::now();
  std::stop_source late_source, early_source, no_deadline_source;
  auto late = in_hand.add(t0 + 10s, late_source);
  EXPECT_EQ(wakes, 1) << "the first deadline is the earliest";
  auto early = in_hand.add(t0 + 1s, early_source);
  EXPECT_EQ(wakes, 2) << "an earlier deadline wakes the loop";
  auto none = in_hand.add(std::nullopt, no_deadline_source);
  EXPECT_EQ(wakes, 2);
  EXPECT_EQ(in_hand.next_deadline(), t0 + 1s);

  in_hand.cancel_expired(t0 + 2s);
  EXPECT_TRUE(early_source.stop_requested());
  EXPECT_FALSE(late_source.stop_requested());
  EXPECT_EQ(in_hand.next_deadline(), t0 + 10s) << "a cancelled request is not waited for";

  // The early request is still in hand (its handler ignores the cancellation): a new deadline
  // before the late one is the earliest the loop waits for, and must wake it.
  std::stop_source middle_source;
  auto middle = in_hand.add(t0 + 5s, middle_source);
  EXPECT_EQ(wakes, 3);
  EXPECT_EQ(in_hand.next_deadline(), t0 + 5s);

  in_hand.cancel_all();
  EXPECT_TRUE(late_source.stop_requested() && middle_source.stop_requested() &&
              no_deadline_source.stop_requested());
  EXPECT_EQ(in_hand.size(), 4u);
  for (auto h : {late, early, none, middle}) in_hand.remove(h);
  EXPECT_TRUE(in_hand.wait_empty(amqprpc::detail::InHand::Clock::now()));
}

namespace {

// A job that waits until it is let go, and what the pool's threads did with such jobs.
struct Jobs {
  std::mutex mutex;
  std::condition_variable changed;
  std::set<int> open;     // jobs let go
  std::vector<int> done;  // in the order they ended
  std::vector<std::thread::id> ran_on;
  int running = 0, most_at_once = 0;

  void run(int job) {
    std::unique_lock lock(mutex);
    most_at_once = std::max(most_at_once, ++running);
    changed.notify_all();
    changed.wait_for(lock, 30s, [&] { return open.count(job) != 0; });
    --running;
    done.push_back(job);
    ran_on.push_back(std::this_thread::get_id());
    changed.notify_all();
  }
  void let_go(int job) {
    std::lock_guard lock(mutex);
    open.insert(job);
    changed.notify_all();
  }
  bool wait_for(const std::function<bool()>& what) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, 30s, what);
  }
};

}  // namespace

TEST(WorkerPool, AJobRunHereHoldsASlotAndTheJobsQueuedBehindItRunThereToo) {
  Jobs jobs;
  detail::WorkerPool<int> pool(1, [&](int& j) { jobs.run(j); });
  std::vector<int> first{1};
  ASSERT_TRUE(pool.submit_all(first));
  ASSERT_TRUE(jobs.wait_for([&] { return jobs.running == 1; }));  // on the worker
  std::vector<int> more{2, 3};
  ASSERT_TRUE(pool.submit_all(more, /*one_is_mine=*/true));
  EXPECT_FALSE(pool.take_here()) << "the one slot is the worker's";
  jobs.let_go(1);
  jobs.let_go(2);
  jobs.let_go(3);
  ASSERT_TRUE(jobs.wait_for([&] { return jobs.done.size() == 3; }));
  EXPECT_EQ(jobs.most_at_once, 1);

  // Now the slot is free: this thread takes the next job, and the one queued behind it.
  std::vector<int> pair{4, 5};
  jobs.let_go(4);
  jobs.let_go(5);
  ASSERT_TRUE(pool.submit_all(pair, /*one_is_mine=*/true));
  auto here = pool.take_here();
  if (here) here();  // (the worker may have been awake, and taken some first)
  ASSERT_TRUE(jobs.wait_for([&] { return jobs.done.size() == 5; }));
  EXPECT_EQ(jobs.most_at_once, 1);
  EXPECT_EQ(jobs.done, (std::vector<int>{1, 2, 3, 4, 5}));
  pool.stop();
}

TEST(WorkerPool, AWorkerStandsInWhileAJobRunHereTakesLongAndHandsBackWhenItEnds) {
  Jobs jobs;
  std::atomic<int> rescues{0};
  std::atomic<bool> rescuing{false}, ended{false};
  std::atomic<bool> here_done{false};
  detail::WorkerPool<int> pool(
      1, [&](int& j) { jobs.run(j); },
      [&] {
        // Stands in until the job run here ends (the owner's thread is back), or the stop.
        rescues.fetch_add(1);
        rescuing = true;
        while (!here_done.load() && !ended.load()) std::this_thread::sleep_for(1ms);
        rescuing = false;
      },
      [&] { ended = true; });
  std::vector<int> one{1};
  ASSERT_TRUE(pool.submit_all(one, /*one_is_mine=*/true));
  auto here = pool.take_here();
  ASSERT_TRUE(here);
  std::thread owner([&] {
    here();
    here_done = true;
  });
  EXPECT_TRUE(testing_eventually([&] { return rescuing.load(); }))
      << "no worker stood in for a job that runs long on the owner's thread";
  jobs.let_go(1);
  owner.join();
  EXPECT_TRUE(testing_eventually([&] { return !rescuing.load(); }));
  EXPECT_EQ(rescues.load(), 1);
  EXPECT_FALSE(ended.load());

  // A job here that outlives the stop's grace: it is left behind, and the stand-in ends.
  std::vector<int> two{2};
  ASSERT_TRUE(pool.submit_all(two, /*one_is_mine=*/true));
  here = pool.take_here();
  ASSERT_TRUE(here);
  here_done = false;
  std::thread stuck([&] { here(); });
  ASSERT_TRUE(testing_eventually([&] { return rescuing.load(); }));
  auto stopped = pool.stop(std::chrono::steady_clock::now() + 50ms);
  EXPECT_EQ(stopped.left_behind, 1u);
  EXPECT_TRUE(ended.load());
  EXPECT_FALSE(rescuing.load()) << "stop returned while a worker still stood in";
  jobs.let_go(2);
  stuck.join();
}
