// The server's side of gather (docs/PROTOCOL.md, "Gather"): every server instance of a service
// holds a consumer on the service's roster and an instance queue bound to its gather exchange,
// so one request published to that exchange reaches each instance once, and each answers it
// naming itself. Against the real broker, with raw AMQP as the client (the library's client
// side of gather is not needed to check the server's).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "amqprpc/server.hpp"
#include "fib.hpp"
#include "protocol/wire.hpp"
#include "support/broker.hpp"
#include "support/tcp_proxy.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;
namespace wire = amqprpc::detail::wire;
using Got = testbroker::Raw::Got;

namespace {

// rabbitmqctl against the suite's private node (scripts/test.sh names it); its output, or
// nullopt when there is no such node to talk to.
std::optional<std::string> ctl(const std::string& args) {
  const char* name = std::getenv("AMQPRPC_BROKER_NAME");
  const char* port = std::getenv("AMQPRPC_BROKER_PORT");
  if (name == nullptr || port == nullptr) return std::nullopt;
  std::string cmd = std::string("AMQPRPC_BROKER_NAME=") + name + " AMQPRPC_BROKER_PORT=" + port +
                    " " AMQPRPC_SOURCE_DIR "/scripts/broker.sh ctl " + args + " 2>/dev/null";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (pclose(p) != 0) return std::nullopt;
  return out;
}

class GatherServer : public testing::Test {
 protected:
  void SetUp() override { raw.declare(replies); }

  void TearDown() override {
    servers.clear();  // stopped before their queues go
    try {
      testbroker::Raw cleanup;
      for (const std::string& q : queues) {
        cleanup.remove(q);
        cleanup.remove(wire::roster_queue_for(q));
        cleanup.remove_exchange(wire::gather_exchange_for(q));
      }
      cleanup.remove(replies);
    } catch (...) {
    }
  }

  ServerOptions options(std::size_t workers = 1) {
    ServerOptions o = testbroker::server_options(workers);
    o.queue = queue;
    return o;
  }

  // Echo by default; Double answers the body twice; Spoof claims to be another instance.
  Service service(const std::string& on) {
    Service s(on);
    s.default_handler([](const Request& r) { return Reply::ok(r.body); });
    s.method("Double", [](const Request& r) { return Reply::ok(r.body + r.body); });
    s.method("Spoof", [](const Request&) {
      Reply r = Reply::ok("");
      r.headers["x-rpc-instance"] = "someone else";
      return r;
    });
    return s;
  }

  Server& start(ServerOptions o) {
    servers.push_back(testbroker::serve(service(queue), std::move(o)));
    return *servers.back();
  }
  Server& start() { return start(options()); }

  // One gather: a request published to the service's gather exchange, as a client does.
  void gather(const std::string& correlation_id, const std::string& body = "hi",
              std::vector<std::pair<std::string, std::string>> headers = {},
              const std::string& on = {}) {
    raw.publish_to(wire::gather_exchange_for(on.empty() ? queue : on), "", body, replies,
                   correlation_id, headers);
  }

  // Waits (bounded) until `n` replies with this correlation id have come; returns those that
  // have. Replies of other gathers read meanwhile are kept for their own turn.
  std::vector<Got> replies_to(const std::string& correlation_id, std::size_t n) {
    std::vector<Got> out;
    eventually([&] {
      while (auto g = raw.get(replies)) other_replies.push_back(std::move(*g));
      for (auto it = other_replies.begin(); it != other_replies.end();) {
        if (it->correlation_id == correlation_id) {
          out.push_back(std::move(*it));
          it = other_replies.erase(it);
        } else {
          ++it;
        }
      }
      return out.size() >= n;
    });
    return out;
  }

  std::uint32_t roster_count(const std::string& on = {}) {
    return raw.consumers(wire::roster_queue_for(on.empty() ? queue : on)).value_or(0);
  }

  static std::multiset<std::string> instances_of(const std::vector<Got>& replies) {
    std::multiset<std::string> out;
    for (const Got& g : replies) {
      auto it = g.headers.find("x-rpc-instance");
      out.insert(it == g.headers.end() ? "(none)" : it->second);
    }
    return out;
  }

  std::multiset<std::string> instances_of_servers() const {
    std::multiset<std::string> out;
    for (const auto& s : servers) out.insert(s->instance());
    return out;
  }

