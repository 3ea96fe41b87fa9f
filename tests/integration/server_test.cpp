// A server you can run in production: deadlines, limits, poison messages, graceful shutdown,
// several queues, each against the real broker (and real processes where one must die).
#include "amqprpc/server.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "amqprpc/client.hpp"
#include "support/broker.hpp"
#include "support/process.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;
using testbroker::Process;

namespace {

std::unique_ptr<Client> client() {
  return testbroker::connect();
}

ServerOptions server_options(const std::string& queue) {
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = queue;
  return o;
}

std::unique_ptr<Server> start(ServerOptions o, Handler h) {
  auto s = Server::start(std::move(o), std::move(h));
  if (!s) throw std::runtime_error(s.status().to_string());
  return std::move(*s);
}

Reply echo(const Request& r) {
  return Reply::ok(r.body);
}

std::vector<std::string> test_server(const std::string& queue, std::vector<std::string> extra) {
  std::vector<std::string> args{AMQPRPC_TEST_SERVER, "--queue", queue};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

int served_by(const Process& p) {
  auto pos = p.output().find("served ");
  return pos == std::string::npos ? -1 : std::atoi(p.output().c_str() + pos + 7);
}

class ServerTest : public testing::Test {
 protected:
  void TearDown() override {
    try {
      testbroker::Raw raw;
      raw.remove(queue);
      raw.remove(queue + ".dead-letter");
    } catch (...) {
    }
  }
  std::string queue = testbroker::unique("srv");
};

}  // namespace

TEST_F(ServerTest, RequestsPastTheirDeadlineAreAckedWithoutRunningTheHandler) {
  std::atomic<int> ran{0};
  auto server = start(server_options(queue), [&](const Request& r) {
    ran++;
    return Reply::ok(r.body);
  });
  testbroker::Raw raw;
  std::string replies = testbroker::unique("replies");
  raw.declare(replies);
  auto past = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch() - 1s)
                  .count();
  raw.publish(queue, "too late", replies, "c1", {{"x-rpc-deadline", std::to_string(past)}});
  ASSERT_TRUE(eventually([&] { return server->stats().expired == 1; }));
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(raw.depth(queue), 0u) << "expired requests are acked, not left behind";
  EXPECT_EQ(raw.depth(replies), 0u) << "nobody waits for an expired request's reply";
  raw.remove(replies);
}

