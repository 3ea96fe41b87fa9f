#include "client/call_table.hpp"

#include <gtest/gtest.h>

#include <algorithm>

using namespace amqprpc;
using detail::CallTable;
using detail::Clock;
using detail::PendingCall;

namespace {

std::unique_ptr<PendingCall> call(const std::string& id, Clock::time_point deadline) {
  auto c = std::make_unique<PendingCall>();
  c->correlation_id = id;
  c->deadline = deadline;
  return c;
}

const Clock::time_point t0 = Clock::now();

}  // namespace

TEST(CallTable, FindsAndTakesCallsByCorrelationId) {
  CallTable table;
  table.accept(call("a", t0 + std::chrono::seconds(1)));
  table.accept(call("b", t0 + std::chrono::seconds(2)));
  ASSERT_NE(table.find("a"), nullptr);
  EXPECT_EQ(table.find("zzz"), nullptr);
  auto a = table.take("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->correlation_id, "a");
  EXPECT_EQ(table.take("a"), nullptr) << "a call is taken once";
  EXPECT_EQ(table.size(), 1u);
}

TEST(CallTable, ExpiresCallsInDeadlineOrderAndOnlyOnceDue) {
  CallTable table;
  table.accept(call("late", t0 + std::chrono::seconds(3)));
  table.accept(call("early", t0 + std::chrono::seconds(1)));
  table.accept(call("middle", t0 + std::chrono::seconds(2)));
  EXPECT_EQ(table.next_deadline(), t0 + std::chrono::seconds(1));
  EXPECT_EQ(table.take_expired(t0), nullptr);
  std::vector<std::string> order;
  while (auto c = table.take_expired(t0 + std::chrono::seconds(2)))
    order.push_back(c->correlation_id);
  EXPECT_EQ(order, (std::vector<std::string>{"early", "middle"}));
  EXPECT_EQ(table.next_deadline(), t0 + std::chrono::seconds(3));
}

TEST(CallTable, AnsweredCallsLeaveTheDeadlineOrderAtOnce) {
  CallTable table;
  table.accept(call("a", t0 + std::chrono::seconds(1)));
  table.accept(call("b", t0 + std::chrono::seconds(2)));
  table.take("a");
  EXPECT_EQ(table.next_deadline(), t0 + std::chrono::seconds(2));
  table.take("b");
  EXPECT_FALSE(table.next_deadline().has_value());
}

TEST(CallTable, HeldCallsComeBackInTheOrderTheyWereHeldSkippingFinishedOnes) {
  CallTable table;
  for (std::string id : {"1", "2", "3"}) {
    table.hold(table.accept(call(id, t0 + std::chrono::seconds(5))));
  }
  table.take("2");  // answered or cancelled while held
  auto held = table.take_held();
  ASSERT_EQ(held.size(), 2u);
  EXPECT_EQ(held[0]->correlation_id, "1");
  EXPECT_EQ(held[1]->correlation_id, "3");
  EXPECT_FALSE(held[0]->sent);
  EXPECT_TRUE(table.take_held().empty()) << "taking the held calls empties the list";
  EXPECT_EQ(table.size(), 2u) << "held calls stay in the table";
}

TEST(CallTable, AnsweredIdsAreRememberedSoASecondReplyIsADuplicate) {
  CallTable table;
  table.accept(call("x", t0 + std::chrono::seconds(1)));
  EXPECT_FALSE(table.answered_recently("x"));
  table.take_answered("x");
  EXPECT_TRUE(table.answered_recently("x"));
  EXPECT_FALSE(table.answered_recently("never-seen"));
}

TEST(CallTable, ACallThatEndedWithoutAReplyIsNotAnswered) {
  CallTable table;
  table.accept(call("timed-out", t0));
  table.accept(call("cancelled", t0 + std::chrono::seconds(1)));
  table.accept(call("lost", t0 + std::chrono::seconds(1)));
  ASSERT_NE(table.take_expired(t0), nullptr);
  ASSERT_NE(table.take("cancelled"), nullptr);
  EXPECT_EQ(table.take_all().size(), 1u);
  EXPECT_FALSE(table.answered_recently("timed-out")) << "its reply would be late, not a duplicate";
  EXPECT_FALSE(table.answered_recently("cancelled"));
  EXPECT_FALSE(table.answered_recently("lost"));
}

TEST(CallTable, RemembersOnlyTheLastFewThousandAnsweredIds) {
  CallTable table;
  for (int i = 0; i < 5000; ++i) {
    table.accept(call(std::to_string(i), t0));
    table.take_answered(std::to_string(i));
  }
  EXPECT_FALSE(table.answered_recently("0"));
  EXPECT_TRUE(table.answered_recently("4999"));
}

TEST(CallTable, TakeUnlessKeepsWhatTheCallerKeepsAndEmptiesTheRest) {
  CallTable table;
  table.accept(call("keep", t0 + std::chrono::seconds(1)));
  table.accept(call("fail", t0 + std::chrono::seconds(2)));
  auto failed = table.take_unless([](PendingCall& c) { return c.correlation_id == "keep"; });
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]->correlation_id, "fail");
  EXPECT_NE(table.find("keep"), nullptr);
  EXPECT_EQ(table.next_deadline(), t0 + std::chrono::seconds(1));
}

TEST(CallTable, TakeAllEmptiesTableDeadlinesAndHeldList) {
  CallTable table;
  table.hold(table.accept(call("a", t0)));
  table.accept(call("b", t0));
  EXPECT_EQ(table.take_all().size(), 2u);
  EXPECT_TRUE(table.empty());
  EXPECT_FALSE(table.next_deadline().has_value());
  EXPECT_TRUE(table.take_held().empty());
}

TEST(PendingCall, CompletesAFutureOrACallbackAndSwallowsCallbackExceptions) {
  PendingCall with_future;
  auto f = with_future.done.emplace<std::promise<Reply>>().get_future();
  with_future.complete(Reply::ok("42"), {});
  EXPECT_EQ(f.get().body, "42");

  std::vector<std::string> logged;
  Logger logger = [&](LogLevel, std::string_view line) { logged.emplace_back(line); };
  PendingCall throwing;
  throwing.done = std::function<void(Reply)>([](Reply) { throw std::runtime_error("boom"); });
  EXPECT_NO_THROW(throwing.complete(Reply::ok("x"), logger));
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find("boom"), std::string::npos);

  // A call made with neither (an attempt's or a stream's own end) has no promise to break.
  PendingCall neither;
  EXPECT_TRUE(std::holds_alternative<std::monostate>(neither.done));
  EXPECT_NO_THROW(neither.complete(Reply::ok("y"), logger));
  EXPECT_EQ(logged.size(), 1u) << "nothing to tell, nothing logged";
}
