// Holes found by adversarial testing (issue 10), each pinned by a test that failed before its
// fix: counting, options that cannot work, names that must fit.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <limits>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "protocol/wire.hpp"
#include "support/broker.hpp"
#include "support/process.hpp"
#include "support/tcp_proxy.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

ServerOptions server_options(const std::string& queue) {
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = queue;
  return o;
}

std::unique_ptr<Client> connect_client(ConnectionOptions where = testbroker::options()) {
  ClientOptions co;
  co.connection = std::move(where);
  return Client::connect(co).value();
}

class Robustness : public testing::Test {
 protected:
  void TearDown() override {
    for (const auto& q : cleanup) {
      try {
        testbroker::Raw().remove(q);
      } catch (...) {
      }
    }
  }
  std::string queue = testbroker::unique("robust");
  std::vector<std::string> cleanup{queue, queue + ".dead-letter"};
};

}  // namespace

TEST_F(Robustness, AReplyAfterItsCallsDeadlineIsLateNotADuplicate) {
  auto server = Server::start(server_options(queue), [](const Request& r) {
                  std::this_thread::sleep_for(300ms);
                  return Reply::ok(r.body);
                }).value();
  auto client = connect_client();
  CallOptions o;
  o.timeout = 50ms;
  EXPECT_EQ(client->try_call(queue, "slow", o).status.code(), StatusCode::deadline_exceeded);
  ASSERT_TRUE(eventually([&] { return client->stats().late_replies == 1; }));
  EXPECT_EQ(client->stats().duplicate_replies, 0u) << "one reply, after its deadline: late";
}

TEST_F(Robustness, ReconnectOptionsThatMakeNoSenseAreRefused) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (auto change : std::vector<std::function<void(ReconnectOptions&)>>{
           [&](ReconnectOptions& r) { r.multiplier = nan; },
           [&](ReconnectOptions& r) { r.jitter = nan; },
           [](ReconnectOptions& r) { r.multiplier = -1; },
           [](ReconnectOptions& r) { r.jitter = 1.5; }}) {
    ClientOptions co;
    co.connection = testbroker::options();
    change(co.reconnect);
    auto c = Client::connect(co);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::invalid_argument) << c.status().to_string();
    ServerOptions so = server_options(queue);
    change(so.reconnect);
    auto s = Server::start(so, [](const Request&) { return Reply::ok(""); });
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::invalid_argument) << s.status().to_string();
  }
}

TEST_F(Robustness, MoreWorkerThreadsThanTheSystemCanStartFailStartClearly) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan reserves terabytes of address space: an address-space limit breaks it";
#else
  // Make thread creation fail for sure: cap this process's address space a little above what
  // it uses, so worker stacks (8 MiB each) run out after a few dozen threads.
  long vm_kb = 0;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stol(line.substr(7));
  }
  ASSERT_GT(vm_kb, 0);
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_AS, &old), 0);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(vm_kb + 512 * 1024) * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
  ServerOptions so = server_options(queue);
  so.workers = 100000;
  auto s = Server::start(so, [](const Request&) { return Reply::ok(""); });
  setrlimit(RLIMIT_AS, &old);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::resource_exhausted);
  EXPECT_NE(s.status().message().find("100000 worker threads"), std::string::npos)
      << s.status().message();
#endif
}

TEST_F(Robustness, AQueueNameOfTheFullLengthGetsADeadLetterQueueThatFits) {
  std::string long_queue = queue + "-" + std::string(250 - queue.size() - 1, 'q');
  ASSERT_EQ(long_queue.size(), 250u);
  const std::string dlq = detail::wire::dead_letter_queue_for(long_queue);
  cleanup = {long_queue, dlq};
  EXPECT_LE(dlq.size(), 255u);
  EXPECT_TRUE(dlq.ends_with(".dead-letter"));
  EXPECT_NE(dlq, detail::wire::dead_letter_queue_for(long_queue + "x").substr(0, dlq.size()))
      << "different long names get different dead-letter queues";
  auto server =
      Server::start(server_options(long_queue), [](const Request& r) { return Reply::ok(r.body); });
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  auto client = connect_client();
  EXPECT_EQ(client->call(long_queue, "fits"), "fits");
  testbroker::Raw raw;
  EXPECT_EQ(raw.depth(dlq), 0u) << "declared at start under its derived name";
}