TEST_F(ServerTest, ABacklogBehindASlowHandlerExpiresInsteadOfBeingComputed) {
  std::atomic<int> ran{0};
  auto o = server_options(queue);
  o.workers = 1;
  auto server = start(o, [&](const Request& r) {
    ran++;
    std::this_thread::sleep_for(300ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  CallOptions co;
  co.timeout = 150ms;
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(c->async_call(queue, "x", co));
  for (auto& f : calls) EXPECT_EQ(f.get().status.code(), StatusCode::deadline_exceeded);
  ASSERT_TRUE(eventually([&] { return server->stats().expired >= 4; }));
  EXPECT_LE(ran, 2) << "only the request already running when the deadline passed may run";
}

TEST_F(ServerTest, OversizedRequestsGetAClearErrorAndServingGoesOn) {
  auto o = server_options(queue);
  o.max_request_size = 1000;
  std::atomic<int> ran{0};
  auto server = start(o, [&](const Request& r) {
    ran++;
    return Reply::ok(r.body);
  });
  auto c = client();
  Reply r = c->try_call(queue, std::string(2000, 'x'));
  EXPECT_EQ(r.status.code(), StatusCode::resource_exhausted);
  EXPECT_NE(r.status.message().find("at most 1000"), std::string::npos) << r.status.message();
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(c->call(queue, std::string(1000, 'y')), std::string(1000, 'y'));
  EXPECT_EQ(server->stats().oversized, 1u);
}

TEST_F(ServerTest, AReplyQueueThatNoLongerExistsLosesOnlyThatReply) {
  auto server = start(server_options(queue), echo);
  testbroker::Raw raw;
  raw.publish(queue, "answer into the void", "no-such-queue-" + queue, "c1");
  ASSERT_TRUE(eventually([&] { return server->stats().replied_ok == 1; }));
  EXPECT_EQ(raw.depth(queue), 0u) << "the request is acked, not redelivered forever";
  EXPECT_EQ(client()->call(queue, "next"), "next");
}

TEST_F(ServerTest, OneServerServesSeveralQueues) {
  std::string other = queue + "-b";
  auto o = server_options("");
  std::vector<Service> services{Service(queue), Service(other)};
  services[0].default_handler([](const Request& r) { return Reply::ok("A:" + r.body); });
  services[1].default_handler([](const Request& r) { return Reply::ok(r.queue + ":" + r.body); });
  auto s = Server::start(o, std::move(services));
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto c = client();
  EXPECT_EQ(c->call(queue, "1"), "A:1");
  EXPECT_EQ(c->call(other, "2"), other + ":2");
  (*s)->stop();
  testbroker::Raw().remove(other);
}

TEST_F(ServerTest, HeadersReachTheHandler) {
  auto server = start(server_options(queue), [](const Request& r) {
    return Reply::ok(r.headers.count("tenant") ? r.headers.at("tenant") : "none");
  });
  CallOptions o;
  o.headers["tenant"] = "acme";
  EXPECT_EQ(client()->call(queue, "x", o), "acme");
}

TEST_F(ServerTest, APoisonRequestIsDeadLetteredAfterMaxAttemptsInsteadOfCrashingServersForever) {
  testbroker::Raw().declare(queue);  // so the request waits for the first server
  auto c = client();
  CallOptions co;
  co.timeout = 60s;
  co.wait_for_ready = true;  // no server yet: it waits in the queue for one
  auto poison = c->async_call(queue, "poison", co);
  int crashes = 0;
  for (int round = 0; round < 6; ++round) {
    // No waiting for "ready": the poison may reach the new server, and crash it, before it
    // has printed anything.
    Process server(test_server(queue, {"--crash-on", "poison", "--max-attempts", "3"}));
    int status = -1;
    for (int i = 0; i < 1200 && status == -1; ++i) {  // up to 60 s: it answers or it crashes
      if (poison.wait_for(0s) == std::future_status::ready) break;
      status = server.wait_exit(50ms);
    }
    if (poison.wait_for(0s) == std::future_status::ready) break;
    ASSERT_NE(status, -1) << "the server neither answered nor crashed";
    ASSERT_TRUE(WIFSIGNALED(status)) << server.output();
    crashes++;
  }
  ASSERT_EQ(poison.wait_for(0s), std::future_status::ready);
  Reply r = poison.get();
  EXPECT_EQ(r.status.code(), StatusCode::internal);
  EXPECT_NE(r.status.message().find("dead-letter"), std::string::npos) << r.status.message();
  EXPECT_EQ(crashes, 3) << "max_attempts = 3: three deliveries crash, the fourth dead-letters";

  testbroker::Raw raw;
  auto dead = raw.get(queue + ".dead-letter");
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(dead->body, "poison");
  EXPECT_EQ(dead->headers["x-rpc-attempts"], "4");
  EXPECT_NE(dead->headers["x-rpc-dead-reason"].find("crashed"), std::string::npos);
  EXPECT_EQ(raw.depth(queue), 0u);

  Process healthy(test_server(queue, {}));
  ASSERT_TRUE(healthy.wait_for_output("ready", 60s));
  EXPECT_EQ(c->call(queue, "fine"), "fine");
}

TEST_F(ServerTest, SigtermMidStreamAnswersEveryCallExactlyOnce) {
  Process a(
      test_server(queue, {"--name", "a", "--delay-ms", "10", "--workers", "2", "--prefetch", "8"}));
  Process b(
      test_server(queue, {"--name", "b", "--delay-ms", "10", "--workers", "2", "--prefetch", "8"}));
  ASSERT_TRUE(a.wait_for_output("ready", 60s));
  ASSERT_TRUE(b.wait_for_output("ready", 60s));
  auto c = client();
  constexpr int kCalls = 200;
  CallOptions co;
  co.timeout = 60s;
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < kCalls; ++i)
    calls.push_back(c->async_call(queue, "call-" + std::to_string(i), co));
  ASSERT_TRUE(eventually([&] { return c->stats().replies >= 40; }, 20s));
  a.signal(SIGTERM);
  int by_a = 0, by_b = 0;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_EQ(calls[i].wait_for(30s), std::future_status::ready) << "call " << i << " hung";
    Reply r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << "call " << i << ": " << r.status.to_string();
    EXPECT_EQ(r.body, "call-" + std::to_string(i));
    (r.headers["x-served-by"] == "a" ? by_a : by_b)++;
  }
  int status = a.wait_exit(60s);
  ASSERT_NE(status, -1) << "server a did not stop after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << a.output();
  EXPECT_GT(by_a, 0);
  EXPECT_GT(by_b, 0);
  // Exactly once: no call got a second (late) reply, and the servers ran the handler 200 times.
  std::this_thread::sleep_for(300ms);  // let any duplicate reply arrive before counting
  EXPECT_EQ(c->stats().late_replies, 0u);
  EXPECT_EQ(c->stats().replies, static_cast<std::uint64_t>(kCalls));
  b.signal(SIGTERM);
  ASSERT_NE(b.wait_exit(60s), -1);
  EXPECT_EQ(served_by(a) + served_by(b), kCalls) << a.output() << " / " << b.output();
  EXPECT_EQ(served_by(a), by_a);
}

TEST_F(ServerTest, StopFinishesWorkInHandAndHandsBackWhatWasNotStarted) {
  auto o = server_options(queue);
  o.workers = 1;
  o.prefetch = 20;
  std::atomic<int> a_ran{0};
  auto a = start(o, [&](const Request& r) {
    a_ran++;
    std::this_thread::sleep_for(100ms);
    return Reply::ok("a:" + r.body);
  });
  auto c = client();
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 10; ++i) calls.push_back(c->async_call(queue, std::to_string(i)));
  ASSERT_TRUE(eventually([&] { return a_ran >= 1; }));
  // All ten delivered to a (prefetch 20) before it stops, not some still on their way to it.
  ASSERT_TRUE(eventually([&] { return a->stats().received == 10; })) << a->stats().received;
  a->stop();  // one running, the rest waiting in a's pool
  EXPECT_GE(a->stats().requeued, 5u);
  auto b = start(server_options(queue), [](const Request& r) { return Reply::ok("b:" + r.body); });
  int from_a = 0;
  for (int i = 0; i < 10; ++i) {
    Reply r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_EQ(r.body.substr(2), std::to_string(i));
    if (r.body[0] == 'a') from_a++;
  }
  EXPECT_EQ(from_a, a_ran.load()) << "every request a started, a answered";
  EXPECT_EQ(c->stats().late_replies, 0u);
}

