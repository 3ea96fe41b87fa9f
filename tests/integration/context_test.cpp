// Asynchronous handlers, the call context and interceptors against the real broker: a
// Responder answers from any thread and exactly once, a dropped one still answers; waiting
// handlers hold no worker; the caller's deadline reaches nested calls and cancels the handler
// when it passes; a graceful stop waits for asynchronous handlers, then cancels them; client and
// server interceptors run in order, add headers and short-circuit; every request and reply
// carries the W3C trace context.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/interceptor.hpp"
#include "amqprpc/server.hpp"
#include "amqprpc/service.hpp"
#include "amqprpc/tracing.hpp"
#include "protocol/wire.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;
using testbroker::serve;
using testbroker::server_options;

namespace {

std::unique_ptr<Client> client(std::chrono::milliseconds default_timeout = 30s,
                               std::vector<std::shared_ptr<ClientInterceptor>> chain = {}) {
  ClientOptions o;
  o.default_timeout = default_timeout;
  o.interceptors = std::move(chain);
  return testbroker::connect(std::move(o));
}

CallOptions with_timeout(std::chrono::milliseconds t) {
  CallOptions o;
  o.timeout = t;
  return o;
}

// Responders an asynchronous handler set aside, to be answered by the test.
struct Held {
  std::mutex mutex;
  std::vector<Responder> responders;
  AsyncHandler handler() {
    return [this](const Request&, Responder r) {
      std::lock_guard lock(mutex);
      responders.push_back(std::move(r));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return responders.size();
  }
  void answer_all(const std::string& prefix) {
    std::lock_guard lock(mutex);
    for (auto& r : responders) r.reply(Reply::ok(prefix + r.request().body));
    responders.clear();
  }
};

class ContextTest : public ::testing::Test {
 protected:
  void TearDown() override {
    testbroker::Raw raw;
    for (const auto& q : queues) raw.remove(q);
  }
  std::string queue(const std::string& prefix = "ctx") {
    queues.push_back(testbroker::unique(prefix));
    return queues.back();
  }
  std::vector<std::string> queues;
};

}  // namespace

TEST_F(ContextTest, AResponderAnswersFromAnotherThreadAndOnlyOnce) {
  const std::string q = queue();
  std::vector<std::thread> threads;
  std::atomic<int> second_reply_accepted{-1};
  Service s(q);
  s.async_default_handler([&](const Request&, Responder r) {
    threads.emplace_back([&second_reply_accepted, r]() mutable {
      std::this_thread::sleep_for(20ms);
      r.reply(Reply::ok("later:" + r.request().body));
      second_reply_accepted = r.reply(Reply::ok("again")) ? 1 : 0;
    });
  });
  auto server = serve(std::move(s));
  auto c = client();
  EXPECT_EQ(c->call(q, "x"), "later:x");
  ASSERT_TRUE(eventually([&] { return second_reply_accepted.load() >= 0; }));
  EXPECT_EQ(second_reply_accepted.load(), 0) << "the first reply wins";
  server->stop();
  for (auto& t : threads) t.join();
  EXPECT_EQ(server->stats().replied_ok, 1u);
}

TEST_F(ContextTest, ADroppedResponderAndAThrowingHandlerStillAnswer) {
  const std::string q = queue();
  Service s(q);
  s.async_method("Drop", [](const Request&, Responder) {});
  s.async_method("Throw", [](const Request&, Responder) -> void {
    throw RpcError(Status{StatusCode::failed_precondition, "not now"});
  });
  s.async_method("AnswerThenThrow", [](const Request&, Responder r) {
    r.reply(Reply::ok("answered"));
    throw std::runtime_error("too late to matter");
  });
  auto server = serve(std::move(s), server_options(/*workers=*/0));  // inline: the I/O thread
  auto c = client();
  CallOptions o;
  o.method = "Drop";
  Reply dropped = c->try_call(q, "", o);
  EXPECT_EQ(dropped.status.code(), StatusCode::internal);
  EXPECT_NE(dropped.status.message().find("dropped its Responder"), std::string::npos);
  o.method = "Throw";
  Reply thrown = c->try_call(q, "", o);
  EXPECT_EQ(thrown.status.code(), StatusCode::failed_precondition);
  EXPECT_EQ(thrown.status.message(), "not now");
  o.method = "AnswerThenThrow";
  EXPECT_EQ(c->call(q, "", o), "answered");
}

TEST_F(ContextTest, WaitingHandlersHoldNoWorkerThread) {
  // One worker, 50 requests: every one is in hand at once, which a handler holding its worker
  // while it waits could not allow.
  const std::string q = queue();
  Held held;
  Service s(q);
  s.async_default_handler(held.handler());
  ServerOptions o = server_options(/*workers=*/1);
  o.prefetch = 64;
  auto server = serve(std::move(s), o);
  auto c = client();
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 50; ++i) calls.push_back(c->async_call(q, std::to_string(i)));
  EXPECT_TRUE(eventually([&] { return held.size() == 50; })) << held.size() << " in hand";
  EXPECT_EQ(server->stats().in_hand, 50u);
  held.answer_all("done:");
  for (int i = 0; i < 50; ++i) {
    Reply r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_EQ(r.body, "done:" + std::to_string(i));
  }
  EXPECT_EQ(server->stats().in_hand, 0u);
}

