// Fault tests: the client and server ride through broker restarts, broker crashes, server crashes,
// a cluster node going away, a memory alarm and a silently cut network. Each scenario runs a
// steady load of calls while the fault happens and prints a report: calls sent, answered right,
// failed with a clear error, lost (neither: hung or wrong), duplicated, and the time to recover.
// Every scenario must end with 0 lost calls and 0 hung callers.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "faults/broker_control.hpp"
#include "faults/tcp_proxy.hpp"
#include "integration/broker.hpp"
#include "integration/process.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

ReconnectOptions quick_reconnect() {
  ReconnectOptions r;
  r.initial_delay = 100ms;
  r.max_delay = 1000ms;
  return r;
}

struct Report {
  std::string scenario;
  int sent = 0, right = 0, failed_clearly = 0, lost = 0;
  std::uint64_t duplicated = 0;
  double recovery_s = -1;  // first failure -> first right answer to a call sent after it
  std::map<std::string, int> failures;  // status code -> count
  double first_failure_s = -1;          // fault injected -> first failed call (detection)
  std::string sample;                   // the first failure's message
  double slowest_failure_s = 0;         // longest a failed call waited for its answer

  std::string line() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "FAULT REPORT | %-34s | sent %5d | right %5d | failed clearly %4d | lost %d | "
                  "duplicated %llu | recovered in %.2f s",
                  scenario.c_str(), sent, right, failed_clearly, lost,
                  static_cast<unsigned long long>(duplicated), recovery_s);
    std::string out = buf;
    if (first_failure_s >= 0) {
      std::snprintf(buf, sizeof buf, " | first failure %.2f s after the fault", first_failure_s);
      out += buf;
    }
    for (const auto& [code, n] : failures) out += " | " + code + " " + std::to_string(n);
    if (failed_clearly > 0) {
      std::snprintf(buf, sizeof buf, " | slowest failure took %.2f s", slowest_failure_s);
      out += buf;
    }
    if (!sample.empty()) out += " | e.g. \"" + sample.substr(0, 140) + "\"";
    return out;
  }
};

// Sends a call every `interval` for `duration`; `fault` runs on its own thread at `fault_at`.
// Completions are recorded by callback with their time, so recovery is measured exactly: from
// the moment the fault starts to the first right answer to a call sent after it.
Report run_load(const std::string& scenario, Client& client, const std::string& queue,
                std::chrono::milliseconds duration, std::chrono::milliseconds fault_at,
                const std::function<void()>& fault, CallOptions call = {},
                std::chrono::milliseconds interval = 10ms) {
  if (!call.timeout) call.timeout = 5s;
  struct Outcome {
    bool done = false;
    Status status;
    bool right = false;
    Clock::time_point sent, completed;
  };
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Outcome> outcomes;
  outcomes.reserve(static_cast<std::size_t>(duration / interval) + 16);
  int completed = 0;
  std::thread injector;
  auto fault_time = Clock::time_point::max();
  auto start = Clock::now();
  for (std::size_t i = 0; Clock::now() - start < duration; ++i) {
    if (!injector.joinable() && Clock::now() - start >= fault_at) {
      fault_time = Clock::now();
      injector = std::thread(fault);
    }
    std::string body = scenario + "#" + std::to_string(i);
    {
      std::lock_guard lock(mutex);
      outcomes.push_back({false, {}, false, Clock::now(), {}});
    }
    client.async_call(queue, body, call, [&, i, body](Reply reply) {
      std::lock_guard lock(mutex);
      Outcome& o = outcomes[i];
      o.done = true;
      o.completed = Clock::now();
      o.status = reply.status;
      o.right = reply.status.ok() && reply.body == body;
      ++completed;
      cv.notify_all();
    });
    std::this_thread::sleep_for(interval);
  }
  if (injector.joinable()) injector.join();
  Report r;
  r.scenario = scenario;
  {
    std::unique_lock lock(mutex);
    // Every call must end by its deadline (plus slack): what has not by then hung.
    cv.wait_until(lock, Clock::now() + *call.timeout + 3s,
                  [&] { return completed == static_cast<int>(outcomes.size()); });
    r.sent = static_cast<int>(outcomes.size());
    // Recovery: from the first failure the fault caused to the first right answer to a call
    // sent after that failure (0 when no call failed).
    Clock::time_point first_failure = Clock::time_point::max();
    for (const Outcome& o : outcomes) {
      if (o.done && !o.right) first_failure = std::min(first_failure, o.completed);
    }
    if (first_failure == Clock::time_point::max()) {
      r.recovery_s = 0;
    } else {
      r.first_failure_s = std::chrono::duration<double>(first_failure - fault_time).count();
    }
    Clock::time_point first_ok = Clock::time_point::max();
    for (const Outcome& o : outcomes) {
      if (!o.done) {
        r.lost++;
      } else if (o.right) {
        r.right++;
        if (o.sent >= first_failure) first_ok = std::min(first_ok, o.completed);
      } else if (!o.status.ok() && !o.status.message().empty()) {
        r.failed_clearly++;
        r.failures[std::string(to_string(o.status.code()))]++;
        if (r.sample.empty()) r.sample = o.status.message();
        r.slowest_failure_s = std::max(r.slowest_failure_s,
                                       std::chrono::duration<double>(o.completed - o.sent).count());
      } else {
        r.lost++;  // a wrong answer is as bad as none
      }
    }
    if (first_ok != Clock::time_point::max()) {
      r.recovery_s = std::chrono::duration<double>(first_ok - first_failure).count();
    }
  }
  std::this_thread::sleep_for(500ms);  // let duplicates, if any, arrive
  r.duplicated = client.stats().duplicate_replies;
  if (r.lost > 0) {
    // The callbacks still reference this frame: wait (bounded) for them before returning.
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 30s, [&] { return completed == static_cast<int>(outcomes.size()); });
  }
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

