// Client and server against the real broker: the seed's contract and what goes beyond it.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

Reply echo(const Request& req) {
  return Reply::ok(req.body);
}

std::unique_ptr<Server> serve(const std::string& queue, Handler handler,
                              std::uint16_t prefetch = 16, std::size_t workers = 1) {
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = queue;
  o.prefetch = prefetch;
  o.workers = workers;
  auto s = Server::start(o, std::move(handler));
  if (!s) throw std::runtime_error("server did not start: " + s.status().to_string());
  return std::move(*s);
}

std::unique_ptr<Client> client(ReplyMode mode = ReplyMode::direct_reply_to) {
  ClientOptions o;
  o.connection = testbroker::options();
  o.reply_mode = mode;
  auto c = Client::connect(o);
  if (!c) throw std::runtime_error("client did not connect: " + c.status().to_string());
  return std::move(*c);
}

CallOptions timeout(std::chrono::milliseconds t) {
  CallOptions o;
  o.timeout = t;
  return o;
}

class QueueTest : public testbroker::OwnQueue {
 protected:
  QueueTest() : OwnQueue("test") {}
};

class ReplyModes : public QueueTest, public testing::WithParamInterface<ReplyMode> {};

}  // namespace

TEST_P(ReplyModes, CallGetsTheHandlersReply) {
  auto server = serve(queue, [](const Request& r) { return Reply::ok("hello " + r.body); });
  auto c = client(GetParam());
  EXPECT_EQ(c->call(queue, "world"), "hello world");
  EXPECT_EQ(c->call(queue, ""), "hello ");
  if (GetParam() == ReplyMode::direct_reply_to) {
    EXPECT_EQ(c->reply_queue(), "amq.rabbitmq.reply-to");
  } else {
    EXPECT_TRUE(c->reply_queue().starts_with("amq.gen-")) << c->reply_queue();
  }
}

TEST_P(ReplyModes, BinaryBodiesAndLargeBodiesArriveIntact) {
  auto server = serve(queue, echo);
  auto c = client(GetParam());
  std::string binary("\0\1\2\xff\xfe zero\0end", 15);
  EXPECT_EQ(c->call(queue, binary), binary);
  std::string big(3 * 1024 * 1024 + 17, 'x');  // spans many frames
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  EXPECT_EQ(c->call(queue, big), big);
}

INSTANTIATE_TEST_SUITE_P(Both, ReplyModes,
                         testing::Values(ReplyMode::direct_reply_to, ReplyMode::exclusive_queue),
                         [](const auto& info) {
                           return info.param == ReplyMode::direct_reply_to ? "DirectReplyTo"
                                                                           : "ExclusiveQueue";
                         });

TEST_F(QueueTest, ErrorReplyBecomesAStatusOrATypedException) {
  auto server = serve(queue, [](const Request&) {
    return Reply::error(StatusCode::permission_denied, "not for you");
  });
  auto c = client();
  Reply r = c->try_call(queue, "x");
  EXPECT_EQ(r.status.code(), StatusCode::permission_denied);
  EXPECT_EQ(r.status.message(), "not for you");
  try {
    c->call(queue, "x");
    FAIL() << "call() must throw on an error reply";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), StatusCode::permission_denied);
  }
  EXPECT_EQ(server->stats().replied_error, 2u);
}

TEST_F(QueueTest, HandlerThatThrowsGivesAnInternalErrorAndTheServerGoesOn) {
  auto server = serve(queue, [](const Request& r) -> Reply {
    if (r.body == "boom") throw std::runtime_error("kaboom");
    return Reply::ok("fine");
  });
  auto c = client();
  Reply r = c->try_call(queue, "boom");
  EXPECT_EQ(r.status.code(), StatusCode::internal);
  EXPECT_EQ(r.status.message(), "kaboom");
  EXPECT_EQ(c->call(queue, "next"), "fine");
}

