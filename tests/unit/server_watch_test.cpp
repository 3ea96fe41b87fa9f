// The client's view of which queues have servers: verdicts, who waits for which answer, when
// to ask again.
#include "client/server_watch.hpp"

#include <gtest/gtest.h>

using amqprpc::Status;
using amqprpc::StatusCode;
using amqprpc::detail::ServerWatch;
using amqprpc::detail::amqp::Probe;
using amqprpc::detail::amqp::ProbeResult;
using namespace std::chrono_literals;
using Verdict = ServerWatch::Verdict;
using Wait = ServerWatch::Wait;
using Ids = std::vector<std::string>;

namespace {

ProbeResult found(const std::string& queue, std::uint32_t consumers) {
  return ProbeResult{Probe{Probe::Kind::queue, queue}, Status{}, consumers, 0};
}
ProbeResult refused(const std::string& queue, StatusCode code) {
  return ProbeResult{Probe{Probe::Kind::queue, queue}, Status{code, "refused"}, 0, 0};
}

}  // namespace

TEST(ServerWatch, TheFirstCallsWaitForTheFirstAnswerAndAreHandedBack) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  EXPECT_EQ(w.check("q", t0), Verdict::unknown);
  w.wait("q", "id-1", Wait::answer, t0);
  w.wait("q", "id-2", Wait::answer, t0);
  ASSERT_EQ(w.due(t0), Ids{"q"});
  EXPECT_TRUE(w.due(t0).empty()) << "asked once until answered";
  EXPECT_FALSE(w.next_due().has_value()) << "nothing due while the only question is out";
  EXPECT_EQ(w.answer(found("q", 2), t0 + 1ms), (Ids{"id-1", "id-2"}));
  EXPECT_EQ(w.check("q", t0 + 2ms), Verdict::send);
  EXPECT_EQ(w.consumers("q"), 2u);
}

TEST(ServerWatch, VerdictsFollowTheAnswers) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  for (const char* q : {"none", "missing", "locked", "denied"}) w.check(q, t0);
  ASSERT_EQ(w.due(t0).size(), 4u);
  w.answer(found("none", 0), t0);
  w.answer(refused("missing", StatusCode::not_found), t0);
  w.answer(refused("locked", StatusCode::failed_precondition), t0);
  w.answer(refused("denied", StatusCode::permission_denied), t0);
  EXPECT_EQ(w.check("none", t0), Verdict::no_server);
  EXPECT_EQ(w.check("missing", t0), Verdict::no_queue);
  // What the broker will not describe is called blind, as without the watch.
  EXPECT_EQ(w.check("locked", t0), Verdict::send);
  EXPECT_EQ(w.check("denied", t0), Verdict::send);
}

TEST(ServerWatch, OnlyAnAnswerAskedAfterACallBeganToWaitSettlesIt) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  w.check("q", t0);
  ASSERT_EQ(w.due(t0), Ids{"q"});               // asked at t0
  w.wait("q", "late", Wait::answer, t0 + 1ms);  // began to wait after the question went out
  EXPECT_TRUE(w.answer(found("q", 0), t0 + 2ms).empty()) << "an older question says nothing";
  // Asked again at once for it, and settled by that answer.
  EXPECT_EQ(w.next_due(), ServerWatch::Clock::time_point{});
  ASSERT_EQ(w.due(t0 + 3ms), Ids{"q"});
  EXPECT_EQ(w.answer(found("q", 1), t0 + 4ms), Ids{"late"});
}

TEST(ServerWatch, CallsWaitingForTheQueueToAppearAreHandedBackEachAnswerAtTheEagerPace) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  w.check("q", t0);
  w.due(t0);
  w.answer(refused("q", StatusCode::not_found), t0);
  w.wait("q", "patient", Wait::appear, t0);
  EXPECT_EQ(w.next_due(), t0 + 250ms);
  EXPECT_TRUE(w.due(t0 + 100ms).empty());
  ASSERT_EQ(w.due(t0 + 250ms), Ids{"q"});
  EXPECT_EQ(w.answer(refused("q", StatusCode::not_found), t0 + 251ms), Ids{"patient"});
}

TEST(ServerWatch, QueuesInUseAreAskedAgainFasterWhileNobodyServesThem) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  w.check("served", t0);
  w.check("idle", t0);
  w.due(t0);
  w.answer(found("served", 1), t0);
  w.answer(found("idle", 0), t0);
  EXPECT_EQ(w.next_due(), t0 + 250ms);
  EXPECT_EQ(w.due(t0 + 250ms), Ids{"idle"});
  w.answer(found("idle", 1), t0 + 500ms);  // a server came: back to the normal pace
  EXPECT_EQ(w.due(t0 + 1s), Ids{"served"});
}

TEST(ServerWatch, AQueueNoLongerCalledIsForgotten) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  w.check("q", t0);
  w.due(t0);
  w.answer(found("q", 1), t0);
  EXPECT_EQ(w.size(), 1u);
  w.due(t0 + 31s);
  EXPECT_EQ(w.size(), 0u);
  EXPECT_FALSE(w.next_due().has_value());
}

TEST(ServerWatch, AnswersNobodyAskedForAndResetsAreHarmless) {
  ServerWatch w(1s);
  const auto t0 = ServerWatch::Clock::now();
  EXPECT_TRUE(w.answer(found("never-asked", 1), t0).empty());
  w.check("q", t0);
  w.wait("q", "id", Wait::answer, t0);
  w.due(t0);
  w.reset();  // connection lost: the answer will not come
  EXPECT_EQ(w.size(), 0u);
  EXPECT_TRUE(w.answer(found("q", 1), t0).empty());
  EXPECT_EQ(w.check("q", t0), Verdict::unknown);
}
