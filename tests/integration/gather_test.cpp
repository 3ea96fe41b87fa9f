// Gather: one request, every server instance's reply (Client::gather against real servers).
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

// What a test server's handler waits on when told to hang.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool closed = false;  // handlers of the gated server wait while closed
  void close() {
    std::lock_guard lock(m);
    closed = true;
  }
  void open() {
    {
      std::lock_guard lock(m);
      closed = false;
    }
    cv.notify_all();
  }
  void pass() {
    std::unique_lock lock(m);
    cv.wait_for(lock, 30s, [&] { return !closed; });
  }
};

std::unique_ptr<Server> instance(const std::string& queue, const std::string& name,
                                 std::shared_ptr<Gate> gate = nullptr) {
  Service service(queue);
  service.method("State", [name, gate](const Request& r) {
    if (gate) gate->pass();
    return Reply::ok(name + ":" + r.body);
  });
  auto o = testbroker::server_options(2);
  o.instance = name;
  o.stop_grace = 2s;
  return testbroker::serve(std::move(service), o);
}

CallOptions within(std::chrono::milliseconds t) {
  CallOptions o;
  o.timeout = t;
  return o;
}

std::set<std::string> instances_of(const GatherResult& g) {
  std::set<std::string> out;
  for (const auto& r : g.replies) out.insert(r.instance);
  return out;
}

class Gather : public testbroker::OwnQueue {
 protected:
  Gather() : OwnQueue("gather") {}
};

}  // namespace