TEST(DeadLetterName, IsTheQueueNamePlusASuffixWhenItFitsAndNeverSplitsAUtf8Character) {
  EXPECT_EQ(detail::wire::dead_letter_queue_for("rpc_queue"), "rpc_queue.dead-letter");
  std::string exact(255 - 12, 'a');
  EXPECT_EQ(detail::wire::dead_letter_queue_for(exact), exact + ".dead-letter");
  std::string accents;
  while (accents.size() < 254) accents += "\xC3\xA9";  // é, two bytes each
  std::string dlq = detail::wire::dead_letter_queue_for(accents);
  EXPECT_LE(dlq.size(), 255u);
  const std::string prefix = dlq.substr(0, dlq.find('~'));
  EXPECT_EQ(prefix.size() % 2, 0u) << "cut between characters";
  EXPECT_EQ(accents.rfind(prefix, 0), 0u);
}

TEST_F(Robustness, StopIsBoundedByItsGraceEvenWhenAHandlerNeverReturnsAndAnotherServerAnswers) {
  // Shared with the handler, which outlives this test's frame on a thread left behind.
  struct Gate {
    std::mutex m;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> started{0}, returned{0};
  };
  auto gate = std::make_shared<Gate>();
  ServerOptions so = server_options(queue);
  so.workers = 2;
  so.stop_grace = 300ms;
  auto stuck = Server::start(so, [gate](const Request& r) {
                 gate->started.fetch_add(1);
                 {
                   std::unique_lock lock(gate->m);
                   gate->cv.wait_for(lock, 60s, [&] { return gate->release; });  // "never"
                 }
                 gate->returned.fetch_add(1);
                 return Reply::ok("from the stuck server: " + r.body);
               }).value();
  auto client = connect_client();
  CallOptions o;
  o.timeout = 60s;
  auto reply = client->async_call(queue, "hello", o);
  ASSERT_TRUE(eventually([&] { return gate->started.load() == 1; }, 10s));

  auto before = std::chrono::steady_clock::now();
  stuck->stop();
  auto took = std::chrono::steady_clock::now() - before;
  EXPECT_LT(took, 10s) << "stop must not wait for a handler that never returns";
  EXPECT_EQ(gate->returned.load(), 0);

  // The request went back to the broker: another server answers it.
  auto other = Server::start(server_options(queue), [](const Request& r) {
                 return Reply::ok("from the other server: " + r.body);
               }).value();
  ASSERT_EQ(reply.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(reply.get().body, "from the other server: hello");

  // Destroying the server does not wait for the handler either.
  before = std::chrono::steady_clock::now();
  stuck.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 10s);
  EXPECT_EQ(gate->returned.load(), 0);
  {
    std::lock_guard lock(gate->m);
    gate->release = true;
  }
  gate->cv.notify_all();
  // The left-behind thread finishes after its server is gone: its reply is dropped, and it
  // touches no freed memory (the sanitizer trees check).
  ASSERT_TRUE(eventually([&] { return gate->returned.load() == 1; }, 10s));
  EXPECT_EQ(client->call(queue, "after"), "from the other server: after");
}

TEST_F(Robustness, AFrozenBrokerHoldsNeitherAClientsDestructionNorAServersStop) {
  faults::TcpProxy proxy(static_cast<std::uint16_t>(testbroker::options().port));
  ConnectionOptions via = testbroker::options();
  via.port = proxy.port();
  ServerOptions so = server_options(queue);
  so.connection = via;
  so.reconnect.enabled = false;
  auto server = Server::start(so, [](const Request& r) { return Reply::ok(r.body); }).value();
  ClientOptions co;
  co.connection = via;
  co.reconnect.enabled = false;
  auto client = Client::connect(co).value();
  ASSERT_EQ(client->call(queue, "warm"), "warm");

  proxy.blackhole(true);  // TCP stays open, nothing answers
  auto t0 = std::chrono::steady_clock::now();
  client.reset();
  auto client_took = std::chrono::steady_clock::now() - t0;
  t0 = std::chrono::steady_clock::now();
  server->stop();
  auto server_took = std::chrono::steady_clock::now() - t0;
  // The close handshake waits 1 s for the broker (documented), not the 10 s connect timeout.
  EXPECT_LT(client_took, 5s);
  EXPECT_LT(server_took, 5s);
}

