// Calls as Asio operations against the broker: co_await in a coroutine (resuming on the
// coroutine's executor, not the client's I/O thread), futures, deferred operations, typed calls,
// Asio's per-operation cancellation cancelling the call, a retry policy followed, and gathers
// and streams as Asio operations.
#include "amqprpc/asio.hpp"

#include <gtest/gtest.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <future>
#include <thread>

#include "amqprpc/json.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

class AsioCalls : public testing::Test {
 protected:
  void SetUp() override {
    Service s(queue);
    s.default_handler([](const Request& r) { return Reply::ok("echo:" + r.body); });
    s.method<std::vector<int>, int>("Sum", [](const std::vector<int>& v) {
      int total = 0;
      for (int x : v) total += x;
      return total;
    });
    // Fails a call's first attempt: only a retry policy gets an answer.
    s.method("Flaky", [](const Request& r) {
      if (r.headers.count("x-rpc-previous-attempts") == 0) {
        return Reply::error(StatusCode::unavailable, "first attempt");
      }
      return Reply::ok("flaky:" + r.body);
    });
    s.stream_method("Count", [](const Request& r, StreamWriter& w) {
      for (long i = 0; i < std::stol(r.body); ++i) w.write(std::to_string(i));
      return Status{};
    });
    s.method("Slow", [this](const Request&) {
      slow_started = true;
      released.wait();
      return Reply::ok("slow");
    });
    ServerOptions o;
    o.connection = testbroker::options();
    o.workers = 2;
    auto started = Server::start(o, std::move(s));
    ASSERT_TRUE(started.ok()) << started.status().to_string();
    server = std::move(*started);
    c = testbroker::connect();
  }
  void TearDown() override {
    release.set_value();
    server.reset();
    testbroker::Raw().remove(queue);
  }
  std::string queue = testbroker::unique("asio");
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> slow_started{false};
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> c;
};

}  // namespace

TEST_F(AsioCalls, ACoroutineAwaitsCallsAndResumesOnItsOwnExecutor) {
  asio::io_context ctx;
  std::string got;
  Result<int> sum = Status{StatusCode::unknown, "not run"};
  std::thread::id resumed_on;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        // Named arguments, no literals or `{}` temporaries, in co_await expressions: GCC 12
        // miscompiles those (bug 100611 and kin; see amqprpc/asio.hpp).
        const std::string body = "hi", method = "Sum";
        const std::vector<int> terms{1, 2, 3};
        const CallOptions options;
        Reply r = co_await async_call(*c, queue, body, options, asio::use_awaitable);
        resumed_on = std::this_thread::get_id();
        got = r.body;
        sum =
            co_await async_typed_call<int>(*c, queue, method, terms, options, asio::use_awaitable);
      },
      asio::detached);
  ctx.run();  // returns once the coroutine is done: pending calls keep it running
  EXPECT_EQ(got, "echo:hi");
  EXPECT_EQ(resumed_on, std::this_thread::get_id()) << "the thread running the io_context";
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  EXPECT_EQ(*sum, 6);
}

TEST_F(AsioCalls, FuturesDeferredOperationsAndCallbacksWork) {
  std::future<Reply> f = async_call(*c, queue, "f", {}, asio::use_future);
  ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(f.get().body, "echo:f");

  auto deferred = async_call(*c, queue, "d", {}, asio::experimental::deferred);
  std::future<Reply> later = std::move(deferred)(asio::use_future);
  ASSERT_EQ(later.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(later.get().body, "echo:d");

  std::promise<std::string> cb;
  async_call(*c, queue, "cb", {}, [&](Reply r) { cb.set_value(r.body); });  // system executor
  auto cb_future = cb.get_future();
  ASSERT_EQ(cb_future.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(cb_future.get(), "echo:cb");
}

TEST_F(AsioCalls, AsiosCancellationCancelsTheCall) {
  asio::io_context ctx;
  asio::cancellation_signal signal;
  std::optional<Reply> got;
  CallOptions slow;
  slow.method = "Slow";
  async_call(*c, queue, "", slow,
             asio::bind_cancellation_slot(signal.slot(),
                                          asio::bind_executor(ctx, [&](Reply r) { got = r; })));
  ASSERT_TRUE(eventually([&] { return slow_started.load(); }));
  signal.emit(asio::cancellation_type::terminal);
  ctx.run();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->status.code(), StatusCode::cancelled) << got->status.to_string();
}

TEST_F(AsioCalls, AnAsioCallFollowsItsRetryPolicy) {
  CallOptions flaky;
  flaky.method = "Flaky";
  flaky.idempotent = true;
  flaky.retry = RetryPolicy{};
  flaky.retry->max_attempts = 2;
  flaky.retry->initial_backoff = 5ms;
  std::future<Reply> f = async_call(*c, queue, "r", flaky, asio::use_future);
  ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
  Reply r = f.get();
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "flaky:r");
  EXPECT_EQ(c->stats().retries, 1u);
}

TEST_F(AsioCalls, GathersAndStreamItemsAsAsioOperations) {
  std::future<GatherResult> all = async_gather(*c, queue, "", "g", {}, asio::use_future);
  ASSERT_EQ(all.wait_for(60s), std::future_status::ready);
  GatherResult g = all.get();
  ASSERT_TRUE(g.status.ok()) << g.status.to_string();
  ASSERT_EQ(g.replies.size(), 1u);
  EXPECT_EQ(g.replies[0].instance, server->instance());
  EXPECT_EQ(g.replies[0].reply.body, "echo:g");

  // A coroutine reads a stream's items as they come, resuming on its own executor.
  auto stream = c->stream(queue, "Count", "5");
  asio::io_context ctx;
  std::vector<std::string> items;
  std::thread::id resumed_on;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        while (std::optional<Reply> item = co_await async_next(*stream, asio::use_awaitable)) {
          resumed_on = std::this_thread::get_id();
          items.push_back(item->body);
        }
      },
      asio::detached);
  ctx.run();
  EXPECT_EQ(items, (std::vector<std::string>{"0", "1", "2", "3", "4"}));
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
  EXPECT_TRUE(stream->status().ok()) << stream->status().to_string();
}
