// Coroutine handlers against the broker (amqprpc/asio.hpp): raw and typed coroutine methods and
// their errors, a waiting handler holding no worker thread, the caller's deadline cancelling the
// coroutine, and nested calls inheriting the caller's deadline.
//
// The coroutines here take their arguments by reference and put no temporaries in co_await
// expressions: GCC 12 miscompiles those (see amqprpc/asio.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "amqprpc/asio.hpp"
#include "amqprpc/json.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

// An io_context run by one thread for as long as it lives.
class IoThread {
 public:
  IoThread()
      : thread_([this] {
          io_.run();
          finished_ = true;
        }) {}
  ~IoThread() {
    guard_.reset();
    // A coroutine a failed test left waiting must not hang the suite.
    if (!eventually([this] { return finished_.load(); }, 10s)) io_.stop();
    thread_.join();
  }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  asio::io_context::executor_type executor() { return io_.get_executor(); }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(io_);
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

std::unique_ptr<Client> client(std::chrono::milliseconds default_timeout = 30s) {
  ClientOptions o;
  o.default_timeout = default_timeout;
  return testbroker::connect(std::move(o));
}

std::string deadline_header(const Request& r) {
  auto it = r.headers.find("x-rpc-deadline");
  return it == r.headers.end() ? std::string() : it->second;
}

std::int64_t epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Calls are made from the test thread: the coroutines live on the IoThread's executor, which
// outlives the servers (members are destroyed after the test body's locals).
class AsyncCoroutines : public testing::Test {
 protected:
  void TearDown() override {
    for (const auto& q : queues_) {
      try {
        testbroker::Raw().remove(q);
      } catch (...) {
      }
    }
  }
  std::string queue(const std::string& prefix) {
    queues_.push_back(testbroker::unique(prefix));
    return queues_.back();
  }

  IoThread io;

 private:
  std::vector<std::string> queues_;
};

}  // namespace

TEST_F(AsyncCoroutines, CoroutineMethodsAnswerWithTheirReplyOrTheirError) {
  const std::string q = queue("coro");
  std::atomic<int> sum_runs{0};
  Service s(q);
  coroutine_default_handler(s, io.executor(), [](const Request& r) -> asio::awaitable<Reply> {
    Reply reply = Reply::ok("default:" + r.body);
    co_return reply;
  });
  coroutine_method(s, "Echo", io.executor(), [](const Request& r) -> asio::awaitable<Reply> {
    // Suspends before reading the request: it outlives the handler's first return.
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, 10ms);
    co_await timer.async_wait(asio::use_awaitable);
    Reply reply = Reply::ok("echo:" + r.body);
    co_return reply;
  });
  coroutine_method(s, "Fail", io.executor(), [](const Request& r) -> asio::awaitable<Reply> {
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, 1ms);
    co_await timer.async_wait(asio::use_awaitable);
    if (r.body == "rpc") throw RpcError(Status{StatusCode::permission_denied, "not you"});
    throw std::runtime_error("boom: " + r.body);
  });
  coroutine_method<std::vector<int>, int>(
      s, "Sum", io.executor(),
      [&sum_runs](const std::vector<int>& terms, const Request&) -> asio::awaitable<int> {
        ++sum_runs;
        int total = 0;
        for (int t : terms) total += t;
        co_return total;
      });
  coroutine_method<int, int>(s, "Half", io.executor(),
                             [](const int& n) -> asio::awaitable<Result<int>> {
                               Result<int> out = n / 2;
                               if (n % 2 != 0) {
                                 out = Status{StatusCode::failed_precondition, "odd"};
                               }
                               co_return out;
                             });
  auto server = testbroker::serve(std::move(s), testbroker::server_options());
  auto c = client();

  EXPECT_EQ(c->call(q, "plain"), "default:plain");
  CallOptions echo;
  echo.method = "Echo";
  EXPECT_EQ(c->call(q, "hi", echo), "echo:hi");

  CallOptions fail;
  fail.method = "Fail";
  Reply boom = c->try_call(q, "x", fail);
  EXPECT_EQ(boom.status.code(), StatusCode::internal) << boom.status.to_string();
  EXPECT_EQ(boom.status.message(), "boom: x");
  Reply refused = c->try_call(q, "rpc", fail);
  EXPECT_EQ(refused.status.code(), StatusCode::permission_denied) << refused.status.to_string();
  EXPECT_EQ(refused.status.message(), "not you");

  const std::vector<int> terms{1, 2, 3, 4};
  Result<int> sum = typed_call<int>(*c, q, "Sum", terms);
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  EXPECT_EQ(*sum, 10);
  Result<int> half = typed_call<int>(*c, q, "Half", 8);
  ASSERT_TRUE(half.ok()) << half.status().to_string();
  EXPECT_EQ(*half, 4);
  Result<int> odd = typed_call<int>(*c, q, "Half", 7);
  EXPECT_EQ(odd.status().code(), StatusCode::failed_precondition) << odd.status().to_string();
  EXPECT_EQ(odd.status().message(), "odd");

  CallOptions bad;
  bad.method = "Sum";
  bad.content_type = "application/json";
  Reply undecodable = c->try_call(q, "not json", bad);
  EXPECT_EQ(undecodable.status.code(), StatusCode::invalid_argument)
      << undecodable.status.to_string();
  EXPECT_NE(undecodable.status.message().find("method 'Sum'"), std::string::npos)
      << undecodable.status.message();
  EXPECT_EQ(sum_runs.load(), 1) << "the handler does not run for a request that does not decode";
}

