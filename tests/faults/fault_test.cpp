// Fault tests: the client and server ride through broker restarts, broker crashes, server crashes,
// a cluster node going away, a memory alarm and a silently cut network. Each scenario runs a
// steady load of calls while the fault happens and prints a report: calls sent, answered right,
// failed with a clear error, lost (neither: hung or wrong), duplicated, how long the broker was
// down and the time to recover. Every scenario must end with 0 lost calls and 0 hung callers.
//
// No scenario assumes how fast a node (re)starts: a fault ends when the node accepts AMQP
// connections again, the load goes on for a recovery window after that, and each outcome the
// test asserts afterwards (reconnected, a call answered) is waited for, bounded.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"
#include "support/broker_control.hpp"
#include "support/fault_load.hpp"
#include "support/process.hpp"
#include "support/tcp_proxy.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using faults::FaultLog;
using faults::LoadPlan;
using faults::record;
using faults::Report;
using faults::run_load;
using testbroker::eventually;

namespace {

// Bounds on waiting for an outcome. Generous: they only cost time when the test fails.
constexpr auto kNodeBoot = 120s;  // a node stopped or killed accepts AMQP again
constexpr auto kOutcome = 60s;    // a client reconnects, a call is answered

ReconnectOptions quick_reconnect() {
  ReconnectOptions r;
  r.initial_delay = 100ms;
  r.max_delay = 1000ms;
  return r;
}

std::unique_ptr<Client> make_client(std::vector<ConnectionOptions> endpoints,
                                    BlockedPolicy blocked = BlockedPolicy::wait) {
  ClientOptions o;
  o.connection = endpoints.front();
  o.alternates.assign(endpoints.begin() + 1, endpoints.end());
  o.reconnect = quick_reconnect();
  o.when_blocked = blocked;
  o.logger = [](LogLevel level, std::string_view line) {
    if (level >= LogLevel::info)
      std::fprintf(stderr, "  client: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  auto c = Client::connect(o);
  if (!c) throw std::runtime_error(c.status().to_string());
  return std::move(*c);
}

std::unique_ptr<Server> make_server(std::vector<ConnectionOptions> endpoints,
                                    const std::string& queue, QueueType type = QueueType::classic,
                                    bool durable = false) {
  ServerOptions o;
  o.connection = endpoints.front();
  o.alternates.assign(endpoints.begin() + 1, endpoints.end());
  o.reconnect = quick_reconnect();
  o.queue = queue;
  o.queue_type = type;
  o.durable = durable;
  o.workers = 2;
  o.logger = [](LogLevel level, std::string_view line) {
    if (level >= LogLevel::info)
      std::fprintf(stderr, "  server: %.*s\n", static_cast<int>(line.size()), line.data());
  };
  auto s = Server::start(o, [](const Request& r) { return Reply::ok(r.body); });
  if (!s) throw std::runtime_error(s.status().to_string());
  return std::move(*s);
}

// A call answered right, waited for (bounded): the client may still be reconnecting and the
// server re-declaring its queue when the load ends.
bool answers(Client& client, const std::string& queue) {
  return eventually(
      [&] {
        CallOptions o;
        o.timeout = 5s;
        Reply r = client.try_call(queue, "after", o);
        return r.status.ok() && r.body == "after";
      },
      kOutcome);
}

bool reconnected(Client& client) {
  return eventually([&] { return client.stats().reconnects >= 1; }, kOutcome);
}

// The node goes down (stopped cleanly, or SIGKILLed) and is started again. Notes when it went
// down and the moment it accepted AMQP connections again, whatever its boot takes.
void restart(const faults::BrokerNode& node, FaultLog& log, bool kill) {
  log.broker_down();
  if (kill) {
    node.kill9();
    if (!node.await_amqp(false, 30s)) throw std::runtime_error("the node outlived SIGKILL");
    std::this_thread::sleep_for(500ms);  // dead for a moment, and its launcher gone
  } else {
    node.stop();
  }
  std::exception_ptr failed;
  std::thread starter([&] {
    try {
      node.start();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  auto back = node.await_amqp(true, kNodeBoot);
  starter.join();
  if (back) log.broker_back(*back);
  if (failed) std::rethrow_exception(failed);
  if (!back) throw std::runtime_error("the node did not accept AMQP connections again");
}

// Test processes (one per scenario under ctest) keep the fault nodes running between scenarios
// when AMQPRPC_FAULT_NODES=keep; a ctest fixture (or scripts/test.sh) stops them at the end.
bool keep_nodes() {
  const char* v = std::getenv("AMQPRPC_FAULT_NODES");
  return v != nullptr && std::string(v) == "keep";
}

// One private node for the single-node scenarios, restarted and killed at will.
class SingleNode : public testing::Test {
 protected:
  static void SetUpTestSuite() { start_unless_up(); }
  static void TearDownTestSuite() {
    if (!keep_nodes()) node().stop();
  }
  // A node that speaks AMQP is up; asking it (rather than broker.sh, which runs rabbitmqctl)
  // costs nothing.
  static void start_unless_up() {
    if (!node().accepts_amqp()) node().start();
  }
  static faults::BrokerNode& node() {
    static faults::BrokerNode n("amqprpc-faults", 11800);
    return n;
  }
  void SetUp() override {
    // A previous scenario may have left the node stopped or alarmed.
    start_unless_up();
    node().ctl("set_vm_memory_high_watermark 0.4");
  }
  std::string queue = "faults-" + std::to_string(::getpid()) + "-" +
                      testing::UnitTest::GetInstance()->current_test_info()->name();
};

}  // namespace

TEST_F(SingleNode, BrokerRestartedMidLoad) {
  auto server = make_server({node().options()}, queue);
  auto client = make_client({node().options()});
  Report r = run_load("broker restarted mid-load", *client, queue, {},
                      [&](FaultLog& log) { restart(node(), log, /*kill=*/false); });
  record(r);
  EXPECT_TRUE(r.fault_over_in_time && r.fault_error.empty()) << r.line();
  EXPECT_EQ(r.lost, 0);
  EXPECT_LT(r.slowest_failure_s, 2.0) << "a known outcome must not wait for the 5 s deadline";
  EXPECT_GT(r.right, 0);
  EXPECT_TRUE(reconnected(*client));
  EXPECT_TRUE(answers(*client, queue));
}

TEST_F(SingleNode, BrokerKilledWithSigkillAndStartedAgain) {
  auto server = make_server({node().options()}, queue);
  auto client = make_client({node().options()});
  Report r = run_load("broker SIGKILLed and restarted", *client, queue, {},
                      [&](FaultLog& log) { restart(node(), log, /*kill=*/true); });
  record(r);
  EXPECT_TRUE(r.fault_over_in_time && r.fault_error.empty()) << r.line();
  EXPECT_EQ(r.lost, 0);
  EXPECT_LT(r.slowest_failure_s, 2.0) << "a known outcome must not wait for the 5 s deadline";
  EXPECT_GT(r.right, 0);
  EXPECT_TRUE(reconnected(*client));
  EXPECT_TRUE(answers(*client, queue));
}

TEST_F(SingleNode, OneOfTwoServersKilledMidCall) {
  setenv("AMQP_URL", node().url().c_str(), 1);
  std::vector<std::string> args{AMQPRPC_TEST_SERVER, "--queue", queue,        "--delay-ms", "20",
                                "--workers",         "4",       "--prefetch", "8"};
  testbroker::Process a(args), b(args);
  ASSERT_TRUE(a.wait_for_output("ready", kOutcome));
  ASSERT_TRUE(b.wait_for_output("ready", kOutcome));
  auto client = make_client({node().options()});
  LoadPlan plan;
  plan.recovery_window = 4s;
  plan.call.timeout = 10s;
  Report r = run_load("one of two servers SIGKILLed", *client, queue, plan,
                      [&](FaultLog&) { a.signal(SIGKILL); });
  record(r);
  EXPECT_EQ(r.lost, 0);
  // Its unacked requests went to the other server: nothing failed at all.
  EXPECT_EQ(r.failed_clearly, 0) << r.line();
  EXPECT_EQ(r.right, r.sent);
  EXPECT_TRUE(WIFSIGNALED(a.wait_exit(kOutcome)));
}

TEST_F(SingleNode, MemoryAlarmRaisedAndCleared) {
  // The alarm lasts 3 s once raised; raising and clearing it (rabbitmqctl) take what they take.
  auto alarm = [&](FaultLog&) {
    if (node().ctl("set_vm_memory_high_watermark 0.00001") != 0)
      throw std::runtime_error("cannot raise the memory alarm");
    std::this_thread::sleep_for(3s);
    if (node().ctl("set_vm_memory_high_watermark 0.4") != 0)
      throw std::runtime_error("cannot clear the memory alarm");
  };
  auto server = make_server({node().options()}, queue);
  auto waiting = make_client({node().options()}, BlockedPolicy::wait);
  LoadPlan plan;
  plan.fault_at = 1s;
  plan.recovery_window = 3s;
  // Held calls wait for the alarm to clear: their deadline must outlast it, however slowly
  // rabbitmqctl clears it on a busy machine.
  plan.call.timeout = 60s;
  Report r = run_load("memory alarm (policy wait)", *waiting, queue, plan, alarm);
  record(r);
  EXPECT_TRUE(r.fault_over_in_time && r.fault_error.empty()) << r.line();
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.failed_clearly, 0) << "held calls go out when the alarm clears, within deadlines";

  auto failing = make_client({node().options()}, BlockedPolicy::fail);
  plan.call.timeout = 3s;
  Report f = run_load("memory alarm (policy fail)", *failing, queue, plan, alarm);
  record(f);
  EXPECT_TRUE(f.fault_over_in_time && f.fault_error.empty()) << f.line();
  EXPECT_EQ(f.lost, 0);
  EXPECT_GT(f.failures["resource_exhausted"], 0) << f.line();
  EXPECT_TRUE(answers(*failing, queue));
}

TEST_F(SingleNode, CutNetworkIsDetectedByHeartbeats) {
  faults::TcpProxy proxy(static_cast<std::uint16_t>(node().port()));
  auto server = make_server({node().options()}, queue);
  ConnectionOptions via_proxy = node().options();
  via_proxy.port = proxy.port();
  via_proxy.heartbeat = 2s;
  via_proxy.connect_timeout = 1000ms;
  auto client = make_client({via_proxy});
  LoadPlan plan;
  plan.interval = 20ms;
  plan.call.timeout = 20s;  // longer than the cut: only heartbeats can end these calls early
  Report r = run_load("network cut silently (heartbeat 2 s)", *client, queue, plan, [&](FaultLog&) {
    proxy.blackhole(true);
    std::this_thread::sleep_for(8s);  // the cut
    proxy.blackhole(false);
  });
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_GT(r.failures["unavailable"], 0) << "in-flight calls fail once heartbeats are missed";
  EXPECT_LT(r.first_failure_s, 7.0) << "heartbeats (2 s) must notice the cut before it heals (8 s)";
  EXPECT_NE(r.sample.find("heartbeat"), std::string::npos) << r.sample;
  EXPECT_TRUE(reconnected(*client));
  EXPECT_TRUE(answers(*client, queue));
}

TEST_F(SingleNode, WaitForReadyAndIdempotentAreSeparateChoicesAcrossABrokerRestart) {
  // gRPC keeps them apart: wait_for_ready says a call made while (re)connecting may wait to be
  // sent; idempotent says a call in flight at a drop may be sent again. Fail-fast otherwise.
  std::atomic<int> slow_started{0};
  std::atomic<bool> broker_down{false};
  ServerOptions so;
  so.connection = node().options();
  so.reconnect = quick_reconnect();
  so.queue = queue;
  so.durable = true;  // the queue outlives the restart, so held calls have somewhere to go
  so.workers = 4;
  auto server = Server::start(so, [&](const Request& r) {
                  if (r.body.starts_with("slow")) {
                    // Still running when the connection drops, however long the broker's
                    // shutdown takes: its reply cannot reach the caller.
                    slow_started.fetch_add(1);
                    eventually([&] { return broker_down.load(); }, kOutcome);
                  }
                  return Reply::ok(r.body);
                }).value();
  auto client = make_client({node().options()});
  auto with = [](bool wait_for_ready, bool idempotent) {
    CallOptions o;
    o.timeout = 120s;  // longer than any restart: only the outcome ends these calls
    o.wait_for_ready = wait_for_ready;
    o.idempotent = idempotent;
    return o;
  };
  auto in_flight_plain = client->async_call(queue, "slow plain", with(false, false));
  auto in_flight_idempotent = client->async_call(queue, "slow idempotent", with(false, true));
  ASSERT_TRUE(eventually([&] { return slow_started.load() == 2; }, kOutcome));

  node().stop();
  CallOptions probe;
  probe.timeout = 2s;
  ASSERT_TRUE(eventually(
      [&] {
        return client->try_call(queue, "probe", probe).status.message().find("not connected") !=
               std::string::npos;
      },
      kOutcome))
      << "the client must know it is disconnected";
  broker_down = true;
  auto made_while_down = std::chrono::steady_clock::now();
  auto down_plain = client->async_call(queue, "down plain", with(false, false));
  auto down_idempotent = client->async_call(queue, "down idempotent", with(false, true));
  auto down_ready = client->async_call(queue, "down ready", with(true, false));
  // Fail-fast: known at once, whatever the broker's downtime.
  ASSERT_EQ(down_plain.wait_for(5s), std::future_status::ready);
  ASSERT_EQ(down_idempotent.wait_for(5s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - made_while_down, 5s);
  EXPECT_EQ(down_plain.get().status.code(), StatusCode::unavailable);
  EXPECT_EQ(down_idempotent.get().status.code(), StatusCode::unavailable)
      << "idempotent alone does not wait for a connection";
  EXPECT_EQ(down_ready.wait_for(0s), std::future_status::timeout) << "wait_for_ready waits";

  node().start();
  ASSERT_EQ(in_flight_plain.wait_for(kOutcome), std::future_status::ready);
  Reply plain = in_flight_plain.get();
  EXPECT_EQ(plain.status.code(), StatusCode::unavailable) << "in flight at the drop, not resent";
  ASSERT_EQ(in_flight_idempotent.wait_for(kOutcome), std::future_status::ready);
  Reply resent = in_flight_idempotent.get();
  EXPECT_TRUE(resent.status.ok()) << resent.status.to_string();
  EXPECT_EQ(resent.body, "slow idempotent");
  ASSERT_EQ(down_ready.wait_for(kOutcome), std::future_status::ready);
  Reply ready = down_ready.get();
  EXPECT_TRUE(ready.status.ok()) << ready.status.to_string();
  EXPECT_EQ(ready.body, "down ready");
  std::printf(
      "FAULT REPORT | wait_for_ready vs idempotent across a restart | in flight: plain %s, "
      "idempotent %s | made while down: plain %s, idempotent %s, wait_for_ready %s\n",
      std::string(to_string(plain.status.code())).c_str(),
      std::string(to_string(resent.status.code())).c_str(), "unavailable", "unavailable",
      std::string(to_string(ready.status.code())).c_str());
}

TEST_F(SingleNode, ABodyOverTheBrokersLimitFailsAloneAndTheCallsBesideItGoOn) {
  // The node takes at most 1 MiB (RabbitMQ reads max_message_size when a channel opens).
  ASSERT_EQ(node().ctl("eval 'application:set_env(rabbit, max_message_size, 1048576).'"), 0);
  struct Restore {
    ~Restore() {
      SingleNode::node().ctl("eval 'application:set_env(rabbit, max_message_size, 134217728).'");
    }
  } restore;
  ServerOptions so;
  so.connection = node().options();
  so.queue = queue;
  so.workers = 2;
  auto server = Server::start(so, [](const Request& r) {
                  std::this_thread::sleep_for(100ms);
                  return Reply::ok(std::to_string(r.body.size()));
                }).value();
  ConnectionOptions limited = node().options();
  limited.max_message_size = 1024 * 1024;
  auto client = make_client({limited});
  CallOptions o;
  o.timeout = 60s;
  std::vector<std::future<Reply>> small;
  for (int i = 0; i < 5; ++i) small.push_back(client->async_call(queue, "small", o));
  auto big = client->async_call(queue, std::string(2 * 1024 * 1024, 'b'), o);
  for (int i = 0; i < 5; ++i) small.push_back(client->async_call(queue, "small", o));
  ASSERT_EQ(big.wait_for(5s), std::future_status::ready) << "refused before it is sent";
  Reply refused = big.get();
  EXPECT_EQ(refused.status.code(), StatusCode::resource_exhausted) << refused.status.to_string();
  EXPECT_NE(refused.status.message().find("max_message_size"), std::string::npos);
  for (auto& f : small) {
    ASSERT_EQ(f.wait_for(kOutcome), std::future_status::ready);
    Reply r = f.get();
    EXPECT_TRUE(r.status.ok()) << "only the offending call may fail: " << r.status.to_string();
  }
  EXPECT_EQ(client->stats().reconnects, 0u);
  // What the broker itself does with a body over its limit (a client not told the limit):
  // it closes the channel; the call fails, and the client comes back.
  auto unaware = make_client({node().options()});
  Reply closed = unaware->try_call(queue, std::string(2 * 1024 * 1024, 'b'), o);
  EXPECT_FALSE(closed.status.ok());
  EXPECT_TRUE(
      eventually([&] { return unaware->try_call(queue, "small", o).status.ok(); }, kOutcome));
}

TEST_F(SingleNode, IdempotentCallsAreResentAfterReconnectingInsteadOfFailing) {
  // A durable queue outlives the restart, so re-sent calls have somewhere to go even before the
  // server has reconnected (with a transient queue they would fail fast with "no route").
  auto server = make_server({node().options()}, queue, QueueType::classic, /*durable=*/true);
  auto client = make_client({node().options()});
  CallOptions call;
  // Held calls wait for the broker: their deadline must outlast its downtime (10-15 s and more
  // on a busy machine), which the report shows.
  call.timeout = 60s;
  call.idempotent = true;      // in flight at the drop: sent again
  call.wait_for_ready = true;  // made while reconnecting: held until connected
  LoadPlan plan;
  plan.interval = 20ms;
  plan.call = call;
  Report r = run_load("broker restarted, idempotent calls", *client, queue, plan,
                      [&](FaultLog& log) { restart(node(), log, /*kill=*/false); });
  record(r);
  EXPECT_TRUE(r.fault_over_in_time && r.fault_error.empty()) << r.line();
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.failed_clearly, 0) << r.line();
  EXPECT_EQ(r.right, r.sent);
}

// Three nodes clustered on this machine, a quorum request queue.
class Cluster : public testing::Test {
 protected:
  static faults::BrokerNode& node(int i) {
    static faults::BrokerNode nodes[3] = {
        {"amqprpc-c1", 11811, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"},
        {"amqprpc-c2", 11812, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"},
        {"amqprpc-c3", 11813, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"}};
    return nodes[i];
  }
  // Starts the nodes not running (all three, or the one a previous run stopped) and clusters
  // them; bounded by scripts/broker.sh's own waits.
  static void SetUpTestSuite() {
    ASSERT_EQ(
        std::system((std::string(AMQPRPC_SOURCE_DIR) + "/scripts/cluster.sh start >/dev/null 2>&1")
                        .c_str()),
        0)
        << "scripts/cluster.sh start failed";
  }
  static void TearDownTestSuite() {
    if (keep_nodes()) return;
    std::system(
        (std::string(AMQPRPC_SOURCE_DIR) + "/scripts/cluster.sh stop >/dev/null 2>&1").c_str());
  }
};

TEST_F(Cluster, NodeOfTheClientStoppedCallsContinueThroughAnother) {
  std::string queue = "faults-quorum-" + std::to_string(::getpid());
  auto server = make_server({node(1).options(), node(2).options(), node(0).options()}, queue,
                            QueueType::quorum);
  auto client = make_client({node(0).options(), node(1).options(), node(2).options()});
  Report r = run_load("cluster: client's node stopped", *client, queue, {}, [&](FaultLog&) {
    node(0).stop();
    if (!node(0).await_amqp(false, 30s)) throw std::runtime_error("node 1 did not stop");
  });
  record(r);
  EXPECT_TRUE(r.fault_over_in_time && r.fault_error.empty()) << r.line();
  EXPECT_EQ(r.lost, 0);
  EXPECT_GT(r.right, 0);
  EXPECT_TRUE(reconnected(*client));
  EXPECT_TRUE(answers(*client, queue));
}

TEST_F(SingleNode, AClientClosedWhileReconnectingEndsEveryCall) {
  auto server = make_server({node().options()}, queue);
  std::unique_ptr<Client> client;
  std::future<Reply> held, plain;
  {
    faults::TcpProxy proxy(static_cast<std::uint16_t>(node().port()));
    ConnectionOptions via_proxy = node().options();
    via_proxy.port = proxy.port();
    client = make_client({via_proxy});
    EXPECT_EQ(client->call(queue, "before"), "before");
  }  // the proxy goes away: the connection drops and reconnecting cannot succeed
  CallOptions idempotent;
  idempotent.wait_for_ready = true;
  idempotent.timeout = 60s;
  ASSERT_TRUE(eventually(
      [&] {
        return client->stats().reconnects == 0 && !client->try_call(queue, "probe").status.ok();
      },
      kOutcome));
  held = client->async_call(queue, "held while reconnecting", idempotent);
  std::this_thread::sleep_for(200ms);  // the call is held, not merely queued
  client.reset();
  ASSERT_EQ(held.wait_for(5s), std::future_status::ready) << "a held call outlived its client";
  EXPECT_EQ(held.get().status.code(), StatusCode::cancelled);
}