TEST_F(QueueTest, HeadersAndContentTypeTravelBothWays) {
  auto server = serve(queue, [](const Request& r) {
    Reply reply = Reply::ok(r.content_type);
    reply.headers["seen-tenant"] = r.headers.count("tenant") ? r.headers.at("tenant") : "none";
    reply.content_type = "text/x-test";
    return reply;
  });
  auto c = client();
  CallOptions o;
  o.headers["tenant"] = "acme";
  o.content_type = "application/json";
  Reply r = c->try_call(queue, "{}", o);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "application/json");
  EXPECT_EQ(r.headers.at("seen-tenant"), "acme");
  EXPECT_EQ(r.content_type, "text/x-test");
}

TEST_F(QueueTest, NoReplyBeforeTheDeadlineIsATimeoutAndTheBrokerDropsTheRequest) {
  testbroker::Raw raw;
  raw.declare(queue);  // a queue nobody consumes
  auto c = client();
  auto start = std::chrono::steady_clock::now();
  CallOptions o = timeout(300ms);
  o.wait_for_ready = true;  // sent anyway, for a server that never comes
  Reply r = c->try_call(queue, "anyone?", o);
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded);
  EXPECT_NE(r.status.message().find("300 ms"), std::string::npos) << r.status.message();
  EXPECT_GE(waited, 300ms);
  EXPECT_LT(waited, 10s);  // bounded: never a hang
  EXPECT_EQ(c->stats().timeouts, 1u);
  // The request carried its timeout as the message TTL, so the broker discards it.
  EXPECT_TRUE(eventually([&] { return raw.depth(queue) == 0; }));
}

TEST_F(QueueTest, ACallMadeWhileTheClientIdlesIsSentAndStillTimesOutOnTime) {
  // A caller whose client has nothing in flight sends its request itself, while the I/O thread
  // sleeps; that thread must still wake for the call's deadline, also when it would otherwise
  // sleep until the next heartbeat tick (15 s here) or, without heartbeats, for ever.
  testbroker::Raw raw;
  raw.declare(queue);  // a queue nobody consumes
  for (std::chrono::seconds heartbeat : {60s, 0s}) {
    ClientOptions o;
    o.connection = testbroker::options();
    o.connection.heartbeat = heartbeat;
    // No server watch: its probe would wake the loop anyway, and the caller itself publishes.
    o.server_check_interval = std::chrono::milliseconds::zero();
    auto c = Client::connect(o);
    ASSERT_TRUE(c) << c.status().to_string();
    std::this_thread::sleep_for(200ms);  // the loop has gone to sleep
    CallOptions call = timeout(300ms);
    call.wait_for_ready = true;  // sent anyway, for a server that never comes
    const auto start = std::chrono::steady_clock::now();
    Reply r = (*c)->try_call(queue, "anyone?", call);
    const auto waited = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded) << r.status.to_string();
    EXPECT_LT(waited, 10s) << "heartbeat " << heartbeat.count() << " s";  // never the tick's 15 s
    EXPECT_TRUE(eventually([&] { return raw.depth(queue) == 0; }));  // it was sent, and expired
  }
}

TEST_F(QueueTest, RequestsCarryExpirationAndAnAbsoluteDeadline) {
  testbroker::Raw raw;
  raw.declare(queue);
  auto c = client();
  auto before = std::chrono::system_clock::now();
  CallOptions o = timeout(20s);
  o.wait_for_ready = true;  // nobody consumes: sent for a server to come
  o.priority = 7;
  o.content_type = "text/plain";
  auto pending = c->async_call(queue, "inspect me", o);
  std::optional<testbroker::Raw::Got> got;
  ASSERT_TRUE(eventually([&] { return (got = raw.get(queue)).has_value(); }));
  EXPECT_EQ(got->body, "inspect me");
  // The time left when it was published: 20 s less however long that took (on a busy
  // machine, more than the millisecond it usually takes).
  EXPECT_LE(std::stoll(got->expiration), 20000);
  EXPECT_GT(std::stoll(got->expiration), 10000);
  EXPECT_EQ(got->priority, 7);
  EXPECT_EQ(got->content_type, "text/plain");
  // The broker rewrites the pseudo-queue name into a routable one for this connection.
  EXPECT_TRUE(got->reply_to.starts_with("amq.rabbitmq.reply-to.")) << got->reply_to;
  EXPECT_EQ(got->correlation_id.size(), 36u);
  ASSERT_TRUE(got->deadline_header.has_value());
  auto deadline_ms = std::stoll(*got->deadline_header);
  auto before_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(before.time_since_epoch()).count();
  EXPECT_GE(deadline_ms, before_ms + 20000);
  EXPECT_LT(deadline_ms, before_ms + 30000);
}