namespace {

// Publishes a request whose headers are 450 doubles: about 6 KB as AMQP, but some 150 KB as
// text (std::to_string(1e300) has 300 digits) — more than a frame if re-encoded as text.
void publish_with_many_doubles(const std::string& queue, const std::string& reply_to,
                               const std::string& body) {
  auto o = testbroker::options();
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  ASSERT_EQ(amqp_socket_open(socket, o.host.c_str(), o.port), AMQP_STATUS_OK);
  ASSERT_EQ(amqp_login(conn, o.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, o.user.c_str(),
                       o.password.c_str())
                .reply_type,
            AMQP_RESPONSE_NORMAL);
  amqp_channel_open(conn, 1);
  std::vector<std::string> keys;
  for (int i = 0; i < 450; ++i) keys.push_back("d" + std::to_string(i));
  std::vector<amqp_table_entry_t> entries(450);
  for (int i = 0; i < 450; ++i) {
    entries[static_cast<std::size_t>(i)].key =
        amqp_cstring_bytes(keys[static_cast<std::size_t>(i)].c_str());
    entries[static_cast<std::size_t>(i)].value.kind = AMQP_FIELD_KIND_F64;
    entries[static_cast<std::size_t>(i)].value.value.f64 = 1e300;
  }
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
  p.headers = {450, entries.data()};
  p.reply_to = amqp_cstring_bytes(reply_to.c_str());
  p.correlation_id = amqp_cstring_bytes("doubles");
  ASSERT_EQ(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 0, 0,
                               &p, amqp_cstring_bytes(body.c_str())),
            AMQP_STATUS_OK);
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

}  // namespace

TEST_F(Robustness, ARedeliveredRequestWhoseHeadersWouldGrowIsRecountedWithoutBreakingTheServer) {
  testbroker::Raw raw;
  raw.declare(queue);
  const std::string replies = queue + "-replies";
  cleanup.push_back(replies);
  raw.declare(replies);
  publish_with_many_doubles(queue, replies, "crash-once");
  {
    // The first server crashes on it: the broker redelivers it, marked redelivered.
    testbroker::Process crashing(
        {AMQPRPC_TEST_SERVER, "--queue", queue, "--crash-on", "crash-once", "--max-attempts", "3"});
    ASSERT_NE(crashing.wait_exit(20s), -1) << "the crashing server did not take the request";
  }
  ServerOptions so = server_options(queue);
  so.max_attempts = 3;
  std::atomic<int> served{0};
  auto server = Server::start(so, [&](const Request& r) {
                  served.fetch_add(1);
                  return Reply::ok("served " + r.body + " with " +
                                   std::to_string(r.headers.size()) + " headers");
                }).value();
  // The redelivery is re-published with its count (recount), then served: one reply.
  std::optional<testbroker::Raw::Got> reply;
  ASSERT_TRUE(eventually([&] { return (reply = raw.get(replies)).has_value(); }, 30s))
      << "no reply: the server could not re-publish the request";
  EXPECT_EQ(reply->body.rfind("served crash-once with 45", 0), 0u) << reply->body;
  EXPECT_EQ(server->stats().reconnects, 0u) << "re-publishing must not break the connection";
  EXPECT_EQ(served.load(), 1);
}

TEST_F(Robustness, AFirstDeliveryCarryingAForgedAttemptCountIsServed) {
  auto server = Server::start(server_options(queue), [](const Request& r) {
                  return Reply::ok(r.body);
                }).value();
  auto client = connect_client();
  CallOptions o;
  o.headers["x-rpc-attempts"] = "6";  // the server's own bookkeeping, forged by a caller
  // Our client never writes it: its requests carry its login as user_id, a server's perhaps.
  EXPECT_EQ(client->try_call(queue, "not poison", o).status.code(), StatusCode::invalid_argument);
  // Another AMQP client may: without a server's user_id, the count is not trusted.
  testbroker::Raw raw;
  const std::string replies = queue + "-replies";
  cleanup.push_back(replies);
  raw.declare(replies);
  raw.publish(queue, "not poison", replies, "c1", {{"x-rpc-attempts", "6"}});
  std::optional<testbroker::Raw::Got> got;
  ASSERT_TRUE(eventually([&] { return (got = raw.get(replies)).has_value(); }));
  EXPECT_EQ(got->body, "not poison");
  EXPECT_EQ(got->headers.count("x-rpc-status"), 0u);
  EXPECT_EQ(server->stats().dead_lettered, 0u);
}