  std::string queue = testbroker::unique("gather");
  std::vector<std::string> queues{queue};
  std::string replies = queue + "-replies";
  testbroker::Raw raw;
  std::vector<Got> other_replies;
  std::vector<std::unique_ptr<Server>> servers;
};

}  // namespace

TEST_F(GatherServer, ThreeServersAreOnTheRosterAndOneGatherReachesEachOfThemOnce) {
  for (int i = 0; i < 3; ++i) start();
  EXPECT_TRUE(eventually([&] { return roster_count() == 3; })) << roster_count();
  EXPECT_TRUE(raw.exchange_exists(queue + ".gather"));

  gather("g1", "ping");
  std::vector<Got> got = replies_to("g1", 3);
  ASSERT_EQ(got.size(), 3u);
  for (const Got& g : got) EXPECT_EQ(g.body, "ping");
  const auto instances = instances_of(got);
  EXPECT_EQ(instances, instances_of_servers()) << "each instance once, naming itself";
  EXPECT_EQ(std::set<std::string>(instances.begin(), instances.end()).size(), 3u);
  for (const auto& s : servers) {
    EXPECT_TRUE(eventually([&] { return s->stats().gathers == 1; })) << s->stats().gathers;
  }
  EXPECT_EQ(raw.depth(queue), 0u) << "nothing went through the service's queue";
}

TEST_F(GatherServer, AGatherRunsTheNamedMethodOnEveryInstanceThroughTheUsualPath) {
  for (int i = 0; i < 2; ++i) start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 2; }));

  gather("double", "ab", {{"x-rpc-method", "Double"}});
  std::vector<Got> got = replies_to("double", 2);
  ASSERT_EQ(got.size(), 2u);
  for (const Got& g : got) EXPECT_EQ(g.body, "abab");
  EXPECT_EQ(instances_of(got), instances_of_servers());

  gather("missing", "x", {{"x-rpc-method", "Nope"}});
  got = replies_to("missing", 2);
  ASSERT_EQ(got.size(), 2u);
  for (const Got& g : got) {
    EXPECT_EQ(g.headers.at("x-rpc-status"), "unimplemented");
    EXPECT_NE(g.headers.at("x-rpc-message").find("Nope"), std::string::npos);
  }
  EXPECT_EQ(instances_of(got), instances_of_servers()) << "error replies name the instance too";

  gather("spoof", "", {{"x-rpc-method", "Spoof"}});
  got = replies_to("spoof", 2);
  EXPECT_EQ(instances_of(got), instances_of_servers()) << "the server's name, not the handler's";
}

TEST_F(GatherServer, HealthThroughAGatherIsAnsweredByEveryInstanceNamingItself) {
  Server& a = start();
  Server& b = start();
  b.set_serving(false);
  ASSERT_TRUE(eventually([&] { return roster_count() == 2; }));

  gather("health", "", {{"x-rpc-method", "amqprpc.health"}});
  std::vector<Got> got = replies_to("health", 2);
  ASSERT_EQ(got.size(), 2u);
  std::map<std::string, std::string> health;
  for (const Got& g : got) health[g.headers.at("x-rpc-instance")] = g.body;
  EXPECT_EQ(health[a.instance()], R"({"status":"serving"})");
  EXPECT_EQ(health[b.instance()], R"({"status":"not_serving"})");

  gather("describe", "", {{"x-rpc-method", "amqprpc.describe"}});
  got = replies_to("describe", 2);
  ASSERT_EQ(got.size(), 2u);
  for (const Got& g : got) EXPECT_NE(g.body.find("\"Double\""), std::string::npos) << g.body;
  EXPECT_EQ(instances_of(got), instances_of_servers());
}

TEST_F(GatherServer, AServerWithGatherOffIsNeitherCountedNorReached) {
  // Alone, it declares none of the gather topology.
  ServerOptions off = options();
  off.gather = false;
  Server& outsider = start(off);
  EXPECT_FALSE(raw.exchange_exists(wire::gather_exchange_for(queue)));
  EXPECT_FALSE(raw.consumers(wire::roster_queue_for(queue)).has_value());

  start();
  start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 2; }));
  gather("g", "x");
  std::vector<Got> got = replies_to("g", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(instances_of(got).count(outsider.instance()), 0u);
  EXPECT_EQ(outsider.stats().gathers, 0u);
  EXPECT_EQ(roster_count(), 2u);

  // It still serves its queue, like the others.
  auto client = testbroker::connect();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(client->call(queue, "normal"), "normal");
}