TEST_F(AsyncCoroutines, AWaitingHandlerHoldsNoWorkerThread) {
  // One worker thread, 200 requests whose handlers each await a nested call to another
  // server: all 200 are in progress at once.
  constexpr std::size_t kRequests = 200;
  const std::string a_queue = queue("coro-a");
  const std::string b_queue = queue("coro-b");

  // B holds the requests until it holds all 200, then answers them all. A watchdog answers
  // whatever it holds after 60 s, so a failure shows in the counts instead of hanging.
  struct Holder {
    std::mutex m;
    std::condition_variable_any cv;
    std::vector<Responder> held;
    std::size_t max_held = 0;
    bool open = false;  // answering at once from now on
  };
  auto holder = std::make_shared<Holder>();
  auto answer = [](std::vector<Responder>& responders) {
    for (auto& r : responders) r.reply(Reply::ok("B:" + r.request().body));
  };
  Service b(b_queue);
  b.async_default_handler([holder, answer](const Request&, Responder responder) {
    std::vector<Responder> ready;
    {
      std::lock_guard lock(holder->m);
      holder->held.push_back(std::move(responder));
      holder->max_held = std::max(holder->max_held, holder->held.size());
      if (holder->open || holder->held.size() == kRequests) {
        holder->open = true;
        ready.swap(holder->held);
        holder->cv.notify_all();
      }
    }
    answer(ready);
  });
  std::jthread watchdog([holder, answer](std::stop_token stop) {
    std::vector<Responder> ready;
    {
      std::unique_lock lock(holder->m);
      if (holder->cv.wait_for(lock, stop, 60s, [&] { return holder->open; })) return;
      holder->open = true;
      ready.swap(holder->held);
    }
    answer(ready);
  });
  ServerOptions b_options = testbroker::server_options();
  b_options.prefetch = 256;
  auto server_b = testbroker::serve(std::move(b), std::move(b_options));

  auto client_a = client(60s);
  std::atomic<int> in_progress{0}, max_in_progress{0};
  Service a(a_queue);
  coroutine_default_handler(
      a, io.executor(),
      [&client_a, &b_queue, &in_progress,
       &max_in_progress](const Request& request) -> asio::awaitable<Reply> {
        const int now = ++in_progress;
        int seen = max_in_progress.load();
        while (now > seen && !max_in_progress.compare_exchange_weak(seen, now)) {
        }
        const CallOptions options = request.context.call_options();
        Reply nested =
            co_await async_call(*client_a, b_queue, request.body, options, asio::use_awaitable);
        --in_progress;
        if (nested.status.ok()) nested.body = "A:" + nested.body;
        co_return nested;
      });
  ServerOptions a_options = testbroker::server_options();
  a_options.workers = 1;
  a_options.prefetch = 256;
  auto server_a = testbroker::serve(std::move(a), std::move(a_options));

  auto c = client();
  CallOptions call;
  call.timeout = 90s;
  std::vector<std::future<Reply>> replies;
  for (std::size_t i = 0; i < kRequests; ++i) {
    replies.push_back(c->async_call(a_queue, std::to_string(i), call));
  }
  std::size_t ok = 0;
  for (std::size_t i = 0; i < kRequests; ++i) {
    ASSERT_EQ(replies[i].wait_for(120s), std::future_status::ready) << "request " << i;
    Reply r = replies[i].get();
    if (r.status.ok() && r.body == "A:B:" + std::to_string(i)) {
      ++ok;
    } else {
      ADD_FAILURE() << "request " << i << ": " << r.status.to_string() << " " << r.body;
    }
  }
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(max_in_progress.load(), static_cast<int>(kRequests))
      << "A's handlers in progress at once, on one worker thread";
  std::lock_guard lock(holder->m);
  EXPECT_EQ(holder->max_held, kRequests) << "nested calls B held at once";
}