class GracefulStops : public Robustness, public testing::WithParamInterface<bool> {};

TEST_P(GracefulStops, AreNotCrashesAndDeadLetterNothing) {
  const bool confirms = GetParam();
  testbroker::Raw raw;
  raw.declare(queue);
  const std::string replies = queue + "-replies";
  cleanup.push_back(replies);
  raw.declare(replies);
  for (int i = 0; i < 20; ++i)
    raw.publish(queue, "r" + std::to_string(i), replies, std::to_string(i));
  std::atomic<int> served{0};
  std::uint64_t dead = 0, requeued = 0;
  // Six graceful stop/start cycles with requests in hand, then one that serves the rest.
  for (int cycle = 0; cycle < 7; ++cycle) {
    ServerOptions so = server_options(queue);
    so.prefetch = 20;
    so.workers = 1;
    so.confirm_replies = confirms;  // then an original is acked once its copy is confirmed
    auto server = Server::start(so, [&](const Request& r) {
                    std::this_thread::sleep_for(20ms);
                    served.fetch_add(1);
                    return Reply::ok(r.body);
                  }).value();
    if (cycle < 6) {
      const int before = served.load();
      ASSERT_TRUE(eventually([&] { return served.load() > before || served.load() == 20; }, 10s));
    } else {
      ASSERT_TRUE(eventually([&] { return served.load() >= 20; }, 30s));
    }
    server->stop();
    dead += server->stats().dead_lettered;
    requeued += server->stats().requeued;
  }
  EXPECT_EQ(dead, 0u) << "a graceful stop's requeue is not a crash";
  EXPECT_GT(requeued, 0u) << "the stops did hand requests back";
  int ok = 0;
  while (auto got = raw.get(replies)) {
    if (got->headers.count("x-rpc-status") == 0) ++ok;
  }
  EXPECT_EQ(ok, 20) << "every request answered once, none dead-lettered";
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutConfirms, GracefulStops, testing::Bool());

TEST_F(Robustness, AnIdleClientAndServerKeepTheirConnectionsByHeartbeats) {
  // Heartbeat 1 s: the broker closes a connection that sends nothing for about two intervals,
  // and each side drops one that hears nothing for two. Idle for four, both must still be up:
  // each sends its heartbeats while it has nothing else to write.
  ConnectionOptions beating = testbroker::options();
  beating.heartbeat = 1s;
  ServerOptions so = server_options(queue);
  so.connection = beating;
  auto server = Server::start(so, [](const Request& r) { return Reply::ok(r.body); }).value();
  auto client = connect_client(beating);
  ASSERT_EQ(client->call(queue, "before"), "before");
  std::this_thread::sleep_for(4s);
  EXPECT_EQ(client->call(queue, "after"), "after");
  EXPECT_EQ(client->stats().reconnects, 0u);
  EXPECT_EQ(server->stats().reconnects, 0u);
}

TEST_F(Robustness, ABusyHealthyConnectionIsNotDeclaredDead) {
  // 400,000 calls at once to a queue that does not exist, heartbeat 1 s: the client publishes
  // flat out while the broker sends a return for each. Nothing here is silence.
  ConnectionOptions beating = testbroker::options();
  beating.heartbeat = 1s;
  auto client = connect_client(beating);
  const int n = 400000;
  std::atomic<int> done{0}, no_route{0};
  std::mutex m;
  std::string other;
  CallOptions o;
  o.timeout = 120s;
  for (int i = 0; i < n; ++i) {
    client->async_call(queue + "-nobody", "x", o, [&](Reply r) {
      if (r.status.message().find("no route") != std::string::npos) {
        no_route.fetch_add(1);
      } else {
        std::lock_guard lock(m);
        if (other.empty()) other = r.status.to_string();
      }
      done.fetch_add(1);
    });
  }
  ASSERT_TRUE(eventually([&] { return done.load() == n; }, 180s)) << done.load() << " of " << n;
  EXPECT_EQ(no_route.load(), n) << "e.g. " << other;
  EXPECT_EQ(client->stats().reconnects, 0u);
  Reply after = client->try_call(queue + "-nobody", "after");
  EXPECT_NE(after.status.message().find("no route"), std::string::npos)
      << "the same connection still answers: " << after.status.to_string();
}
