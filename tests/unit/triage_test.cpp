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
  return {5, false, 100, {"server"}};
}
TriagePolicy quorum() {
  return {5, true, 100, {"server"}};
}

// A copy a server published: the broker validated its user_id.
amqp::Delivery servers_copy(std::int64_t attempts) {
  amqp::Delivery d = request();
  d.props.user_id = "server";
  d.props.headers["x-rpc-attempts"] = std::to_string(attempts);
  return d;
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
  EXPECT_EQ(triage(d, classic(), kNow).deadline_ms, kNow - 1);
  d.props.headers["x-rpc-deadline"] = std::to_string(kNow + 1000);
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
  EXPECT_EQ(triage(d, classic(), kNow).deadline_ms, kNow + 1000) << "handed on with the request";
  d.props.headers["x-rpc-deadline"] = "not a number";
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
  EXPECT_EQ(triage(d, classic(), kNow).deadline_ms, std::nullopt);
  d.props.headers.erase("x-rpc-deadline");
  EXPECT_EQ(triage(d, classic(), kNow).deadline_ms, std::nullopt);
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
  amqp::Delivery copy = servers_copy(3);
  copy.redelivered = true;
  EXPECT_EQ(triage(copy, classic(), kNow).attempt, 4);
}

TEST(Triage, AnExpiredRedeliveryIsNotRecounted) {
  amqp::Delivery d = request();
  d.redelivered = true;
  d.props.headers["x-rpc-deadline"] = std::to_string(kNow - 1);
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::expired);
}

TEST(Triage, PastMaxAttemptsIsDeadLettered) {
  amqp::Delivery d = servers_copy(5);
  d.redelivered = true;
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

TEST(Triage, AttemptsAClientWroteAreNotCounted) {
  amqp::Delivery forged = request();
  forged.props.headers["x-rpc-attempts"] = "6";
  Triage t = triage(forged, classic(), kNow);
  EXPECT_EQ(t.verdict, Verdict::serve) << "a first delivery with a forged count is served";
  EXPECT_EQ(t.attempt, 1);
  forged.props.user_id = "some-client";
  EXPECT_EQ(triage(forged, classic(), kNow).attempt, 1) << "only a server's user counts";
}

TEST(Triage, AServersCopyKeepsItsCountOnAFirstDelivery) {
  Triage t = triage(servers_copy(3), classic(), kNow);
  EXPECT_EQ(t.verdict, Verdict::serve);
  EXPECT_EQ(t.attempt, 3);
}

TEST(Triage, OnAQuorumQueueAServersCopyAddsTheBrokersCount) {
  amqp::Delivery d = servers_copy(3);
  d.redelivered = true;
  d.props.headers["x-delivery-count"] = "1";
  Triage t = triage(d, quorum(), kNow);
  EXPECT_EQ(t.attempt, 4);
  EXPECT_EQ(t.verdict, Verdict::serve);
}

TEST(Triage, AOneWayCallNeedsNoReplyTo) {
  amqp::Delivery d = request();
  d.props.reply_to.clear();
  d.props.headers["x-rpc-oneway"] = "1";
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::serve);
  d.props.headers["x-rpc-oneway"] = "no";
  EXPECT_EQ(triage(d, classic(), kNow).verdict, Verdict::reject) << "only 1 or true marks it";
}

TEST(Triage, TheCallerIsTheBrokerValidatedUserId) {
  amqp::Delivery d = request();
  d.props.user_id = "alice";
  d.props.headers["x-rpc-caller"] = "root";  // a client cannot speak for someone else
  EXPECT_EQ(triage(d, classic(), kNow).caller, "alice");
  d.props.user_id.clear();
  EXPECT_EQ(triage(d, classic(), kNow).caller, "") << "no user_id: unknown";
}

TEST(Triage, AServersCopyCarriesTheOriginalCaller) {
  amqp::Delivery d = servers_copy(1);
  d.props.headers["x-rpc-caller"] = "alice";
  EXPECT_EQ(triage(d, classic(), kNow).caller, "alice");
  d.props.headers["x-rpc-caller"] = "";
  EXPECT_EQ(triage(d, classic(), kNow).caller, "") << "the original had no verified caller";
}