TEST_F(ContextTest, ANestedCallInheritsTheCallersDeadlineAndTrace) {
  // client -> A -> B. A's own client would give the nested call 60 s; B must see the deadline
  // the client set (20 s), and B's request must be a child of A's server span.
  const std::string qa = queue("ctx-a"), qb = queue("ctx-b");
  auto a_client = client(60s);
  std::mutex mutex;
  Headers at_a, at_b;
  Context ctx_a, ctx_b;
  Service b(qb);
  b.default_handler([&](const Request& r) {
    std::lock_guard lock(mutex);
    at_b = r.headers;
    ctx_b = r.context;
    return Reply::ok("b:" + r.body);
  });
  Service a(qa);
  a.default_handler([&](const Request& r) {
    {
      std::lock_guard lock(mutex);
      at_a = r.headers;
      ctx_a = r.context;
    }
    return Reply::ok("a:" + a_client->call(qb, r.body, r.context.call_options()));
  });
  auto server_b = serve(std::move(b));
  auto server_a = serve(std::move(a));
  auto c = client();
  Reply reply = c->try_call(qa, "x", with_timeout(20s));
  ASSERT_TRUE(reply.status.ok()) << reply.status.to_string();
  EXPECT_EQ(reply.body, "a:b:x");

  std::lock_guard lock(mutex);
  auto deadline_a = detail::wire::int_header(at_a, detail::wire::kDeadlineHeader);
  auto deadline_b = detail::wire::int_header(at_b, detail::wire::kDeadlineHeader);
  ASSERT_TRUE(deadline_a && deadline_b);
  EXPECT_LE(std::abs(*deadline_b - *deadline_a), 5) << "B got a deadline of its own";
  ASSERT_TRUE(ctx_b.remaining().has_value());
  EXPECT_LE(*ctx_b.remaining(), 20s);

  // Trace: the client's span -> A's server span -> A's call -> B's server span, one trace.
  auto sent = TraceContext::parse(at_a.at("traceparent"));
  ASSERT_TRUE(sent);
  EXPECT_EQ(ctx_a.trace().trace_id, sent->trace_id);
  EXPECT_EQ(ctx_a.parent_span_id(), sent->span_id);
  auto nested = TraceContext::parse(at_b.at("traceparent"));
  ASSERT_TRUE(nested);
  EXPECT_EQ(nested->trace_id, sent->trace_id);
  EXPECT_NE(nested->span_id, ctx_a.trace().span_id) << "the nested call is a span of its own";
  EXPECT_EQ(ctx_b.parent_span_id(), nested->span_id);
  EXPECT_EQ(ctx_b.trace().trace_id, sent->trace_id);
  // The reply leg names the server span that answered.
  auto answered_by = TraceContext::parse(reply.headers.at("traceparent"));
  ASSERT_TRUE(answered_by);
  EXPECT_EQ(answered_by->trace_id, sent->trace_id);
  EXPECT_EQ(answered_by->span_id, ctx_a.trace().span_id);
}

