// Streaming replies: many items, then a status, paced by the reader (Client::stream against
// Service::stream_method on the real broker).
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"
#include "support/tcp_proxy.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

// What the test's producers report.
struct Producer {
  std::atomic<std::uint64_t> written{0};  // items the writer got out
  std::atomic<bool> stopped{false};       // write() said stop
  std::atomic<bool> returned{false};      // the handler returned
};

// Count(n[:size]): items "0".."n-1" (padded to `size` bytes), then ok; Fail(n): n items, then
// not_found; Forever: items until write() says stop.
Service counting(const std::string& queue, std::shared_ptr<Producer> p) {
  Service service(queue);
  service.stream_method("Count", [p](const Request& r, StreamWriter& w) -> Status {
    const auto colon = r.body.find(':');
    const long n = std::stol(r.body.substr(0, colon));
    const std::size_t size = colon == std::string::npos ? 0 : std::stoul(r.body.substr(colon + 1));
    for (long i = 0; i < n; ++i) {
      std::string item = std::to_string(i);
      if (item.size() < size) item.resize(size, '.');
      if (!w.write(std::move(item))) {
        p->stopped = true;
        p->returned = true;
        return Status{StatusCode::cancelled, "stopped"};
      }
      p->written = w.written();
    }
    p->returned = true;
    return {};
  });
  service.stream_method("Fail", [](const Request& r, StreamWriter& w) -> Status {
    for (long i = 0; i < std::stol(r.body); ++i) w.write(std::to_string(i));
    return Status{StatusCode::not_found, "no more"};
  });
  service.stream_method("Forever", [p](const Request&, StreamWriter& w) -> Status {
    for (std::uint64_t i = 0;; ++i) {
      if (!w.write(std::to_string(i))) break;
      p->written = w.written();
    }
    p->stopped = true;
    p->returned = true;
    return {};
  });
  service.method("Plain", [](const Request& r) { return Reply::ok("plain " + r.body); });
  return service;
}

CallOptions window(std::uint32_t items, std::chrono::milliseconds timeout = 60s) {
  CallOptions o;
  o.stream_window = items;
  o.timeout = timeout;
  return o;
}

long rss_kb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class Streams : public testing::Test {
 protected:
  void SetUp() override { server = testbroker::serve(counting(queue, producer)); }
  void TearDown() override {
    server.reset();
    try {
      testbroker::Raw().remove(queue);
    } catch (...) {
    }
  }
  std::string queue = testbroker::unique("stream");
  std::shared_ptr<Producer> producer = std::make_shared<Producer>();
  std::unique_ptr<Server> server;
};

}  // namespace

TEST_F(Streams, ItemsComeInOrderThenTheStatus) {
  auto client = testbroker::connect();
  auto stream = client->stream(queue, "Count", "10", window(4));
  for (int i = 0; i < 10; ++i) {
    auto item = stream->next();
    ASSERT_TRUE(item.has_value()) << "item " << i << ": " << stream->status().to_string();
    EXPECT_EQ(item->body, std::to_string(i));
  }
  EXPECT_FALSE(stream->next().has_value());
  EXPECT_TRUE(stream->status().ok()) << stream->status().to_string();
  EXPECT_TRUE(stream->done());
  EXPECT_EQ(client->stats().streams, 1u);
  EXPECT_EQ(client->stats().stream_items, 10u);
  EXPECT_TRUE(eventually([&] { return server->stats().stream_items == 10; }));
}

TEST_F(Streams, AnErrorAfterItemsEndsTheStreamWithIt) {
  auto client = testbroker::connect();
  auto stream = client->stream(queue, "Fail", "3");
  int got = 0;
  while (auto item = stream->next()) EXPECT_EQ(item->body, std::to_string(got++));
  EXPECT_EQ(got, 3);
  EXPECT_EQ(stream->status().code(), StatusCode::not_found) << stream->status().to_string();
  EXPECT_EQ(stream->status().message(), "no more");
}