TEST_F(GatherServer, AStoppedServerLeavesTheRosterAndTheNextGatherReachesTheOthers) {
  for (int i = 0; i < 3; ++i) start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 3; }));

  servers.back()->stop();
  const std::string gone = servers.back()->instance();
  servers.pop_back();
  EXPECT_TRUE(eventually([&] { return roster_count() == 2; })) << roster_count();

  gather("after", "x");
  std::vector<Got> got = replies_to("after", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(instances_of(got), instances_of_servers());
  EXPECT_EQ(instances_of(got).count(gone), 0u);

  // With every server gone the exchange stays (a client publishing to it gets no route, not a
  // closed channel), and the roster counts none.
  servers.clear();
  EXPECT_EQ(roster_count(), 0u);
  EXPECT_TRUE(raw.exchange_exists(wire::gather_exchange_for(queue)));
}

TEST_F(GatherServer, AServerWhoseConnectionDropsLeavesTheRosterAndJoinsAgainOnReconnecting) {
  faults::TcpProxy proxy(static_cast<std::uint16_t>(testbroker::options().port));
  start();
  start();
  ServerOptions via = options();
  via.connection.port = proxy.port();
  via.reconnect.initial_delay = 50ms;
  Server& cut_off = start(via);
  ASSERT_TRUE(eventually([&] { return roster_count() == 3; }));

  // The connection ends (the broker sees it close); new ones reach nothing for now.
  proxy.blackhole(true);
  proxy.cut();
  EXPECT_TRUE(eventually([&] { return roster_count() == 2; })) << roster_count();
  gather("while-away", "x");
  std::vector<Got> got = replies_to("while-away", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(instances_of(got).count(cut_off.instance()), 0u);

  // Reconnected: a new instance queue, the same instance name.
  proxy.blackhole(false);
  EXPECT_TRUE(eventually([&] { return roster_count() == 3; }, 60s)) << roster_count();
  // The instance queue is bound while the connection is set up, just before the reconnect is
  // counted: the broker can show it a moment before the stats do.
  EXPECT_TRUE(eventually([&] { return cut_off.stats().reconnects >= 1; }))
      << cut_off.stats().reconnects;
  gather("back", "x");
  got = replies_to("back", 3);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(instances_of(got), instances_of_servers());
}

TEST_F(GatherServer, NormalCallsAreServedAsBeforeAndTheirRepliesNameNoInstance) {
  start();
  start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 2; }));
  raw.publish(queue, "plain", replies, "normal-1");
  raw.publish(queue, "", replies, "normal-2", {{"x-rpc-method", "amqprpc.health"}});
  std::vector<Got> got = replies_to("normal-1", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "plain");
  EXPECT_EQ(got[0].headers.count("x-rpc-instance"), 0u);
  got = replies_to("normal-2", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, R"({"status":"serving"})");
  EXPECT_EQ(got[0].headers.count("x-rpc-instance"), 0u);

  auto client = testbroker::connect();
  Reply r = client->try_call(queue, "through the client");
  EXPECT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "through the client");
  EXPECT_EQ(r.headers.count("x-rpc-instance"), 0u);
  std::uint64_t gathers = 0;
  for (const auto& s : servers) gathers += s->stats().gathers;
  EXPECT_EQ(gathers, 0u);
}

