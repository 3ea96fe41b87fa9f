// Fail fast when nobody serves: the client's view of which queues have servers (a consumer
// count asked on a side channel, refreshed in the background) against the real broker.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

Reply echo(const Request& req) {
  return Reply::ok(req.body);
}

std::unique_ptr<Server> serve(const std::string& queue) {
  Service service(queue);
  service.default_handler(echo);
  return testbroker::serve(std::move(service));
}

CallOptions within(std::chrono::milliseconds t, bool wait_for_ready = false) {
  CallOptions o;
  o.timeout = t;
  o.wait_for_ready = wait_for_ready;
  return o;
}

class Availability : public testbroker::OwnQueue {
 protected:
  Availability() : OwnQueue("avail") {}
};

}  // namespace

TEST_F(Availability, ACallToAQueueNobodyConsumesFailsFastAndIsNotSent) {
  testbroker::Raw raw;
  raw.declare(queue);
  auto c = testbroker::connect();
  // A deadline far off: only the client's knowledge can end the call before it.
  Reply r = c->try_call(queue, "anyone?", within(60s));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable) << r.status.to_string();
  EXPECT_NE(r.status.message().find("no server is consuming queue '" + queue + "'"),
            std::string::npos)
      << r.status.message();
  EXPECT_EQ(c->stats().no_server, 1u);
  // Again, from the cached count: every call fails, none is left in the queue.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(c->try_call(queue, "again", within(60s)).status.code(), StatusCode::unavailable);
  }
  EXPECT_EQ(c->stats().no_server, 21u);
  EXPECT_EQ(raw.depth(queue), 0u);
  EXPECT_EQ(c->stats().timeouts, 0u);
}

TEST_F(Availability, AMissingQueueFailsFastAndProbingItLeavesTheConnectionAlone) {
  auto server = serve(queue);
  auto c = testbroker::connect();
  const std::string missing = queue + "-missing";
  // The broker answers a question about a missing queue by closing the channel it came on:
  // interleaved with calls that must go on working on the main channel.
  std::vector<std::future<Reply>> served, refused;
  for (int i = 0; i < 50; ++i) {
    served.push_back(c->async_call(queue, std::to_string(i), within(30s)));
    refused.push_back(c->async_call(missing + std::to_string(i % 5), "x", within(30s)));
  }
  for (int i = 0; i < 50; ++i) {
    Reply ok = served[i].get();
    ASSERT_TRUE(ok.status.ok()) << ok.status.to_string();
    EXPECT_EQ(ok.body, std::to_string(i));
    Reply no = refused[i].get();
    EXPECT_EQ(no.status.code(), StatusCode::unavailable) << no.status.to_string();
    EXPECT_NE(no.status.message().find("no route to queue"), std::string::npos)
        << no.status.message();
  }
  EXPECT_EQ(c->stats().unroutable, 50u);
  EXPECT_EQ(c->stats().reconnects, 0u);
  EXPECT_EQ(c->call(queue, "still here"), "still here");
}

TEST_F(Availability, AServerThatStartsIsSeenAndOneThatStopsToo) {
  testbroker::Raw raw;
  raw.declare(queue);
  auto c = testbroker::connect();
  EXPECT_EQ(c->try_call(queue, "a", within(30s)).status.code(), StatusCode::unavailable);
  auto server = serve(queue);
  // Refreshed in the background: calls start to go through without any call waiting.
  EXPECT_TRUE(eventually([&] { return c->try_call(queue, "b", within(30s)).status.ok(); }));
  server->stop();
  // Nobody again: calls fail fast once the client has seen it (a call sent before may time out).
  EXPECT_TRUE(eventually([&] {
    return c->try_call(queue, "c", within(300ms)).status.code() == StatusCode::unavailable;
  }));
}

TEST_F(Availability, WaitForReadyWaitsInTheQueueForAServer) {
  testbroker::Raw raw;
  raw.declare(queue);
  auto c = testbroker::connect();
  auto pending = c->async_call(queue, "patient", within(60s, /*wait_for_ready=*/true));
  // Sent for a server to take: it waits in the queue.
  ASSERT_TRUE(eventually([&] { return raw.depth(queue) == 1; }));
  EXPECT_EQ(pending.wait_for(0s), std::future_status::timeout);
  auto server = serve(queue);
  Reply r = pending.get();
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "patient");
  EXPECT_EQ(c->stats().no_server, 0u);
}

TEST_F(Availability, WaitForReadyWaitsForTheQueueToAppear) {
  auto c = testbroker::connect();
  auto pending = c->async_call(queue, "early", within(60s, /*wait_for_ready=*/true));
  // The client asks again and again; the call is held, not lost.
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(pending.wait_for(0s), std::future_status::timeout);
  auto server = serve(queue);  // declares the queue
  Reply r = pending.get();
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "early");
  EXPECT_EQ(c->stats().unroutable, 0u);
}

TEST_F(Availability, WaitForReadyStillEndsAtItsDeadline) {
  auto c = testbroker::connect();
  Reply r = c->try_call(queue + "-never", "x", within(300ms, /*wait_for_ready=*/true));
  EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded) << r.status.to_string();
}

TEST_F(Availability, TurnedOffCallsGoOutBlind) {
  testbroker::Raw raw;
  raw.declare(queue);
  ClientOptions o;
  o.server_check_interval = 0ms;
  auto c = testbroker::connect(o);
  auto pending = c->async_call(queue, "blind", within(60s));
  ASSERT_TRUE(eventually([&] { return raw.depth(queue) == 1; }));
  auto server = serve(queue);
  Reply r = pending.get();
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(c->stats().no_server, 0u);
}

TEST_F(Availability, AQueueTheBrokerWillNotDescribeIsCalledBlind) {
  // Another connection's exclusive queue: the broker refuses to say anything about it (405),
  // but a message may still be published to it; the client cannot tell, so it sends.
  testbroker::Raw owner;
  owner.declare(queue, /*durable=*/false, /*exclusive=*/true);
  auto c = testbroker::connect();
  auto pending = c->async_call(queue, "to the owner", within(60s));
  std::optional<testbroker::Raw::Got> got;
  ASSERT_TRUE(eventually([&] { return (got = owner.get(queue)).has_value(); }));
  EXPECT_EQ(got->body, "to the owner");
  EXPECT_EQ(pending.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(c->stats().no_server, 0u);
}

TEST_F(Availability, OneWayCallsAreNotCheckedTheQueueKeepsThem) {
  testbroker::Raw raw;
  raw.declare(queue);
  auto c = testbroker::connect();
  ASSERT_TRUE(c->notify(queue, "later", "kept").ok());
  EXPECT_TRUE(eventually([&] { return raw.depth(queue) == 1; }));
  EXPECT_EQ(c->stats().no_server, 0u);
}

TEST_F(Availability, ANegativeIntervalIsRefused) {
  ClientOptions o;
  o.connection = testbroker::options();
  o.server_check_interval = -1ms;
  auto c = Client::connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::invalid_argument);
}