TEST_F(AsyncCoroutines, TheCallersDeadlineCancelsTheCoroutine) {
  const std::string q = queue("coro-cancel");
  auto waited = std::make_shared<std::promise<std::error_code>>();
  auto waited_future = waited->get_future();
  Service s(q);
  coroutine_method(s, "Sleep", io.executor(), [waited](const Request&) -> asio::awaitable<Reply> {
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, 60s);
    std::error_code ec;
    auto token = asio::redirect_error(asio::use_awaitable, ec);
    co_await timer.async_wait(token);
    waited->set_value(ec);
    Reply reply = Reply::ok("late");
    co_return reply;
  });
  auto server = testbroker::serve(std::move(s), testbroker::server_options());
  auto c = client();

  CallOptions sleep;
  sleep.method = "Sleep";
  sleep.timeout = 1s;
  const auto sent = std::chrono::steady_clock::now();
  Reply r = c->try_call(q, "", sleep);
  // The server cancels at the caller's deadline, the instant the client gives up: the answer
  // the cancelled coroutine sends at once may still beat the client's timer.
  EXPECT_TRUE(r.status.code() == StatusCode::deadline_exceeded || r.body == "late")
      << r.status.to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 10s);
  ASSERT_EQ(waited_future.wait_for(30s), std::future_status::ready)
      << "the coroutine's wait was not cancelled";
  EXPECT_EQ(waited_future.get(), asio::error::operation_aborted);
  // The coroutine then answers (a reply the client drops when it came too late).
  EXPECT_TRUE(eventually([&] { return server->stats().replied_ok == 1; }))
      << server->stats().replied_ok;
}

TEST_F(AsyncCoroutines, ANestedCallInheritsTheCallersDeadline) {
  const std::string a_queue = queue("coro-a");
  const std::string b_queue = queue("coro-b");
  std::promise<std::string> a_saw, b_saw;
  auto a_header = a_saw.get_future();
  auto b_header = b_saw.get_future();

  Service b(b_queue);
  b.default_handler([&b_saw](const Request& r) {
    b_saw.set_value(deadline_header(r));
    return Reply::ok("b");
  });
  auto server_b = testbroker::serve(std::move(b), testbroker::server_options());

  auto client_a = client(60s);  // a fresh deadline would be 60 s away, the caller's is 20 s
  Service a(a_queue);
  coroutine_default_handler(
      a, io.executor(),
      [&client_a, &b_queue, &a_saw](const Request& request) -> asio::awaitable<Reply> {
        a_saw.set_value(deadline_header(request));
        const CallOptions options = request.context.call_options();
        Reply nested =
            co_await async_call(*client_a, b_queue, request.body, options, asio::use_awaitable);
        co_return nested;
      });
  auto server_a = testbroker::serve(std::move(a), testbroker::server_options());

  auto c = client();
  CallOptions call;
  call.timeout = 20s;
  const std::int64_t sent = epoch_ms();
  Reply r = c->try_call(a_queue, "x", call);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "b");
  ASSERT_EQ(a_header.wait_for(1s), std::future_status::ready);
  ASSERT_EQ(b_header.wait_for(1s), std::future_status::ready);
  const std::string a_deadline = a_header.get(), b_deadline = b_header.get();
  ASSERT_FALSE(a_deadline.empty());
  ASSERT_FALSE(b_deadline.empty());
  EXPECT_NEAR(std::stoll(a_deadline), sent + 20'000, 2'000) << "the caller's deadline";
  EXPECT_NEAR(std::stoll(b_deadline), std::stoll(a_deadline), 5)
      << "the nested call carries the caller's deadline, not one of its own";
}

TEST_F(AsyncCoroutines, ACancelledCoroutineCancelsTheCallItAwaits) {
  // The nested call has options of its own (not the context's, whose stop token would cancel
  // it anyway): Asio's cancellation of the coroutine reaches the call it awaits.
  const std::string a_queue = queue("coro-a");
  const std::string b_queue = queue("coro-b");
  struct Held {
    std::mutex m;
    std::vector<Responder> responders;
  };
  auto held = std::make_shared<Held>();
  Service b(b_queue);
  b.async_default_handler([held](const Request&, Responder r) {
    std::lock_guard lock(held->m);
    held->responders.push_back(std::move(r));
  });
  auto server_b = testbroker::serve(std::move(b), testbroker::server_options());

  auto nested = std::make_shared<std::promise<Status>>();
  auto nested_status = nested->get_future();
  auto client_a = client(60s);
  Service a(a_queue);
  coroutine_default_handler(
      a, io.executor(),
      [&client_a, &b_queue, nested](const Request& request) -> asio::awaitable<Reply> {
        CallOptions options;
        options.timeout = 60s;
        Reply reply =
            co_await async_call(*client_a, b_queue, request.body, options, asio::use_awaitable);
        nested->set_value(reply.status);
        co_return reply;
      });
  auto server_a = testbroker::serve(std::move(a), testbroker::server_options());

  auto c = client();
  CallOptions call;
  call.timeout = 1s;
  c->try_call(a_queue, "x", call);
  ASSERT_EQ(nested_status.wait_for(30s), std::future_status::ready)
      << "the awaited call was not cancelled";
  EXPECT_EQ(nested_status.get().code(), StatusCode::cancelled);
  std::vector<Responder> responders;
  {
    std::lock_guard lock(held->m);
    responders.swap(held->responders);  // a Responder kept in the handler's state pins the server
  }
  EXPECT_EQ(responders.size(), 1u);
  for (auto& r : responders) r.reply(Reply::ok("too late"));
}