TEST_F(ContextTest, AHandlerSeesItsCancellationWhenTheCallersDeadlinePasses) {
  const std::string q = queue();
  std::atomic<bool> cancelled{false};
  std::atomic<bool> left{false};
  Service s(q);
  s.default_handler([&](const Request& r) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    std::stop_token token = r.context.cancellation();
    // Bounded: a broken cancellation fails the test instead of hanging it.
    cv.wait_for(lock, token, 60s, [] { return false; });
    cancelled = r.context.cancelled() && r.context.remaining() == 0ms;
    left = true;
    return Reply::error(StatusCode::cancelled, "gave up");
  });
  auto server = serve(std::move(s));
  auto c = client();
  Reply r = c->try_call(q, "", with_timeout(500ms));
  // The client's timer and the server's cancellation fire at the same deadline: either ends it.
  EXPECT_TRUE(r.status.code() == StatusCode::deadline_exceeded ||
              r.status.code() == StatusCode::cancelled)
      << r.status.to_string();
  ASSERT_TRUE(eventually([&] { return left.load(); }, 90s));
  EXPECT_TRUE(cancelled.load());
}

TEST_F(ContextTest, AnAbsoluteDeadlineAlreadyPassedFailsTheCallUnsent) {
  const std::string q = queue();
  Service s(q);
  s.default_handler([](const Request&) { return Reply::ok("served"); });
  auto server = serve(std::move(s));
  auto c = client();
  CallOptions o;
  o.deadline = std::chrono::steady_clock::now() - 1ms;
  EXPECT_EQ(c->try_call(q, "", o).status.code(), StatusCode::deadline_exceeded);
  EXPECT_EQ(c->call(q, ""), "served");
  EXPECT_EQ(server->stats().received, 1u) << "the first call was not sent";
}

TEST_F(ContextTest, AGracefulStopWaitsForAsynchronousHandlers) {
  const std::string q = queue();
  Held held;
  Service s(q);
  s.async_default_handler(held.handler());
  auto server = serve(std::move(s));
  auto c = client();
  auto call = c->async_call(q, "x");
  ASSERT_TRUE(eventually([&] { return held.size() == 1; }));
  auto stopped = std::async(std::launch::async, [&] { server->stop(); });
  // The stop cannot end while the request is in hand (nothing here depends on how long).
  EXPECT_EQ(stopped.wait_for(300ms), std::future_status::timeout);
  held.answer_all("answered during the stop:");
  stopped.get();
  Reply r = call.get();
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "answered during the stop:x");
}

TEST_F(ContextTest, AStopPastItsGraceCancelsTheHandlersInHand) {
  const std::string q = queue();
  std::mutex mutex;
  std::vector<std::unique_ptr<std::stop_callback<std::function<void()>>>> watches;
  Service s(q);
  s.async_default_handler([&](const Request& req, Responder r) {
    // Answers only when cancelled.
    std::lock_guard lock(mutex);
    watches.push_back(std::make_unique<std::stop_callback<std::function<void()>>>(
        req.context.cancellation(), std::function<void()>([r]() mutable {
          r.fail({StatusCode::cancelled, "stopping"});
        })));
  });
  ServerOptions o = server_options();
  o.stop_grace = 200ms;
  auto server = serve(std::move(s), o);
  auto c = client();
  auto call = c->async_call(q, "x");
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return watches.size() == 1;
  }));
  server->stop();
  Reply r = call.get();
  EXPECT_EQ(r.status.code(), StatusCode::cancelled) << r.status.to_string();
  EXPECT_EQ(r.status.message(), "stopping");
  std::lock_guard lock(mutex);
  watches.clear();
}

namespace {

// Records its hooks in a shared log, and can add a header or refuse.
class Recorder final : public ClientInterceptor, public ServerInterceptor {
 public:
  Recorder(std::string name, std::vector<std::string>& log, std::mutex& mutex)
      : name_(std::move(name)), log_(log), mutex_(mutex) {}
  Status refuse;
  std::string header;  // added to requests (client) or replies (server)