void record(const Report& r) {
  std::printf("%s\n", r.line().c_str());
  std::fflush(stdout);
  if (const char* file = std::getenv("AMQPRPC_FAULT_REPORT")) {
    std::ofstream(file, std::ios::app) << r.line() << "\n";
  }
}

// One private node for the single-node scenarios, restarted and killed at will.
class SingleNode : public testing::Test {
 protected:
  static void SetUpTestSuite() { node().start(); }
  static void TearDownTestSuite() { node().stop(); }
  static faults::BrokerNode& node() {
    static faults::BrokerNode n("amqprpc-faults", 35800);
    return n;
  }
  void SetUp() override {
    // A previous scenario may have left the node stopped or alarmed.
    node().start();
    node().ctl("set_vm_memory_high_watermark 0.4");
  }
  std::string queue = "faults-" + std::to_string(::getpid()) + "-" +
                      testing::UnitTest::GetInstance()->current_test_info()->name();
};

}  // namespace

TEST_F(SingleNode, BrokerRestartedMidLoad) {
  auto server = make_server({node().options()}, queue);
  auto client = make_client({node().options()});
  Report r = run_load("broker restarted mid-load", *client, queue, 12s, 2s, [&] {
    node().stop();
    node().start();
  });
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_LT(r.slowest_failure_s, 2.0) << "a known outcome must not wait for the 5 s deadline";
  EXPECT_GT(r.right, 0);
  EXPECT_GE(client->stats().reconnects, 1u);
  EXPECT_EQ(client->call(queue, "after"), "after");
}

TEST_F(SingleNode, BrokerKilledWithSigkillAndStartedAgain) {
  auto server = make_server({node().options()}, queue);
  auto client = make_client({node().options()});
  Report r = run_load("broker SIGKILLed and restarted", *client, queue, 12s, 2s, [&] {
    node().kill9();
    std::this_thread::sleep_for(500ms);
    node().start();
  });
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_LT(r.slowest_failure_s, 2.0) << "a known outcome must not wait for the 5 s deadline";
  EXPECT_GT(r.right, 0);
  EXPECT_GE(client->stats().reconnects, 1u);
  EXPECT_EQ(client->call(queue, "after"), "after");
}

TEST_F(SingleNode, OneOfTwoServersKilledMidCall) {
  setenv("AMQP_URL", node().url().c_str(), 1);
  std::vector<std::string> args{AMQPRPC_TEST_SERVER, "--queue", queue,        "--delay-ms", "20",
                                "--workers",         "4",       "--prefetch", "8"};
  testbroker::Process a(args), b(args);
  ASSERT_TRUE(a.wait_for_output("ready", 10s));
  ASSERT_TRUE(b.wait_for_output("ready", 10s));
  auto client = make_client({node().options()});
  CallOptions call;
  call.timeout = 10s;
  Report r = run_load(
      "one of two servers SIGKILLed", *client, queue, 6s, 2s, [&] { a.signal(SIGKILL); }, call);
  record(r);
  EXPECT_EQ(r.lost, 0);
  // Its unacked requests went to the other server: nothing failed at all.
  EXPECT_EQ(r.failed_clearly, 0) << r.line();
  EXPECT_EQ(r.right, r.sent);
  EXPECT_TRUE(WIFSIGNALED(a.wait_exit(5s)));
}

TEST_F(SingleNode, MemoryAlarmRaisedAndCleared) {
  auto server = make_server({node().options()}, queue);
  auto waiting = make_client({node().options()}, BlockedPolicy::wait);
  CallOptions call;
  call.timeout = 8s;
  Report r = run_load(
      "memory alarm (policy wait)", *waiting, queue, 8s, 1s,
      [&] {
        node().ctl("set_vm_memory_high_watermark 0.00001");
        std::this_thread::sleep_for(3s);
        node().ctl("set_vm_memory_high_watermark 0.4");
      },
      call);
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.failed_clearly, 0) << "held calls go out when the alarm clears, within deadlines";

  auto failing = make_client({node().options()}, BlockedPolicy::fail);
  call.timeout = 3s;
  Report f = run_load(
      "memory alarm (policy fail)", *failing, queue, 6s, 1s,
      [&] {
        node().ctl("set_vm_memory_high_watermark 0.00001");
        std::this_thread::sleep_for(3s);
        node().ctl("set_vm_memory_high_watermark 0.4");
      },
      call);
  record(f);
  EXPECT_EQ(f.lost, 0);
  EXPECT_GT(f.failures["resource_exhausted"], 0) << f.line();
  EXPECT_EQ(failing->call(queue, "after"), "after");
}