TEST_F(GatherServer, AGatherNoHandlerStartedWhenTheServerStopsIsAnsweredUnavailableNotRequeued) {
  // One worker, held by the first gather until the stop's grace ends and cancels it: the
  // second gather waits unstarted in the server when the stop begins.
  ServerOptions o = options(1);
  o.stop_grace = 200ms;
  // Shared: the handler's thread is left behind by the stop (its grace ends first).
  auto started = std::make_shared<std::atomic<bool>>(false);
  Service s(queue);
  s.default_handler([](const Request& r) { return Reply::ok(r.body); });
  s.method("Block", [started](const Request& r) {
    *started = true;
    for (int i = 0; i < 4000 && !r.context.cancelled(); ++i) std::this_thread::sleep_for(5ms);
    return Reply::ok("unblocked");
  });
  servers.push_back(testbroker::serve(std::move(s), o));
  Server& stopping = *servers.back();
  // Another server of the service, outside gathers: a requeued copy would reach it.
  ServerOptions off = options();
  off.gather = false;
  Server& other = start(off);
  ASSERT_TRUE(eventually([&] { return roster_count() == 1; }));

  gather("first", "", {{"x-rpc-method", "Block"}});
  ASSERT_TRUE(eventually([&] { return started->load(); }));
  gather("second", "never started");
  ASSERT_TRUE(eventually([&] { return stopping.stats().gathers == 2; }));

  stopping.stop();
  std::vector<Got> got = replies_to("second", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].headers.at("x-rpc-status"), "unavailable");
  EXPECT_EQ(got[0].headers.at("x-rpc-message"), "instance " + stopping.instance() + " is stopping");
  EXPECT_EQ(got[0].headers.at("x-rpc-instance"), stopping.instance());
  got = replies_to("first", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].headers.at("x-rpc-instance"), stopping.instance());

  EXPECT_EQ(stopping.stats().requeued, 0u);
  EXPECT_EQ(raw.depth(queue), 0u);
  EXPECT_EQ(other.stats().received, 0u) << "no copy went to the service's queue";
}

TEST_F(GatherServer, AGatherArrivingWhileTheServerStopsIsAnsweredUnavailableAndHealthNotServing) {
  ServerOptions o = options(1);
  o.stop_grace = 30s;
  auto release = std::make_shared<std::atomic<bool>>(false);
  std::atomic<bool> started{false};
  Service s(queue);
  s.default_handler([](const Request& r) { return Reply::ok(r.body); });
  s.method("Block", [release, &started](const Request&) {
    started = true;
    for (int i = 0; i < 6000 && !release->load(); ++i) std::this_thread::sleep_for(5ms);
    return Reply::ok("released");
  });
  servers.push_back(testbroker::serve(std::move(s), o));
  Server& stopping = *servers.back();
  ASSERT_TRUE(eventually([&] { return roster_count() == 1; }));

  gather("running", "", {{"x-rpc-method", "Block"}});
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  std::thread stopper([&] { stopping.stop(); });
  // The roster is left first: clients no longer count this instance. A client that counted it
  // a moment before still gets an answer instead of waiting for its deadline.
  EXPECT_TRUE(eventually([&] { return roster_count() == 0; }));
  gather("late", "x");
  gather("late-health", "", {{"x-rpc-method", "amqprpc.health"}});
  std::vector<Got> late = replies_to("late", 1);
  std::vector<Got> health = replies_to("late-health", 1);
  release->store(true);
  stopper.join();

  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].headers.at("x-rpc-status"), "unavailable");
  EXPECT_EQ(late[0].headers.at("x-rpc-instance"), stopping.instance());
  ASSERT_EQ(health.size(), 1u);
  EXPECT_EQ(health[0].body, R"({"status":"not_serving"})");
  EXPECT_EQ(health[0].headers.at("x-rpc-instance"), stopping.instance());
  std::vector<Got> running = replies_to("running", 1);
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].body, "released") << "the handler running at the stop finished";
}

TEST_F(GatherServer, ARosterDeletedByAnOperatorIsJoinedAgain) {
  start();
  start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 2; }));
  raw.remove(wire::roster_queue_for(queue));
  EXPECT_TRUE(eventually([&] { return roster_count() == 2; })) << roster_count();
  gather("g", "x");
  std::vector<Got> got = replies_to("g", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(instances_of(got), instances_of_servers());
  for (const auto& s : servers) EXPECT_EQ(s->stats().reconnects, 0u) << "joined in place";
}