  Status before_call(ClientCall& call, std::any& state) override {
    note("before " + name_);
    state = name_;
    if (!header.empty()) call.options.headers[header] = name_;
    return refuse;
  }
  void after_call(const ClientCall&, Reply& reply, std::chrono::nanoseconds latency,
                  std::any& state) override {
    note("after " + std::any_cast<std::string>(state) + " " +
         std::string(to_string(reply.status.code())) + (latency > 0ns ? "" : " (no latency)"));
  }
  Status before_handler(const Request& request, std::any&) override {
    note("server before " + name_ + " caller-header=" +
         (request.headers.count("x-tenant") ? request.headers.at("x-tenant") : "-"));
    return refuse;
  }
  void after_handler(const Request&, Reply& reply, std::chrono::nanoseconds, std::any&) override {
    note("server after " + name_ + " " + std::string(to_string(reply.status.code())));
    if (!header.empty()) reply.headers[header] = name_;
  }

 private:
  void note(std::string line) {
    std::lock_guard lock(mutex_);
    log_.push_back(std::move(line));
  }
  std::string name_;
  std::vector<std::string>& log_;
  std::mutex& mutex_;
};

}  // namespace

TEST_F(ContextTest, ClientInterceptorsRunInOrderAddHeadersAndSeeTheOutcome) {
  const std::string q = queue();
  std::mutex mutex;
  std::vector<std::string> log;
  auto first = std::make_shared<Recorder>("first", log, mutex);
  auto second = std::make_shared<Recorder>("second", log, mutex);
  second->header = "x-tenant";
  Service s(q);
  s.default_handler([](const Request& r) { return Reply::ok(r.headers.at("x-tenant")); });
  auto server = serve(std::move(s));
  auto c = client(30s, {first, second});
  EXPECT_EQ(c->call(q, ""), "second");
  std::lock_guard lock(mutex);
  EXPECT_EQ(log, (std::vector<std::string>{"before first", "before second", "after second ok",
                                           "after first ok"}));
}

TEST_F(ContextTest, AClientInterceptorsRefusalEndsTheCallUnsent) {
  const std::string q = queue();
  std::mutex mutex;
  std::vector<std::string> log;
  auto first = std::make_shared<Recorder>("first", log, mutex);
  auto gate = std::make_shared<Recorder>("gate", log, mutex);
  auto never = std::make_shared<Recorder>("never", log, mutex);
  gate->refuse = Status{StatusCode::unauthenticated, "no token"};
  Service s(q);
  s.default_handler([](const Request&) { return Reply::ok("served"); });
  auto server = serve(std::move(s));
  auto refusing = client(30s, {first, gate, never});
  Reply r = refusing->try_call(q, "");
  EXPECT_EQ(r.status.code(), StatusCode::unauthenticated);
  EXPECT_EQ(r.status.message(), "no token");
  {
    std::lock_guard lock(mutex);
    EXPECT_EQ(log,
              (std::vector<std::string>{"before first", "before gate", "after gate unauthenticated",
                                        "after first unauthenticated"}));
  }
  EXPECT_EQ(client()->call(q, ""), "served");
  EXPECT_EQ(server->stats().received, 1u) << "the refused call was not sent";
}