TEST_F(Gather, EveryInstanceAnswersOnceEachNamed) {
  auto a = instance(queue, "a"), b = instance(queue, "b"), c = instance(queue, "c");
  auto client = testbroker::connect();
  GatherResult g = client->gather(queue, "State", "ping", within(30s));
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  EXPECT_EQ(g.expected, 3u);
  EXPECT_EQ(g.missing(), 0u);
  ASSERT_EQ(g.replies.size(), 3u);
  for (const auto& r : g.replies) {
    ASSERT_TRUE(r.reply.status.ok()) << r.reply.status.to_string();
    EXPECT_EQ(r.reply.body, r.instance + ":ping");
  }
  EXPECT_EQ(instances_of(g), (std::set<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(g.silent.empty());
  EXPECT_EQ(client->stats().gathers, 1u);
  // A plain call still reaches exactly one of them.
  CallOptions o = within(30s);
  o.method = "State";
  const std::string one = client->call(queue, "x", o);
  EXPECT_TRUE(one == "a:x" || one == "b:x" || one == "c:x") << one;
}

TEST_F(Gather, HealthAndErrorsComeBackPerInstance) {
  auto a = instance(queue, "a"), b = instance(queue, "b");
  auto client = testbroker::connect();
  GatherResult health = client->gather(queue, std::string(kHealthMethod), "", within(30s));
  ASSERT_TRUE(health.status.ok()) << health.status.to_string();
  ASSERT_EQ(health.replies.size(), 2u);
  for (const auto& r : health.replies) {
    EXPECT_TRUE(r.reply.status.ok());
    EXPECT_NE(r.reply.body.find("serving"), std::string::npos) << r.reply.body;
  }
  // Each instance's error is its reply; the gather itself is complete.
  GatherResult none = client->gather(queue, "NoSuchMethod", "", within(30s));
  ASSERT_TRUE(none.status.ok()) << none.status.to_string();
  ASSERT_EQ(none.replies.size(), 2u);
  for (const auto& r : none.replies) {
    EXPECT_EQ(r.reply.status.code(), StatusCode::unimplemented) << r.reply.status.to_string();
  }
}

TEST_F(Gather, NobodyTakingPartFailsFast) {
  auto client = testbroker::connect();
  GatherResult g = client->gather(queue, "State", "", within(60s));
  EXPECT_EQ(g.status.code(), StatusCode::unavailable) << g.status.to_string();
  EXPECT_EQ(g.expected, 0u);
  // A server that does not take part is not waited for either.
  auto o = testbroker::server_options();
  o.gather = false;
  Service service(queue);
  service.method("State", [](const Request&) { return Reply::ok("x"); });
  auto loner = testbroker::serve(std::move(service), o);
  GatherResult again = client->gather(queue, "State", "", within(60s));
  EXPECT_EQ(again.status.code(), StatusCode::unavailable) << again.status.to_string();
  EXPECT_EQ(client->call(queue, "",
                         [] {
                           CallOptions c;
                           c.method = "State";
                           return c;
                         }()),
            "x");
}

TEST_F(Gather, AHungInstanceIsReportedMissingAtTheDeadlineByName) {
  auto gate = std::make_shared<Gate>();
  auto a = instance(queue, "a"), b = instance(queue, "b"), c = instance(queue, "c", gate);
  auto client = testbroker::connect();
  ASSERT_TRUE(client->gather(queue, "State", "1", within(30s)).status.ok());
  gate->close();
  GatherResult g = client->gather(queue, "State", "2", within(500ms));
  gate->open();
  EXPECT_EQ(g.status.code(), StatusCode::deadline_exceeded) << g.status.to_string();
  EXPECT_NE(g.status.message().find("2 of 3"), std::string::npos) << g.status.message();
  EXPECT_EQ(g.expected, 3u);
  EXPECT_EQ(g.missing(), 1u);
  EXPECT_EQ(instances_of(g), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(g.silent, std::vector<std::string>{"c"});
}

TEST_F(Gather, FutureAndCallbackForms) {
  auto a = instance(queue, "a"), b = instance(queue, "b");
  auto client = testbroker::connect();
  auto future = client->async_gather(queue, "State", "f", within(30s));
  std::promise<GatherResult> by_callback;
  client->async_gather(queue, "State", "cb", within(30s),
                       [&](GatherResult g) { by_callback.set_value(std::move(g)); });
  GatherResult f = future.get();
  ASSERT_TRUE(f.status.ok()) << f.status.to_string();
  EXPECT_EQ(f.replies.size(), 2u);
  GatherResult cb = by_callback.get_future().get();
  ASSERT_TRUE(cb.status.ok()) << cb.status.to_string();
  EXPECT_EQ(instances_of(cb), (std::set<std::string>{"a", "b"}));
  // The Asio form (amqprpc::async_gather) is in asio_test.cpp.
}

TEST_F(Gather, CancelEndsItAtOnceWithWhatCame) {
  auto gate = std::make_shared<Gate>();
  auto a = instance(queue, "a"), b = instance(queue, "b", gate);
  auto client = testbroker::connect();
  gate->close();
  std::stop_source stop;
  CallOptions o = within(60s);
  o.cancel = stop.get_token();
  auto pending = client->async_gather(queue, "State", "", o);
  // a answers; b hangs; the caller gives up.
  std::this_thread::sleep_for(200ms);
  stop.request_stop();
  ASSERT_EQ(pending.wait_for(30s), std::future_status::ready);
  GatherResult g = pending.get();
  gate->open();
  EXPECT_EQ(g.status.code(), StatusCode::cancelled) << g.status.to_string();
  EXPECT_LE(g.replies.size(), 1u);
}

TEST_F(Gather, BadInputIsRefusedClearly) {
  auto client = testbroker::connect();
  EXPECT_EQ(client->gather("", "State", "").status.code(), StatusCode::invalid_argument);
  EXPECT_EQ(client->gather(std::string(300, 'q'), "State", "").status.code(),
            StatusCode::invalid_argument);
  CallOptions forged;
  forged.headers["x-rpc-caller"] = "admin";
  EXPECT_EQ(client->gather(queue, "State", "", forged).status.code(), StatusCode::invalid_argument);
  EXPECT_EQ(client->gather(queue, "State", "", within(-1ms)).status.code(),
            StatusCode::invalid_argument);
}

TEST_F(Gather, ServersComingAndGoingNeverHangAGather) {
  auto client = testbroker::connect();
  auto first = instance(queue, "steady");
  std::atomic<bool> done{false};
  std::thread churn([&] {
    int n = 0;
    while (!done) {
      auto s = instance(queue, "churn-" + std::to_string(n++));
      std::this_thread::sleep_for(20ms);
      s->stop();
    }
  });
  int complete = 0;
  for (int i = 0; i < 40; ++i) {
    auto pending = client->async_gather(queue, "State", std::to_string(i), within(2s));
    ASSERT_EQ(pending.wait_for(30s), std::future_status::ready) << "gather " << i << " hung";
    GatherResult g = pending.get();
    // Complete, or short of an instance that left after it was counted: never anything else.
    EXPECT_TRUE(g.status.ok() || g.status.code() == StatusCode::deadline_exceeded ||
                g.status.code() == StatusCode::unavailable)
        << g.status.to_string();
    // One reply per instance, each from an instance that was there (an instance that joined
    // between the count and the publish may stand in for one that had not answered yet).
    EXPECT_EQ(instances_of(g).size(), g.replies.size());
    for (const auto& r : g.replies) {
      EXPECT_TRUE(r.instance == "steady" || r.instance.starts_with("churn-")) << r.instance;
      if (r.reply.status.ok()) {
        EXPECT_EQ(r.reply.body, r.instance + ":" + std::to_string(i));
      } else {  // an instance stopping answers what it will not serve so
        EXPECT_EQ(r.reply.status.code(), StatusCode::unavailable) << r.reply.status.to_string();
      }
    }
    if (g.status.ok()) {
      EXPECT_GE(g.replies.size(), g.expected);
      ++complete;
    }
  }
  done = true;
  churn.join();
  EXPECT_GT(complete, 0);
  GatherResult last = client->gather(queue, "State", "end", within(30s));
  ASSERT_TRUE(last.status.ok()) << last.status.to_string();
  EXPECT_EQ(instances_of(last), std::set<std::string>{"steady"});
}