TEST_F(ServerTest, ASlowHandlerDoesNotBlockTheConnectionOrOtherRequests) {
  auto o = server_options(queue);
  o.workers = 2;
  auto server = start(o, [](const Request& r) {
    if (r.body == "slow") std::this_thread::sleep_for(1500ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  auto slow = c->async_call(queue, "slow");
  ASSERT_TRUE(eventually([&] { return server->stats().received >= 1; }));
  auto start_fast = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(c->call(queue, "fast"), "fast");
  EXPECT_LT(std::chrono::steady_clock::now() - start_fast, 1400ms)
      << "fast calls waited for the slow handler";
  EXPECT_EQ(slow.wait_for(0s), std::future_status::timeout) << "the slow one is still running";
  EXPECT_EQ(slow.get().body, "slow");
}

TEST_F(ServerTest, WithConfirmsARequestTheBrokerRefusesFailsAtOnce) {
  testbroker::Raw raw;
  raw.declare_with(queue, {{"x-max-length", 1}}, {{"x-overflow", "reject-publish"}});
  ClientOptions o;
  o.connection = testbroker::options();
  o.confirm_requests = true;
  auto c = Client::connect(o);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  CallOptions co;
  co.timeout = 20s;
  co.wait_for_ready = true;  // nobody consumes: sent all the same
  auto first = (*c)->async_call(queue, "fills the queue", co);
  auto start = std::chrono::steady_clock::now();
  Reply second = (*c)->try_call(queue, "refused", co);
  EXPECT_EQ(second.status.code(), StatusCode::unavailable);
  EXPECT_NE(second.status.message().find("nack"), std::string::npos) << second.status.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s) << "must not wait for its deadline";
  EXPECT_EQ(first.wait_for(0s), std::future_status::timeout) << "the first one still waits";
}

TEST_F(ServerTest, WithReplyConfirmsRequestsAreAckedOnceTheirRepliesAreConfirmed) {
  auto o = server_options(queue);
  o.confirm_replies = true;
  auto server = start(o, echo);
  auto c = client();
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 50; ++i) calls.push_back(c->async_call(queue, std::to_string(i)));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(calls[i].get().body, std::to_string(i));
  testbroker::Raw raw;
  EXPECT_TRUE(eventually([&] { return raw.depth(queue) == 0; })) << "every request acked";
  server.reset();
  EXPECT_EQ(raw.depth(queue), 0u) << "nothing came back unacked when the server closed";
}

TEST_F(ServerTest, AQuorumRequestQueueWorksLikeAClassicOne) {
  auto o = server_options(queue);
  o.queue_type = QueueType::quorum;
  auto server = start(o, echo);
  EXPECT_EQ(client()->call(queue, "replicated"), "replicated");
  // A classic declaration of the same name is refused: the queue really is a quorum queue.
  auto classic = Server::start(server_options(queue), echo);
  ASSERT_FALSE(classic.ok());
  EXPECT_EQ(classic.status().code(), StatusCode::failed_precondition)
      << classic.status().to_string();
}

TEST_F(ServerTest, AServerMayBeDestroyedFromItsOwnHandler) {
  std::unique_ptr<Server> server;
  std::atomic<bool> destroyed{false};
  server = start(server_options(queue), [&](const Request&) {
    server.reset();  // the teardown finishes on another thread, after this handler returns
    destroyed = true;
    return Reply::ok("bye");
  });
  auto c = client();
  Reply r = c->try_call(queue, "x", [] {
    CallOptions o;
    o.timeout = 10s;
    return o;
  }());
  EXPECT_TRUE(destroyed);
  EXPECT_EQ(r.body, "bye") << r.status.to_string()
                           << ": the reply of the last request still goes out";
}