TEST_F(ContextTest, ServerInterceptorsAuthorizeAndDecorateReplies) {
  const std::string q = queue();
  std::mutex mutex;
  std::vector<std::string> log;
  auto outer = std::make_shared<Recorder>("outer", log, mutex);
  outer->header = "x-served-by";
  // An authorization interceptor: only tenant "acme" gets through.
  class TenantGate final : public ServerInterceptor {
   public:
    Status before_handler(const Request& r, std::any&) override {
      auto t = r.headers.find("x-tenant");
      if (t == r.headers.end() || t->second != "acme") {
        return {StatusCode::permission_denied, "tenant not allowed"};
      }
      return {};
    }
  };
  std::atomic<int> handled{0};
  Service s(q);
  s.default_handler([&](const Request&) {
    ++handled;
    return Reply::ok("ok");
  });
  ServerOptions o = server_options();
  o.interceptors = {outer, std::make_shared<TenantGate>()};
  auto server = serve(std::move(s), o);
  auto c = client();
  CallOptions acme;
  acme.headers["x-tenant"] = "acme";
  Reply allowed = c->try_call(q, "", acme);
  ASSERT_TRUE(allowed.status.ok()) << allowed.status.to_string();
  EXPECT_EQ(allowed.headers.at("x-served-by"), "outer");
  CallOptions other;
  other.headers["x-tenant"] = "globex";
  Reply refused = c->try_call(q, "", other);
  EXPECT_EQ(refused.status.code(), StatusCode::permission_denied);
  EXPECT_EQ(refused.status.message(), "tenant not allowed");
  EXPECT_EQ(refused.headers.at("x-served-by"), "outer") << "after-hooks see refusals too";
  EXPECT_EQ(handled.load(), 1);
  std::lock_guard lock(mutex);
  EXPECT_EQ(log, (std::vector<std::string>{"server before outer caller-header=acme",
                                           "server after outer ok",
                                           "server before outer caller-header=globex",
                                           "server after outer permission_denied"}));
}

TEST_F(ContextTest, SpansOfAChainShareOneTraceWithParentLinksOnBothLegs) {
  // client -> A -> B with one TracingInterceptor writing JSON lines: four spans, one trace.
  const std::string qa = queue("span-a"), qb = queue("span-b");
  const std::string path = ::testing::TempDir() + testbroker::unique("spans") + ".jsonl";
  auto exporter = std::make_shared<JsonLinesExporter>(path);
  ASSERT_TRUE(exporter->ok().ok()) << exporter->ok().to_string();
  auto tracing = std::make_shared<TracingInterceptor>(exporter);
  auto a_client = client(30s, {tracing});
  Service b(qb);
  b.method("Price", [](const Request&) { return Reply::ok("42"); });
  Service a(qa);
  a.method("Quote", [&](const Request& r) {
    CallOptions o = r.context.call_options();
    o.method = "Price";
    return Reply::ok("quote:" + a_client->call(qb, r.body, o));
  });
  ServerOptions so = server_options();
  so.interceptors = {tracing};
  auto server_b = serve(std::move(b), so);
  auto server_a = serve(std::move(a), so);
  auto c = client(30s, {tracing});
  CallOptions o;
  o.method = "Quote";
  EXPECT_EQ(c->call(qa, "x", o), "quote:42");
  server_a->stop();
  server_b->stop();

  std::map<std::string, nlohmann::json> by_name;  // "<kind> <name>" -> span
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto span = nlohmann::json::parse(line);
    by_name[span.at("kind").get<std::string>() + " " + span.at("name").get<std::string>()] = span;
  }
  std::remove(path.c_str());
  ASSERT_EQ(by_name.size(), 4u);
  const auto& root = by_name.at("client " + qa + "/Quote");
  const auto& at_a = by_name.at("server " + qa + "/Quote");
  const auto& nested = by_name.at("client " + qb + "/Price");
  const auto& at_b = by_name.at("server " + qb + "/Price");
  for (const auto* span : {&at_a, &nested, &at_b}) {
    EXPECT_EQ(span->at("trace_id"), root.at("trace_id"));
  }
  EXPECT_EQ(root.value("parent_span_id", ""), "");
  EXPECT_EQ(at_a.at("parent_span_id"), root.at("span_id"));  // request legs
  EXPECT_EQ(nested.at("parent_span_id"), at_a.at("span_id"));
  EXPECT_EQ(at_b.at("parent_span_id"), nested.at("span_id"));
  EXPECT_EQ(root.at("attributes").at("amqprpc.reply.span_id"), at_a.at("span_id"));  // reply legs
  EXPECT_EQ(nested.at("attributes").at("amqprpc.reply.span_id"), at_b.at("span_id"));
  EXPECT_EQ(at_a.at("status"), "ok");
}

