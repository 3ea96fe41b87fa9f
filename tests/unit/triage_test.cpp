#include "server/triage.hpp"

#include <gtest/gtest.h>

#include "protocol/wire.hpp"

using namespace amqprpc::detail;

namespace {

constexpr std::int64_t kNow = 1'700'000'000'000;

amqp::Delivery request(std::string body = "10") {
  amqp::Delivery d;
  d.props.reply_to = "amq.rabbitmq.reply-to.abc";
  d.props.correlation_id = "c";
  d.body = std::move(body);
  return d;
}

TriagePolicy classic() {
  return {5, false, 100};
}
TriagePolicy quorum() {
  return {5, true, 100};
}

}  // namespace

TEST(Triage, AnOrdinaryRequestIsServedAsItsFirstAttempt) {
  Triage t = triage(request(), classic(), kNow);
  EXPECT_EQ(t.verdict, Verdict::serve);
  EXPECT_EQ(t.attempt, 1);
}

TEST(Triage, NoReplyToIsRejectedWhateverElseItCarries) {
  amqp::Delivery d = request(std::string(1000, 'x'));
  d.props.reply_to.clear();
  d.redelivered = true;
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::reject);
}

TEST(Triage, APassedDeadlineIsExpiredAndAFutureOneIsServed) {
  amqp::Delivery d = request();
  d.props.headers["x-rpc-deadline"] = std::to_string(kNow - 1);
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::expired);
  d.props.headers["x-rpc-deadline"] = std::to_string(kNow + 1000);
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
  d.props.headers["x-rpc-deadline"] = "not a number";
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
}

TEST(Triage, ABodyOverTheLimitIsOversized) {
  EXPECT_EQ(triage(request(std::string(101, 'x')), classic(), kNow).verdict, Verdict::oversized);
  EXPECT_EQ(triage(request(std::string(100, 'x')), classic(), kNow).verdict, Verdict::serve);
}

TEST(Triage, ARedeliveryOnAClassicQueueIsRecountedWithItsAttempt) {
  amqp::Delivery d = request();
  d.redelivered = true;
  Triage t = triage(d, classic(), kNow);
  EXPECT_EQ(t.verdict, Verdict::recount);
  EXPECT_EQ(t.attempt, 2);
  d.props.headers["x-rpc-attempts"] = "3";
  EXPECT_EQ(triage(d, classic(), kNow).attempt, 4);
}

TEST(Triage, AnExpiredRedeliveryIsNotRecounted) {
  amqp::Delivery d = request();
  d.redelivered = true;
  d.props.headers["x-rpc-deadline"] = std::to_string(kNow - 1);
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::expired);
}

TEST(Triage, PastMaxAttemptsIsDeadLettered) {
  amqp::Delivery d = request();
  d.redelivered = true;
  d.props.headers["x-rpc-attempts"] = "5";
  Triage t = triage(d, classic(), kNow);
  EXPECT_EQ(t.verdict, Verdict::dead_letter);
  EXPECT_EQ(t.attempt, 6);
}

TEST(Triage, AQuorumQueueCountsDeliveriesItself) {
  amqp::Delivery d = request();
  d.redelivered = true;
  d.props.headers["x-delivery-count"] = "2";
  Triage t = triage(d, quorum(), kNow);
  EXPECT_EQ(t.verdict, Verdict::serve) << "no recount: the broker keeps the count";
  EXPECT_EQ(t.attempt, 3);
  d.props.headers["x-delivery-count"] = "5";
  EXPECT_EQ(triage(d, quorum(), kNow).verdict, Verdict::dead_letter);
}

TEST(Triage, ADeliveryCountOnAClassicQueueIsNotTrusted) {
  amqp::Delivery d = request();
  d.props.headers["x-delivery-count"] = "99";
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
}

TEST(Triage, WithoutPoisonAccountingRedeliveriesAreServed) {
  amqp::Delivery d = request();
  d.redelivered = true;
  d.props.headers["x-rpc-attempts"] = "100";
  TriagePolicy off = classic();
  off.max_attempts = 0;
  Triage t = triage(d, off, kNow);
  EXPECT_EQ(t.verdict, Verdict::serve);
  EXPECT_EQ(t.attempt, 1);
}