TEST_F(QueueTest, NoQueueFailsFastWithNoRouteInsteadOfTimingOut) {
  auto c = client();
  auto start = std::chrono::steady_clock::now();
  Reply r = c->try_call(queue + "-missing", "hello?", timeout(20s));
  EXPECT_EQ(r.status.code(), StatusCode::unavailable);
  EXPECT_NE(r.status.message().find("no route"), std::string::npos) << r.status.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);  // well before the 20 s deadline
  EXPECT_EQ(c->stats().unroutable, 1u);
}

TEST_F(QueueTest, RepliesWithUnknownCorrelationIdsAreDroppedAndCounted) {
  auto server = serve(queue, echo);
  auto c = client(ReplyMode::exclusive_queue);
  testbroker::Raw raw;
  raw.publish(c->reply_queue(), "stray", "", "no-such-call");
  raw.publish(c->reply_queue(), "stray too", "", "");
  ASSERT_TRUE(eventually([&] { return c->stats().late_replies == 2; }));
  EXPECT_EQ(c->call(queue, "mine"), "mine");
}

TEST_F(QueueTest, ALateReplyNeverReachesTheNextCaller) {
  auto server = serve(queue, [](const Request& r) {
    if (r.body == "slow") std::this_thread::sleep_for(400ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  Reply r = c->try_call(queue, "slow", timeout(100ms));
  EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded);
  // The slow reply comes in after its caller gave up: counted, dropped.
  ASSERT_TRUE(eventually([&] { return c->stats().late_replies == 1; }));
  EXPECT_EQ(c->call(queue, "fast"), "fast");
}

TEST_F(QueueTest, SeveralServersShareTheQueueAndEveryCallGetsItsOwnAnswer) {
  std::atomic<int> served_a{0}, served_b{0};
  auto handler = [](std::atomic<int>& counter) {
    return [&counter](const Request& r) {
      counter++;
      std::this_thread::sleep_for(2ms);
      return Reply::ok("re:" + r.body);
    };
  };
  auto a = serve(queue, handler(served_a), /*prefetch=*/1);
  auto b = serve(queue, handler(served_b), /*prefetch=*/1);
  auto c = client();
  std::vector<std::future<Reply>> calls;
  for (int i = 0; i < 60; ++i) calls.push_back(c->async_call(queue, std::to_string(i)));
  for (int i = 0; i < 60; ++i) {
    Reply r = calls[i].get();
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_EQ(r.body, "re:" + std::to_string(i));
  }
  EXPECT_EQ(served_a + served_b, 60);
  EXPECT_GT(served_a, 0);
  EXPECT_GT(served_b, 0);
}

TEST_F(QueueTest, ManyThreadsCallingOneClientEachGetTheirOwnReply) {
  auto server = serve(queue, echo, 64, 2);
  auto c = client();
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        std::string body = std::to_string(t) + ":" + std::to_string(i);
        Reply r = c->try_call(queue, body);
        if (!r.status.ok()) {
          failed++;
        } else if (r.body != body) {
          wrong++;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(c->stats().replies, 400u);
}

TEST_F(QueueTest, CallbackFormDeliversTheReply) {
  auto server = serve(queue, echo);
  auto c = client();
  std::promise<Reply> got;
  c->async_call(queue, "cb", {}, [&](Reply r) { got.set_value(std::move(r)); });
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().body, "cb");
}

TEST_F(QueueTest, BlockingCallFromTheClientsOwnCallbackIsRefusedNotDeadlocked) {
  auto server = serve(queue, echo);
  auto c = client();
  std::promise<Reply> inner;
  c->async_call(queue, "outer", {}, [&](Reply) { inner.set_value(c->try_call(queue, "inner")); });
  auto f = inner.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().status.code(), StatusCode::failed_precondition);
}

TEST_F(QueueTest, ClosingTheClientCancelsCallsInFlight) {
  std::atomic<bool> release{false};
  auto server = serve(queue, [&](const Request& r) {
    for (int i = 0; i < 10000 && !release; ++i) std::this_thread::sleep_for(1ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  auto pending = c->async_call(queue, "x");
  // In flight: the server holds it until the client is gone.
  ASSERT_TRUE(eventually([&] { return server->stats().received == 1; }));
  c.reset();
  release = true;
  ASSERT_EQ(pending.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(pending.get().status.code(), StatusCode::cancelled);
}

TEST_F(QueueTest, BadCallOptionsAreRefusedClearly) {
  auto c = client();
  Reply r = c->try_call(queue, "x", timeout(0ms));
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(r.status.message().find("timeout"), std::string::npos);
  Reply long_name = c->try_call(std::string(300, 'q'), "x");
  EXPECT_EQ(long_name.status.code(), StatusCode::invalid_argument);
}

TEST_F(QueueTest, RequestWithoutReplyToIsRejectedNotRequeuedAndServingGoesOn) {
  auto server = serve(queue, echo);
  testbroker::Raw raw;
  raw.publish(queue, "nowhere to answer", "", "c1");
  ASSERT_TRUE(eventually([&] { return server->stats().rejected == 1; }));
  EXPECT_EQ(raw.depth(queue), 0u);
  auto c = client();
  EXPECT_EQ(c->call(queue, "still here"), "still here");
}

TEST_F(QueueTest, RequestWithoutCorrelationIdIsStillAnswered) {
  auto server = serve(queue, echo);
  testbroker::Raw raw;
  std::string reply_queue = testbroker::unique("replies");
  raw.declare(reply_queue);
  raw.publish(queue, "no id", reply_queue, "");
  std::optional<testbroker::Raw::Got> got;
  ASSERT_TRUE(eventually([&] { return (got = raw.get(reply_queue)).has_value(); }));
  EXPECT_EQ(got->body, "no id");
  EXPECT_EQ(got->correlation_id, "");
  raw.remove(reply_queue);
}

TEST_F(QueueTest, ServerRefusesAQueueDeclaredDifferently) {
  testbroker::Raw raw;
  raw.declare(queue, /*durable=*/true);
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = queue;
  auto s = Server::start(o, echo);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::failed_precondition);
  EXPECT_NE(s.status().message().find("durable"), std::string::npos) << s.status().message();
}

TEST_F(QueueTest, ServerStopIsCleanAndIdempotent) {
  auto server = serve(queue, echo);
  auto c = client();
  EXPECT_EQ(c->call(queue, "a"), "a");
  server->stop();
  server->stop();
  EXPECT_TRUE(server->wait().ok());
  // Nobody consumes now, but the queue still exists: once the client has seen that, calls fail
  // fast; one made before may still go out, and time out.
  EXPECT_TRUE(eventually([&] {
    Reply r = c->try_call(queue, "b", timeout(200ms));
    if (r.status.code() != StatusCode::deadline_exceeded) {
      EXPECT_EQ(r.status.code(), StatusCode::unavailable) << r.status.to_string();
    }
    return r.status.code() == StatusCode::unavailable;
  }));
}

TEST(ServerOptionsCheck, InvalidOptionsAreRefusedBeforeConnecting) {
  ServerOptions o;
  o.connection = testbroker::options();
  o.queue = "";
  EXPECT_EQ(Server::start(o, echo).status().code(), StatusCode::invalid_argument);
  o.queue = "q";
  o.prefetch = 0;
  EXPECT_EQ(Server::start(o, echo).status().code(), StatusCode::invalid_argument);
  o.prefetch = 1;
  EXPECT_EQ(Server::start(o, nullptr).status().code(), StatusCode::invalid_argument);
}

TEST_F(QueueTest, CancellingACallInFlightCompletesItAtOnceAndDropsTheLateReply) {
  std::atomic<bool> release{false};
  auto server = serve(queue, [&](const Request& r) {
    for (int i = 0; i < 500 && !release; ++i) std::this_thread::sleep_for(1ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  std::stop_source source;
  CallOptions o;
  o.cancel = source.get_token();
  auto pending = c->async_call(queue, "slow", o);
  ASSERT_TRUE(eventually([&] { return server->stats().received == 1; }));
  source.request_stop();
  ASSERT_EQ(pending.wait_for(5s), std::future_status::ready)
      << "cancel must not wait for the reply";
  Reply r = pending.get();
  EXPECT_EQ(r.status.code(), StatusCode::cancelled);
  release = true;
  ASSERT_TRUE(eventually([&] { return c->stats().late_replies == 1; }));
  EXPECT_EQ(c->stats().cancelled, 1u);
  EXPECT_EQ(c->call(queue, "after"), "after");
}

TEST_F(QueueTest, ACallWhoseTokenIsAlreadyCancelledIsNeverSent) {
  auto server = serve(queue, echo);
  auto c = client();
  std::stop_source source;
  source.request_stop();
  CallOptions o;
  o.cancel = source.get_token();
  EXPECT_EQ(c->try_call(queue, "never", o).status.code(), StatusCode::cancelled);
  EXPECT_EQ(c->call(queue, "sent"), "sent");
  EXPECT_EQ(server->stats().received, 1u);
}

TEST_F(QueueTest, OneSourceCancelsManyCallsAndLeavesOthersAlone) {
  auto server = serve(queue, [](const Request& r) {
    if (r.body != "keep") std::this_thread::sleep_for(20ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  std::stop_source source;
  CallOptions o;
  o.cancel = source.get_token();
  std::vector<std::future<Reply>> doomed;
  for (int i = 0; i < 20; ++i) doomed.push_back(c->async_call(queue, "doomed", o));
  auto kept = c->async_call(queue, "keep");
  source.request_stop();
  int cancelled = 0;
  for (auto& f : doomed) {
    Reply r = f.get();
    // A call may have been answered before the cancel reached it; none may hang or mix up.
    if (r.status.code() == StatusCode::cancelled) {
      cancelled++;
    } else {
      EXPECT_EQ(r.body, "doomed");
    }
  }
  EXPECT_GT(cancelled, 0);
  EXPECT_EQ(kept.get().body, "keep");
}

TEST_F(QueueTest, OversizedFieldsAreRefusedBeforeTheyCanBreakTheConnection) {
  auto server = serve(queue, echo);
  auto c = client();
  CallOptions long_type;
  long_type.content_type = std::string(300, 't');
  Reply r = c->try_call(queue, "x", long_type);
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(r.status.message().find("content type is 300 bytes"), std::string::npos)
      << r.status.message();

  CallOptions long_key;
  long_key.headers[std::string(300, 'k')] = "v";
  EXPECT_EQ(c->try_call(queue, "x", long_key).status.code(), StatusCode::invalid_argument);

  CallOptions huge_headers;
  huge_headers.headers["big"] = std::string(200 * 1024, 'v');
  r = c->try_call(queue, "x", huge_headers);
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(r.status.message().find("one frame"), std::string::npos) << r.status.message();

  // Over the broker's max_message_size (ConnectionOptions::max_message_size, 16 MiB here).
  r = c->try_call(queue, std::string(16u * 1024 * 1024 + 1, 'b'));
  EXPECT_EQ(r.status.code(), StatusCode::resource_exhausted);
  EXPECT_NE(r.status.message().find("max_message_size"), std::string::npos) << r.status.message();

  // None of it reached the wire: the connection is fine.
  EXPECT_EQ(c->call(queue, "still fine"), "still fine");
}

TEST_F(QueueTest, AHandlerReplyThatCannotBeSentBecomesAnInternalError) {
  auto server = serve(queue, [](const Request& r) {
    Reply reply = Reply::ok(r.body);
    if (r.body == "bad") reply.content_type = std::string(400, 'c');
    return reply;
  });
  auto c = client();
  Reply r = c->try_call(queue, "bad");
  EXPECT_EQ(r.status.code(), StatusCode::internal);
  EXPECT_NE(r.status.message().find("content type"), std::string::npos) << r.status.message();
  EXPECT_EQ(c->call(queue, "good"), "good");
}

TEST_F(QueueTest, AHugeTimeoutMeansWaitAndDoesNotOverflow) {
  auto server = serve(queue, echo);
  auto c = client();
  Reply r = c->try_call(queue, "patient", timeout(std::chrono::milliseconds::max()));
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.body, "patient");
}

TEST_F(QueueTest, ACallbackThatThrowsIsContainedAndTheClientGoesOn) {
  auto server = serve(queue, echo);
  auto c = client();
  std::atomic<bool> ran{false};
  c->async_call(queue, "x", {}, [&](Reply) {
    ran = true;
    throw std::runtime_error("careless callback");
  });
  ASSERT_TRUE(eventually([&] { return ran.load(); }));
  EXPECT_EQ(c->call(queue, "after"), "after");
}

TEST_F(QueueTest, AClientMayBeDestroyedFromItsOwnCallback) {
  auto server = serve(queue, echo);
  auto c = client();
  Client* raw = c.release();
  std::promise<void> destroyed;
  raw->async_call(queue, "bye", {}, [&](Reply) {
    delete raw;
    destroyed.set_value();
  });
  ASSERT_EQ(destroyed.get_future().wait_for(10s), std::future_status::ready);
  // The teardown finishes on another thread; the server must still serve new clients.
  EXPECT_EQ(client()->call(queue, "next"), "next");
}

TEST_F(QueueTest, AHandlerMayStopItsOwnServer) {
  std::unique_ptr<Server> server;
  server = serve(queue, [&](const Request& r) {
    if (r.body == "shutdown") server->stop();
    return Reply::ok("bye");
  });
  auto c = client();
  EXPECT_EQ(c->call(queue, "shutdown"), "bye");
  std::future<Status> stopped = std::async(std::launch::async, [&] { return server->wait(); });
  ASSERT_EQ(stopped.wait_for(10s), std::future_status::ready) << "stop() from a handler hung";
  EXPECT_TRUE(stopped.get().ok());
}

TEST_F(QueueTest, TimeoutsUnderLoadFailOnlyTheLateCallsAndEveryCallEnds) {
  // One slow worker: of 300 calls in flight with a 400 ms deadline, only the first few can be
  // answered in time; the rest must time out on time, none may hang or get another's reply.
  auto server = serve(queue, [](const Request& r) {
    std::this_thread::sleep_for(20ms);
    return Reply::ok(r.body);
  });
  auto c = client();
  std::vector<std::future<Reply>> calls;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 300; ++i)
    calls.push_back(c->async_call(queue, std::to_string(i), timeout(400ms)));
  int ok = 0, timed_out = 0;
  for (int i = 0; i < 300; ++i) {
    ASSERT_EQ(calls[i].wait_for(10s), std::future_status::ready) << "call " << i << " hung";
    Reply r = calls[i].get();
    if (r.status.ok()) {
      ok++;
      EXPECT_EQ(r.body, std::to_string(i));
    } else {
      EXPECT_EQ(r.status.code(), StatusCode::deadline_exceeded) << r.status.to_string();
      timed_out++;
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_GT(ok, 0);
  EXPECT_GT(timed_out, 200);
  EXPECT_EQ(c->stats().timeouts, static_cast<std::uint64_t>(timed_out));
}

TEST_F(QueueTest, ThousandsOfCallsInFlightOnOneConnectionAllComeBackRight) {
  auto server = serve(queue, echo, /*prefetch=*/500);
  auto c = client();
  constexpr int kCalls = 5000;
  std::vector<std::future<Reply>> calls;
  calls.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) calls.push_back(c->async_call(queue, "n" + std::to_string(i)));
  int wrong = 0;
  for (int i = 0; i < kCalls; ++i) {
    Reply r = calls[i].get();
    if (!r.status.ok() || r.body != "n" + std::to_string(i)) wrong++;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(c->stats().replies, static_cast<std::uint64_t>(kCalls));
  EXPECT_EQ(c->stats().late_replies, 0u);
}