TEST_F(ContextTest, AForgedFarDeadlineAndAMalformedTraceparentAreHandledSafely) {
  // A raw client sends what no amqp-rpc client would: a deadline 30 million years away and a
  // traceparent that is not W3C. The handler sees a bounded deadline and a fresh trace; the
  // reply names the server span of that new trace.
  const std::string q = queue();
  std::mutex mutex;
  std::optional<std::chrono::milliseconds> left;
  TraceContext trace;
  std::string parent = "unset";
  Service s(q);
  s.default_handler([&](const Request& r) {
    std::lock_guard lock(mutex);
    left = r.context.remaining();
    trace = r.context.trace();
    parent = r.context.parent_span_id();
    return Reply::ok("fine");
  });
  auto server = serve(std::move(s));
  testbroker::Raw raw;
  const std::string replies = queue("replies");
  raw.declare(replies);
  raw.publish(q, "x", replies, "c1",
              {{"x-rpc-deadline", "999999999999999999"},
               {"traceparent", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"},
               {"tracestate", "vendor=kept?"}});
  std::optional<testbroker::Raw::Got> got;
  ASSERT_TRUE(eventually([&] { return (got = raw.get(replies)).has_value(); }));
  EXPECT_EQ(got->body, "fine");
  std::lock_guard lock(mutex);
  ASSERT_TRUE(left.has_value());
  EXPECT_LE(*left, std::chrono::milliseconds(30LL * 24 * 3600 * 1000));
  EXPECT_GT(*left, std::chrono::milliseconds(29LL * 24 * 3600 * 1000));
  EXPECT_TRUE(trace.valid());
  EXPECT_NE(trace.trace_id, "0af7651916cd43dd8448eb211c80319c") << "uppercase hex is not W3C";
  EXPECT_EQ(parent, "") << "a new trace has no parent";
  EXPECT_EQ(trace.tracestate, "") << "a tracestate goes with its traceparent";
  auto reply_trace = TraceContext::parse(got->headers.at("traceparent"));
  ASSERT_TRUE(reply_trace);
  EXPECT_EQ(reply_trace->trace_id, trace.trace_id);
  EXPECT_EQ(reply_trace->span_id, trace.span_id);
}

TEST_F(ContextTest, AnInterceptorThatThrowsFailsItsCallClearlyAndLosesNoReply) {
  struct Throwing final : ClientInterceptor, ServerInterceptor {
    std::atomic<bool> before{false};  // throw in the before-hooks (else in the after-hooks)
    Status before_call(ClientCall&, std::any&) override {
      if (before) throw std::runtime_error("boom");
      return {};
    }
    void after_call(const ClientCall&, Reply&, std::chrono::nanoseconds, std::any&) override {
      if (!before) throw std::runtime_error("boom");
    }
    Status before_handler(const Request&, std::any&) override {
      if (before) throw std::runtime_error("boom");
      return {};
    }
    void after_handler(const Request&, Reply&, std::chrono::nanoseconds, std::any&) override {
      if (!before) throw std::runtime_error("boom");
    }
  };
  const std::string q = queue();
  auto on_server = std::make_shared<Throwing>();
  Service s(q);
  s.default_handler([](const Request& r) { return Reply::ok("served:" + r.body); });
  ServerOptions o = server_options();
  o.interceptors = {on_server};
  auto server = serve(std::move(s), o);

  // After-hooks that throw: the reply still comes, unchanged.
  auto on_client = std::make_shared<Throwing>();
  auto c = client(30s, {on_client});
  EXPECT_EQ(c->call(q, "x"), "served:x");

  // A server before-hook that throws answers internal, naming it; the handler does not run.
  on_server->before = true;
  Reply refused_by_server = client()->try_call(q, "x");
  EXPECT_EQ(refused_by_server.status.code(), StatusCode::internal);
  EXPECT_EQ(refused_by_server.status.message(), "a server interceptor threw: boom");

  // A client before-hook that throws fails the call unsent.
  on_client->before = true;
  Reply refused_by_client = c->try_call(q, "x");
  EXPECT_EQ(refused_by_client.status.code(), StatusCode::internal);
  EXPECT_EQ(refused_by_client.status.message(), "a client interceptor threw: boom");
  EXPECT_EQ(server->stats().received, 2u) << "the refused call was not sent";
  EXPECT_EQ(server->stats().replied_ok, 1u);
}