TEST_F(GatherServer, AnInstanceQueueDeletedByAnOperatorIsReplacedAndGathersReachItsServerAgain) {
  auto list = [&]() -> std::vector<std::string> {
    std::vector<std::string> out;
    auto text = ctl("list_queues -q --no-table-headers name");
    if (!text) return out;
    std::istringstream lines(*text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(queue + ".instance.", 0) == 0) out.push_back(line);
    }
    return out;
  };
  if (!ctl("status")) GTEST_SKIP() << "needs the suite's private node (scripts/test.sh)";
  Server& server = start();
  std::vector<std::string> before = list();
  ASSERT_EQ(before.size(), 1u) << "one instance queue, named after the service";

  ASSERT_TRUE(ctl("delete_queue '" + before[0] + "'").has_value());
  std::vector<std::string> after;
  EXPECT_TRUE(eventually([&] {
    after = list();
    return after.size() == 1 && after[0] != before[0];
  })) << "a new instance queue";
  gather("g", "x");
  std::vector<Got> got = replies_to("g", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].headers.at("x-rpc-instance"), server.instance());
  EXPECT_EQ(roster_count(), 1u);
}

TEST_F(GatherServer, GathersHaveAPrefetchOfTheirOwnAndDoNotCrowdOutNormalCalls) {
  if (!ctl("status")) GTEST_SKIP() << "needs the suite's private node (scripts/test.sh)";
  ServerOptions o = options(2);
  o.gather_prefetch = 1;
  auto release = std::make_shared<std::atomic<bool>>(false);
  Service s(queue);
  s.default_handler([](const Request& r) { return Reply::ok(r.body); });
  s.method("Block", [release](const Request& r) {
    for (int i = 0; i < 6000 && !release->load(); ++i) std::this_thread::sleep_for(5ms);
    return Reply::ok(r.body);
  });
  servers.push_back(testbroker::serve(std::move(s), o));
  ASSERT_TRUE(eventually([&] { return roster_count() == 1; }));
  for (const char* id : {"b1", "b2", "b3"}) gather(id, id, {{"x-rpc-method", "Block"}});

  // One gather in hand, two waiting in the instance queue: the broker holds them back.
  std::string counts;
  EXPECT_TRUE(eventually([&] {
    counts = ctl("list_queues -q --no-table-headers name messages_ready messages_unacknowledged")
                 .value_or("");
    std::istringstream lines(counts);
    for (std::string name, ready, unacked; lines >> name >> ready >> unacked;) {
      if (name.rfind(queue + ".instance.", 0) == 0) return ready == "2" && unacked == "1";
    }
    return false;
  })) << counts;
  // Meanwhile the service's own requests are served (the other worker, their own prefetch).
  auto client = testbroker::connect();
  EXPECT_EQ(client->call(queue, "normal"), "normal");

  release->store(true);
  for (const char* id : {"b1", "b2", "b3"}) {
    std::vector<Got> got = replies_to(id, 1);
    ASSERT_EQ(got.size(), 1u) << id;
    EXPECT_EQ(got[0].body, id);
  }
}