TEST_F(Streams, CallbackAndAsyncNextForms) {
  auto client = testbroker::connect();
  std::vector<std::string> items;
  std::promise<Status> done;
  client->stream(
      queue, "Count", "100", window(8), [&](Reply item) { items.push_back(item.body); },
      [&](Status s) { done.set_value(std::move(s)); });
  Status s = done.get_future().get();
  ASSERT_TRUE(s.ok()) << s.to_string();
  ASSERT_EQ(items.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(items[i], std::to_string(i));

  // async_next with a callback (amqprpc::async_next, the Asio form, is in asio_test.cpp).
  auto stream = client->stream(queue, "Count", "20", window(3));
  int n = 0;
  for (;;) {
    std::promise<std::optional<Reply>> next;
    stream->async_next([&](std::optional<Reply> item) { next.set_value(std::move(item)); });
    std::optional<Reply> item = next.get_future().get();
    if (!item) break;
    EXPECT_EQ(item->body, std::to_string(n++));
  }
  EXPECT_EQ(n, 20);
  EXPECT_TRUE(stream->status().ok()) << stream->status().to_string();
}

TEST_F(Streams, ASlowReaderHoldsTheProducerBackAndMemoryStaysBounded) {
  // 100,000 items of 1 KiB (100 MiB if anything buffered them all) to a reader that sleeps
  // now and then; the window is 64 items.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr long kItems = 20'000;  // the same path, at a sanitizer's pace
#else
  constexpr long kItems = 100'000;
#endif
  constexpr std::uint32_t kWindow = 64;
  auto client = testbroker::connect();
  const long rss_before = rss_kb();
  auto stream = client->stream(queue, "Count", std::to_string(kItems) + ":1024",
                               window(kWindow, std::chrono::minutes(10)));
  std::uint64_t ahead_max = 0;
  long read = 0;
  while (auto item = stream->next()) {
    ASSERT_EQ(item->body.substr(0, item->body.find('.')), std::to_string(read))
        << "every item once, in order";
    ++read;
    // The producer never gets more than a window ahead of the reader.
    const std::uint64_t written = producer->written.load();
    if (written > static_cast<std::uint64_t>(read)) {
      ahead_max = std::max<std::uint64_t>(ahead_max, written - static_cast<std::uint64_t>(read));
    }
    if (read % 1000 == 0) std::this_thread::sleep_for(20ms);  // slow, now and then
  }
  ASSERT_TRUE(stream->status().ok()) << stream->status().to_string();
  EXPECT_EQ(read, kItems);
  EXPECT_LE(ahead_max, kWindow) << "the writer ran ahead of its credit";
  const long grown_kb = rss_kb() - rss_before;
  std::printf(
      "STREAM REPORT | %ld items of 1 KiB, window %u | producer at most %llu ahead | "
      "RSS grew %ld KiB (client and server in this process)\n",
      kItems, kWindow, static_cast<unsigned long long>(ahead_max), grown_kb);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Sanitizers keep freed memory in quarantine; elsewhere what grows is far below 100 MiB.
  EXPECT_LT(grown_kb, 32 * 1024);
#endif
}

TEST_F(Streams, CancellingStopsTheProducer) {
  auto client = testbroker::connect();
  auto stream = client->stream(queue, "Forever", "", window(16));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(stream->next().has_value());
  stream->cancel();
  while (stream->next()) {
  }
  EXPECT_EQ(stream->status().code(), StatusCode::cancelled) << stream->status().to_string();
  EXPECT_TRUE(eventually([&] { return producer->returned.load(); }, 30s))
      << "the producer was not stopped";
  EXPECT_TRUE(producer->stopped.load());
}

TEST_F(Streams, DroppingTheStreamCancelsItToo) {
  auto client = testbroker::connect();
  {
    auto stream = client->stream(queue, "Forever", "", window(16));
    ASSERT_TRUE(stream->next().has_value());
  }
  EXPECT_TRUE(eventually([&] { return producer->returned.load(); }, 30s));
}

TEST_F(Streams, TheDeadlineStopsAStreamNobodyReads) {
  auto client = testbroker::connect();
  auto stream = client->stream(queue, "Forever", "", window(8, 500ms));
  // Nobody reads: the producer waits for credit, then the deadline ends both sides.
  EXPECT_TRUE(eventually([&] { return producer->returned.load(); }, 30s));
  int items = 0;
  while (stream->next()) ++items;
  EXPECT_EQ(stream->status().code(), StatusCode::deadline_exceeded) << stream->status().to_string();
  EXPECT_LE(items, 8);
}

TEST_F(Streams, AStreamWhoseServerGoesAwayEndsWithAClearError) {
  // A second server of its own, through a proxy that can cut its connection mid-stream.
  faults::TcpProxy proxy(static_cast<std::uint16_t>(testbroker::options().port));
  auto lone_queue = queue + "-lone";
  auto o = testbroker::server_options();
  o.connection.port = proxy.port();
  o.reconnect.enabled = false;
  auto lone = testbroker::serve(counting(lone_queue, producer), o);
  auto client = testbroker::connect();
  auto stream = client->stream(lone_queue, "Forever", "", window(8, 60s));
  ASSERT_TRUE(stream->next().has_value());
  proxy.cut();
  while (stream->next()) {
  }
  EXPECT_EQ(stream->status().code(), StatusCode::unavailable) << stream->status().to_string();
  EXPECT_NE(stream->status().message().find("broke"), std::string::npos)
      << stream->status().message();
  try {
    testbroker::Raw().remove(lone_queue);
  } catch (...) {
  }
}

TEST_F(Streams, PlainCallsAndStreamsMeetClearly) {
  auto client = testbroker::connect();
  CallOptions o;
  o.method = "Count";
  Reply r = client->try_call(queue, "3", o);
  EXPECT_EQ(r.status.code(), StatusCode::failed_precondition) << r.status.to_string();
  EXPECT_NE(r.status.message().find("Client::stream"), std::string::npos) << r.status.message();
  // A method that answers once reads as a stream of one item.
  auto one = client->stream(queue, "Plain", "x");
  auto item = one->next();
  ASSERT_TRUE(item.has_value()) << one->status().to_string();
  EXPECT_EQ(item->body, "plain x");
  EXPECT_FALSE(one->next().has_value());
  EXPECT_TRUE(one->status().ok());
  // Bad windows are refused before anything is sent.
  auto bad = client->stream(queue, "Count", "1", window(0));
  EXPECT_FALSE(bad->next().has_value());
  EXPECT_EQ(bad->status().code(), StatusCode::invalid_argument);
  // A stream to a queue nobody serves fails fast, like a call.
  auto nobody = client->stream(queue + "-nobody", "Count", "1");
  EXPECT_FALSE(nobody->next().has_value());
  EXPECT_EQ(nobody->status().code(), StatusCode::unavailable);
}

TEST(StreamsNeedWorkers, AServerWithStreamingMethodsAndNoWorkersIsRefused) {
  auto o = testbroker::server_options(0);
  auto p = std::make_shared<Producer>();
  auto s = Server::start(o, counting(testbroker::unique("stream-inline"), p));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(s.status().message().find("worker"), std::string::npos) << s.status().message();
}

TEST_F(Streams, CancellingAtOnceLeavesNoProducerRunning) {
  auto client = testbroker::connect();
  for (int i = 0; i < 20; ++i) {
    // Cancelled before, while or after it is sent: either way it ends, and so does its producer.
    auto stream = client->stream(queue, "Forever", "", window(4));
    stream->cancel();
    while (stream->next()) {
    }
    EXPECT_EQ(stream->status().code(), StatusCode::cancelled) << stream->status().to_string();
  }
  EXPECT_TRUE(eventually([&] { return server->stats().in_hand == 0; }, 30s))
      << "a producer went on after its stream was cancelled";
}

TEST_F(Streams, AProducerStopsWhenItsCallersReplyQueueIsGone) {
  // A caller that vanished without a word (its reply queue went with its connection): the
  // server hears it from its first item, which the broker cannot route and returns, and stops
  // the producer; it would otherwise wait for credit until the stream's deadline (none here).
  testbroker::Raw raw;
  raw.publish(queue, "", testbroker::unique("gone-caller"), "gone-1",
              {{"x-rpc-method", "Forever"}, {"x-rpc-stream-credit", "4"}});
  EXPECT_TRUE(eventually([&] { return producer->returned.load(); }, 20s))
      << "the producer still waits for a caller that is gone (" << producer->written.load()
      << " items written)";
  // Counted on the I/O thread just after it wakes the producer: the count may lag the wake-up.
  EXPECT_TRUE(eventually([&] { return server->stats().streams_orphaned == 1; }))
      << server->stats().streams_orphaned;
  EXPECT_TRUE(eventually([&] { return server->stats().in_hand == 0; }));
}

TEST_F(Streams, AProducerStopsWhenItsDirectReplyToCallerIsGone) {
  // A caller on direct reply-to that vanishes is heard of neither way: the broker drops its
  // items (none comes back) and it sends no more credit. So the server checks on the caller of
  // a stream whose writer waits for credit: while it is there the stream goes on; once it is
  // gone, the producer stops instead of waiting until the stream's deadline (none here).
  auto caller = std::make_unique<testbroker::Raw>();
  caller->consume("amq.rabbitmq.reply-to");
  caller->publish(queue, "", "amq.rabbitmq.reply-to", testbroker::unique("drt-caller"),
                  {{"x-rpc-method", "Forever"}, {"x-rpc-stream-credit", "2"}});
  // Its two items written, the writer waits. The second check is sent only once the first was
  // answered, and that answer (the caller is there) left the stream alone.
  ASSERT_TRUE(eventually([&] { return server->stats().stream_probes >= 2; }, 30s))
      << "probes: " << server->stats().stream_probes;
  EXPECT_FALSE(producer->returned.load()) << "the stream of a caller still there was stopped";
  EXPECT_EQ(producer->written.load(), 2u);
  EXPECT_EQ(server->stats().streams_orphaned, 0u);
  caller.reset();  // gone without a word
  EXPECT_TRUE(eventually([&] { return producer->returned.load(); }, 20s))
      << "the producer still waits for a caller that is gone";
  // Counted on the I/O thread just after it wakes the producer: the count may lag the wake-up.
  EXPECT_TRUE(eventually([&] { return server->stats().streams_orphaned == 1; }))
      << server->stats().streams_orphaned;
  EXPECT_TRUE(eventually([&] { return server->stats().in_hand == 0; }));
}

TEST(StreamsAndGathers, CreditReachesABusyServerPastTheGathersWaitingForItsWorker) {
  // One worker, busy with a stream; gathers (acked, prefetch-bound) queue up for that worker.
  // The stream's credit must still reach the server, or neither would ever finish.
  const std::string queue = testbroker::unique("stream-busy");
  Service service(queue);
  service.stream_method("Count", [](const Request& r, StreamWriter& w) {
    for (long i = 0; i < std::stol(r.body); ++i) {
      if (!w.write(std::to_string(i))) break;
    }
    return Status{};
  });
  service.method("Ping", [](const Request&) { return Reply::ok("pong"); });
  auto o = testbroker::server_options(1);
  o.gather_prefetch = 1;
  auto server = testbroker::serve(std::move(service), o);
  auto client = testbroker::connect();
  auto stream = client->stream(queue, "Count", "200", window(2, 60s));
  ASSERT_TRUE(stream->next().has_value());  // the worker is the stream's now
  std::vector<std::future<GatherResult>> gathers;
  for (int i = 0; i < 3; ++i) gathers.push_back(client->async_gather(queue, "Ping", "", {}));
  long items = 1;
  while (stream->next()) ++items;
  EXPECT_TRUE(stream->status().ok()) << stream->status().to_string();
  EXPECT_EQ(items, 200);
  for (auto& g : gathers) {
    GatherResult r = g.get();
    EXPECT_TRUE(r.status.ok()) << r.status.to_string();
  }
  server.reset();
  testbroker::Raw().remove(queue);
}