TEST_F(SingleNode, CutNetworkIsDetectedByHeartbeats) {
  faults::TcpProxy proxy(static_cast<std::uint16_t>(node().port()));
  auto server = make_server({node().options()}, queue);
  ConnectionOptions via_proxy = node().options();
  via_proxy.port = proxy.port();
  via_proxy.heartbeat = 2s;
  via_proxy.connect_timeout = 1000ms;
  auto client = make_client({via_proxy});
  CallOptions call;
  call.timeout = 20s;  // longer than the cut: only heartbeats can end these calls early
  auto cut_at = Clock::now();
  Report r = run_load(
      "network cut silently (heartbeat 2 s)", *client, queue, 16s, 2s,
      [&] {
        cut_at = Clock::now();
        proxy.blackhole(true);
        std::this_thread::sleep_for(8s);
        proxy.blackhole(false);
      },
      call, 20ms);
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_GT(r.failures["unavailable"], 0) << "in-flight calls fail once heartbeats are missed";
  EXPECT_LT(r.first_failure_s, 7.0) << "heartbeats (2 s) must notice the cut before it heals (8 s)";
  EXPECT_NE(r.sample.find("heartbeat"), std::string::npos) << r.sample;
  EXPECT_GE(client->stats().reconnects, 1u);
  EXPECT_EQ(client->call(queue, "after"), "after");
}

TEST_F(SingleNode, IdempotentCallsAreResentAfterReconnectingInsteadOfFailing) {
  // A durable queue outlives the restart, so re-sent calls have somewhere to go even before the
  // server has reconnected (with a transient queue they would fail fast with "no route").
  auto server = make_server({node().options()}, queue, QueueType::classic, /*durable=*/true);
  auto client = make_client({node().options()});
  CallOptions call;
  call.timeout = 15s;
  call.idempotent = true;      // in flight at the drop: sent again
  call.wait_for_ready = true;  // made while reconnecting: held until connected
  Report r = run_load(
      "broker restarted, idempotent calls", *client, queue, 10s, 2s,
      [&] {
        node().stop();
        node().start();
      },
      call, 20ms);
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_EQ(r.failed_clearly, 0) << r.line();
  EXPECT_EQ(r.right, r.sent);
}

// Three nodes clustered on this machine, a quorum request queue.
class Cluster : public testing::Test {
 protected:
  static faults::BrokerNode& node(int i) {
    static faults::BrokerNode nodes[3] = {
        {"amqprpc-c1", 35811, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"},
        {"amqprpc-c2", 35812, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"},
        {"amqprpc-c3", 35813, "AMQPRPC_BROKER_COOKIE=amqprpc-cluster-test"}};
    return nodes[i];
  }
  static void SetUpTestSuite() {
    ASSERT_EQ(
        std::system((std::string(AMQPRPC_SOURCE_DIR) + "/scripts/cluster.sh start >/dev/null 2>&1")
                        .c_str()),
        0)
        << "scripts/cluster.sh start failed";
  }
  static void TearDownTestSuite() {
    std::system(
        (std::string(AMQPRPC_SOURCE_DIR) + "/scripts/cluster.sh stop >/dev/null 2>&1").c_str());
  }
};

TEST_F(Cluster, NodeOfTheClientStoppedCallsContinueThroughAnother) {
  std::string queue = "faults-quorum-" + std::to_string(::getpid());
  auto server = make_server({node(1).options(), node(2).options(), node(0).options()}, queue,
                            QueueType::quorum);
  auto client = make_client({node(0).options(), node(1).options(), node(2).options()});
  Report r =
      run_load("cluster: client's node stopped", *client, queue, 10s, 2s, [&] { node(0).stop(); });
  record(r);
  EXPECT_EQ(r.lost, 0);
  EXPECT_GT(r.right, 0);
  EXPECT_GE(client->stats().reconnects, 1u);
  EXPECT_EQ(client->call(queue, "after"), "after");
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
  ASSERT_TRUE(testbroker::eventually(
      [&] {
        return client->stats().reconnects == 0 && !client->try_call(queue, "probe").status.ok();
      },
      10s));
  held = client->async_call(queue, "held while reconnecting", idempotent);
  std::this_thread::sleep_for(200ms);
  client.reset();
  ASSERT_EQ(held.wait_for(5s), std::future_status::ready) << "a held call outlived its client";
  EXPECT_EQ(held.get().status.code(), StatusCode::cancelled);
}