TEST_F(GatherServer, AQueueNameNear255BytesDerivesNamesThatFitAndGathersWork) {
  queue = queue + "-" + std::string(254 - queue.size(), 'q');
  ASSERT_EQ(queue.size(), 255u);
  queues.push_back(queue);
  const std::string exchange = wire::gather_exchange_for(queue);
  const std::string roster = wire::roster_queue_for(queue);
  EXPECT_LE(exchange.size(), 255u);
  EXPECT_LE(roster.size(), 255u);
  EXPECT_TRUE(exchange.ends_with(".gather"));
  EXPECT_TRUE(roster.ends_with(".roster"));

  start();
  start();
  EXPECT_TRUE(eventually([&] { return roster_count() == 2; }));
  gather("long", "x");
  std::vector<Got> got = replies_to("long", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(instances_of(got), instances_of_servers());
}

TEST_F(GatherServer, TheFibDemoServerTakesPartWithDefaultOptions) {
  const ServerOptions defaults;
  EXPECT_TRUE(defaults.gather);
  EXPECT_TRUE(defaults.instance.empty());
  EXPECT_GE(defaults.gather_prefetch, 1);

  // As examples/fib/fib_server.cpp starts it: the defaults, fib::service.
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = queue;
  o.logger = [](LogLevel, std::string_view) {};
  auto fib_server = Server::start(o, fib::service(queue, fib::kDefaultLimit)).value();
  EXPECT_TRUE(std::regex_match(fib_server->instance(), std::regex(R"(.+:[0-9]+:[0-9a-f]{6})")))
      << fib_server->instance();
  ASSERT_TRUE(eventually([&] { return roster_count() == 1; }));

  gather("seed", "10");
  gather("typed", R"({"n": 30})", {{"x-rpc-method", "Fib"}});
  std::vector<Got> seed = replies_to("seed", 1);
  std::vector<Got> typed = replies_to("typed", 1);
  ASSERT_EQ(seed.size(), 1u);
  EXPECT_EQ(seed[0].body, "55");
  EXPECT_EQ(seed[0].headers.at("x-rpc-instance"), fib_server->instance());
  ASSERT_EQ(typed.size(), 1u);
  EXPECT_EQ(typed[0].body, R"({"fib":"832040","n":30})");
}

TEST_F(GatherServer, TheInstanceNameIsTheApplicationsOrMadeUpAndIsChecked) {
  ServerOptions named = options();
  named.instance = "blue";
  Server& blue = start(named);
  EXPECT_EQ(blue.instance(), "blue");
  Server& made_up = start();
  EXPECT_FALSE(made_up.instance().empty());
  EXPECT_NE(made_up.instance(), blue.instance());
  gather("g", "x");
  std::vector<Got> got = replies_to("g", 2);
  EXPECT_EQ(instances_of(got), (std::multiset<std::string>{"blue", made_up.instance()}));

  ServerOptions too_long = options();
  too_long.instance = std::string(256, 'i');
  auto refused = Server::start(too_long, service(queue));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(refused.status().message().find("instance"), std::string::npos);

  ServerOptions no_prefetch = options();
  no_prefetch.gather_prefetch = 0;
  refused = Server::start(no_prefetch, service(queue));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::invalid_argument);
}

TEST_F(GatherServer, RepliesToAGatherReachADirectReplyToConsumerOneFromEachInstance) {
  for (int i = 0; i < 3; ++i) start();
  ASSERT_TRUE(eventually([&] { return roster_count() == 3; }));
  // Direct reply-to: the requests must come from the channel that consumes it.
  testbroker::Raw direct;
  direct.consume("amq.rabbitmq.reply-to");
  direct.publish_to(wire::gather_exchange_for(queue), "", "x", "amq.rabbitmq.reply-to", "direct");
  std::vector<Got> got;
  for (int i = 0; i < 3; ++i) {
    auto g = direct.next(30s);
    if (!g) break;
    got.push_back(std::move(*g));
  }
  ASSERT_EQ(got.size(), 3u);
  for (const Got& g : got) EXPECT_EQ(g.correlation_id, "direct");
  EXPECT_EQ(instances_of(got), instances_of_servers());
}

TEST_F(GatherServer, AOneWayGatherRunsTheHandlerOnEveryInstanceAndSendsNothingBack) {
  auto heard = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < 3; ++i) {
    Service s(queue);
    s.method("Flush", [heard](const Request&) {
      ++*heard;
      return Reply::ok("");
    });
    servers.push_back(testbroker::serve(std::move(s), options()));
  }
  ASSERT_TRUE(eventually([&] { return roster_count() == 3; }));
  raw.publish_to(wire::gather_exchange_for(queue), "", "", "", "",
                 {{"x-rpc-method", "Flush"}, {"x-rpc-oneway", "1"}});
  EXPECT_TRUE(eventually([&] { return heard->load() == 3; })) << heard->load();
  for (const auto& s : servers) {
    EXPECT_TRUE(eventually([&] { return s->stats().oneway == 1; }));
  }
  EXPECT_FALSE(raw.get(replies).has_value());
}

TEST_F(GatherServer, AServerOfTwoServicesTakesPartInTheGathersOfEach) {
  const std::string second = testbroker::unique("gather-second");
  queues.push_back(second);
  std::vector<Service> both;
  both.push_back(service(queue));
  both.push_back(service(second));
  auto o = options();
  servers.push_back(Server::start(o, std::move(both)).value());
  ASSERT_TRUE(eventually([&] { return roster_count(queue) == 1 && roster_count(second) == 1; }));
  gather("first", "1");
  gather("second", "2", {{"x-rpc-method", "Double"}}, second);
  std::vector<Got> got = replies_to("first", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "1");
  got = replies_to("second", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "22");
  EXPECT_EQ(got[0].headers.at("x-rpc-instance"), servers.back()->instance());
}
