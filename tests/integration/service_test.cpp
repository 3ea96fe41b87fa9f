// Services against the real broker: methods on one queue, typed JSON and protobuf calls, clear
// errors for bad bodies, unknown methods and undecodable replies, error details, one-way
// calls, and the describe and health methods the framework answers itself.
#include "amqprpc/service.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/server.hpp"
#include "proto/test_messages.pb.h"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;
using testbroker::serve;
using testbroker::server_options;
using json = nlohmann::json;

namespace {

struct Sum {
  std::vector<int> terms;
};
void to_json(json& j, const Sum& s) {
  j = {{"terms", s.terms}};
}
void from_json(const json& j, Sum& s) {
  j.at("terms").get_to(s.terms);
}

std::unique_ptr<Client> client(bool confirm = false) {
  ClientOptions o;
  o.confirm_requests = confirm;
  o.default_timeout = 30s;
  return testbroker::connect(std::move(o));
}

test::EchoReply say(const test::EchoRequest& r) {
  test::EchoReply out;
  std::string text;
  for (int i = 0; i < std::max(1, r.repeat()); ++i) {
    text += r.text();
    out.add_parts(r.text());
  }
  out.set_text(text);
  return out;
}

// A service with a default handler, a raw method, a JSON method and a protobuf method.
Service calculator(const std::string& queue) {
  Service s(queue, "test.Calculator");
  s.default_handler([](const Request& r) { return Reply::ok("default:" + r.body); });
  s.method("Upper", [](const Request& r) {
    std::string out = r.body;
    for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return Reply::ok(out);
  });
  s.method<Sum, int>("Add", [](const Sum& sum) {
    int total = 0;
    for (int t : sum.terms) total += t;
    return total;
  });
  s.method<test::EchoRequest, test::EchoReply>(
      "Say", [](const test::EchoRequest& r) -> Result<test::EchoReply> {
        if (r.text().empty()) {
          test::ErrorInfo info;
          info.set_field("text");
          info.set_reason("must not be empty");
          return error_with_detail(StatusCode::invalid_argument, "nothing to say", info);
        }
        return say(r);
      });
  return s;
}

// A method handler that blocks until the test opens the gate; says when one has started, and
// when it has finished (after that it touches nothing of the test's).
struct Gate {
  Handler handler() {
    return [this](const Request&) {
      entered = true;
      opened.wait();
      left = true;
      return Reply::ok("done");
    };
  }
  void open() { opener.set_value(); }
  // Calls `method` (this gate's handler) and returns once the handler has entered.
  std::future<Reply> enter(Client& c, const std::string& queue, const std::string& method) {
    CallOptions o;
    o.method = method;
    auto call = c.async_call(queue, "", o);
    EXPECT_TRUE(eventually([&] { return entered.load(); })) << "the handler never started";
    return call;
  }

  std::promise<void> opener;
  std::shared_future<void> opened = opener.get_future().share();
  std::atomic<bool> entered{false}, left{false};
};

class ServiceTest : public testing::Test {
 protected:
  void TearDown() override {
    try {
      testbroker::Raw().remove(queue);
    } catch (...) {
    }
  }
  std::string queue = testbroker::unique("svc");
};

}  // namespace

TEST_F(ServiceTest, MethodsRouteByHeaderAndRequestsWithoutOneReachTheDefaultHandler) {
  auto server = serve(calculator(queue));
  auto c = client();
  EXPECT_EQ(c->call(queue, "plain"), "default:plain") << "a tutorial-6 request";
  CallOptions upper;
  upper.method = "Upper";
  EXPECT_EQ(c->call(queue, "abc", upper), "ABC");
}

TEST_F(ServiceTest, AnUnknownMethodIsUnimplementedAndNamesTheMethod) {
  auto server = serve(calculator(queue));
  auto c = client();
  CallOptions o;
  o.method = "Divide";
  Reply r = c->try_call(queue, "1", o);
  EXPECT_EQ(r.status.code(), StatusCode::unimplemented);
  EXPECT_NE(r.status.message().find("'Divide'"), std::string::npos) << r.status.message();
  EXPECT_EQ(server->stats().unimplemented, 1u);
}

TEST_F(ServiceTest, WithoutADefaultHandlerAMethodlessRequestIsUnimplemented) {
  Service s(queue);
  s.method("Only", [](const Request&) { return Reply::ok("only"); });
  auto server = serve(std::move(s));
  Reply r = client()->try_call(queue, "x");
  EXPECT_EQ(r.status.code(), StatusCode::unimplemented);
  EXPECT_NE(r.status.message().find("x-rpc-method"), std::string::npos) << r.status.message();
}

TEST_F(ServiceTest, TypedJsonAndProtobufCallsInEveryForm) {
  auto server = serve(calculator(queue));
  auto c = client();
  auto sum = typed_call<int>(*c, queue, "Add", Sum{{1, 2, 39}});
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  EXPECT_EQ(*sum, 42);

  test::EchoRequest hi;
  hi.set_text("hi");
  hi.set_repeat(2);
  auto blocking = typed_call<test::EchoReply>(*c, queue, "Say", hi);
  ASSERT_TRUE(blocking.ok()) << blocking.status().to_string();
  EXPECT_EQ(blocking->text(), "hihi");
  EXPECT_EQ(blocking->parts_size(), 2);

  auto future = typed_async_call<test::EchoReply>(*c, queue, "Say", hi);
  ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(future.get()->text(), "hihi");

  std::promise<Result<test::EchoReply>> got;
  typed_async_call<test::EchoReply>(
      *c, queue, "Say", hi, {},
      std::function<void(Result<test::EchoReply>)>(
          [&](Result<test::EchoReply> r) { got.set_value(std::move(r)); }));
  auto callback = got.get_future();
  ASSERT_EQ(callback.wait_for(60s), std::future_status::ready);
  EXPECT_EQ(callback.get()->parts(1), "hi");
}

TEST_F(ServiceTest, AProtobufMethodCalledInJsonAnswersInJson) {
  auto server = serve(calculator(queue));
  CallOptions o;
  o.method = "Say";
  o.content_type = "application/json";
  Reply r = client()->try_call(queue, R"({"text":"yo","repeat":3})", o);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(json::parse(r.body)["text"], "yoyoyo");
  EXPECT_EQ(r.headers.at("x-rpc-type"), "amqprpc.test.EchoReply");
}

TEST_F(ServiceTest, ABodyThatDoesNotDecodeIsInvalidArgumentNamingMethodAndType) {
  auto server = serve(calculator(queue));
  auto c = client();
  CallOptions proto;
  proto.method = "Say";
  proto.content_type = "application/protobuf";
  Reply garbage = c->try_call(queue, "\xff\xff\xff\xff", proto);
  EXPECT_EQ(garbage.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(garbage.status.message().find("'Say'"), std::string::npos);
  EXPECT_NE(garbage.status.message().find("amqprpc.test.EchoRequest"), std::string::npos);

  CallOptions add;
  add.method = "Add";
  add.content_type = "application/json";
  Reply not_json = c->try_call(queue, "{terms: [1,", add);
  EXPECT_EQ(not_json.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(not_json.status.message().find("'Add'"), std::string::npos);
  Reply wrong_shape = c->try_call(queue, R"({"terms": "many"})", add);
  EXPECT_EQ(wrong_shape.status.code(), StatusCode::invalid_argument);
  // The server goes on serving.
  EXPECT_EQ(*typed_call<int>(*c, queue, "Add", Sum{{2, 3}}), 5);
}

TEST_F(ServiceTest, AReplyThatDoesNotDecodeFailsTheCallWithInternal) {
  Service s(queue);
  s.method("Say", [](const Request&) {
    Reply r = Reply::ok("\xff\xff\xff");
    r.content_type = "application/protobuf";
    return r;
  });
  auto server = serve(std::move(s));
  test::EchoRequest hi;
  hi.set_text("hi");
  auto r = typed_call<test::EchoReply>(*client(), queue, "Say", hi);
  EXPECT_EQ(r.status().code(), StatusCode::internal);
  EXPECT_NE(r.status().message().find("does not decode"), std::string::npos)
      << r.status().message();
}

TEST_F(ServiceTest, ErrorDetailsTravelTypedAndTheMessageStaysReadable) {
  auto server = serve(calculator(queue));
  auto r = typed_call<test::EchoReply>(*client(), queue, "Say", test::EchoRequest{});
  ASSERT_EQ(r.status().code(), StatusCode::invalid_argument);
  EXPECT_EQ(r.status().message(), "nothing to say");
  auto info = detail_as<test::ErrorInfo>(r.status());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->field(), "text");
  EXPECT_EQ(info->reason(), "must not be empty");
}

TEST_F(ServiceTest, AHandlerThrowingRpcErrorAnswersWithItsStatus) {
  Service s(queue);
  s.default_handler([](const Request&) -> Reply {
    throw RpcError(Status{StatusCode::not_found, "no such account"});
  });
  auto server = serve(std::move(s));
  Reply r = client()->try_call(queue, "x");
  EXPECT_EQ(r.status.code(), StatusCode::not_found);
  EXPECT_EQ(r.status.message(), "no such account");
}

TEST_F(ServiceTest, NotifyRunsTheHandlerAndNothingComesBack) {
  std::atomic<int> seen{0};
  Service s(queue);
  s.method("Log", [&](const Request& r) {
    EXPECT_TRUE(r.oneway);
    EXPECT_TRUE(r.reply_to.empty());
    seen += std::stoi(r.body);
    return Reply::ok("ignored");
  });
  auto server = serve(std::move(s));
  auto c = client();
  EXPECT_TRUE(c->notify(queue, "Log", "2").ok());
  EXPECT_TRUE(typed_notify(*c, queue, "Log", std::string("3")).ok());
  ASSERT_TRUE(eventually([&] { return server->stats().oneway == 2; }));
  EXPECT_EQ(seen.load(), 5);
  EXPECT_EQ(server->stats().replied_ok, 0u) << "nothing is sent back";
  EXPECT_EQ(c->stats().late_replies, 0u);
  // A one-way call of an unknown method is acked and logged, not redelivered forever.
  EXPECT_TRUE(c->notify(queue, "Nope", "1").ok());
  ASSERT_TRUE(eventually([&] { return server->stats().oneway == 3; }));
  EXPECT_EQ(server->stats().unimplemented, 1u);
  EXPECT_TRUE(eventually([&] { return testbroker::Raw().depth(queue) == 0; }));
}

TEST_F(ServiceTest, ARequestWithoutReplyToThatIsNotOneWayIsStillRejected) {
  std::atomic<int> ran{0};
  Service s(queue);
  s.default_handler([&](const Request&) {
    ++ran;
    return Reply::ok("");
  });
  auto server = serve(std::move(s));
  testbroker::Raw().publish(queue, "x", "", "c1", {{"x-rpc-method", "Log"}});
  ASSERT_TRUE(eventually([&] { return server->stats().rejected == 1; }));
  EXPECT_EQ(ran.load(), 0);
}

TEST_F(ServiceTest, NotifyWithConfirmsFailsWhenNoQueueTakesIt) {
  auto c = client(/*confirm=*/true);
  Status st = c->notify(testbroker::unique("nobody"), "Log", "x");
  EXPECT_EQ(st.code(), StatusCode::unavailable) << st.to_string();
}

TEST_F(ServiceTest, DescribeListsMethodsAndTypesWithoutUserCode) {
  auto server = serve(calculator(queue));
  CallOptions o;
  o.method = "amqprpc.describe";
  Reply r = client()->try_call(queue, "", o);
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(r.content_type, "application/json");
  auto j = json::parse(r.body);
  EXPECT_EQ(j["service"], "test.Calculator");
  EXPECT_EQ(j["queue"], queue);
  EXPECT_EQ(j["default_handler"], true);
  std::map<std::string, json> methods;
  for (const auto& m : j["methods"]) methods[m["name"].get<std::string>()] = m;
  ASSERT_EQ(methods.size(), 3u);
  EXPECT_EQ(methods["Say"]["request_type"], "amqprpc.test.EchoRequest");
  EXPECT_EQ(methods["Say"]["reply_type"], "amqprpc.test.EchoReply");
  EXPECT_EQ(methods["Add"]["encoding"], "json");
  EXPECT_EQ(methods["Upper"]["encoding"], "bytes");
  EXPECT_TRUE(j["file_descriptor_set"].is_string());
  EXPECT_EQ(server->stats().reserved, 1u);
}

TEST_F(ServiceTest, HealthIsAnsweredEvenWhileEveryWorkerIsBusyAndFollowsSetServing) {
  Gate gate;
  Service s(queue);
  s.method("Block", gate.handler());
  auto server = serve(std::move(s), server_options(/*workers=*/1));
  auto c = client();
  auto blocked = gate.enter(*c, queue, "Block");

  CallOptions health;
  health.method = "amqprpc.health";
  Reply serving = c->try_call(queue, "", health);
  ASSERT_TRUE(serving.status.ok()) << serving.status.to_string();
  EXPECT_EQ(json::parse(serving.body)["status"], "serving");
  server->set_serving(false);
  EXPECT_EQ(json::parse(c->try_call(queue, "", health).body)["status"], "not_serving");
  server->set_serving(true);
  EXPECT_EQ(json::parse(c->try_call(queue, "", health).body)["status"], "serving");

  gate.open();
  EXPECT_EQ(blocked.get().body, "done");
}

TEST_F(ServiceTest, WhileAHandlerBlocksTheOtherSlotServesAndTheConnectionIsTendedTo) {
  // Two slots. The first request runs on the I/O thread (nothing else is running); it blocks.
  // A worker takes over the connection meanwhile: the second request is read and served in
  // the other slot, and the framework still answers health checks.
  Gate gate;
  Service s(queue);
  s.method("Block", gate.handler());
  s.method("Echo", [](const Request& r) { return Reply::ok(r.body); });
  auto server = serve(std::move(s), server_options(/*workers=*/2));
  auto c = client();
  auto blocked = gate.enter(*c, queue, "Block");

  CallOptions echo;
  echo.method = "Echo";
  for (int i = 0; i < 3; ++i) {
    Reply r = c->try_call(queue, "echo " + std::to_string(i), echo);
    ASSERT_TRUE(r.status.ok()) << r.status.to_string();
    EXPECT_EQ(r.body, "echo " + std::to_string(i));
  }
  CallOptions health;
  health.method = "amqprpc.health";
  Reply serving = c->try_call(queue, "", health);
  ASSERT_TRUE(serving.status.ok()) << serving.status.to_string();
  EXPECT_EQ(json::parse(serving.body)["status"], "serving");
  EXPECT_FALSE(gate.left.load());

  gate.open();
  EXPECT_EQ(blocked.get().body, "done");
  EXPECT_EQ(server->stats().replied_ok, 4u);  // the health check is counted as reserved
  EXPECT_EQ(server->stats().reserved, 1u);
}

TEST_F(ServiceTest, HealthSaysNotServingOnceAGracefulStopHasBegun) {
  // Handlers inline (workers = 0): while one runs, the I/O thread reads nothing, so a health
  // request the broker has already delivered waits in the socket until the stop has begun.
  Gate gate;
  Service s(queue);
  s.method("Block", gate.handler());
  auto server = serve(std::move(s), server_options(/*workers=*/0));
  auto c = client();
  auto blocked = gate.enter(*c, queue, "Block");
  CallOptions health;
  health.method = "amqprpc.health";
  auto probe = c->async_call(queue, "", health);
  // Delivered to the server (no longer ready in the queue), not read yet.
  ASSERT_TRUE(eventually([&] { return testbroker::Raw().depth(queue) == 0; }));

  std::thread stopper([&] { server->stop(); });
  ASSERT_TRUE(eventually([&] { return !server->serving(); }));
  gate.open();
  Reply answer = probe.get();
  ASSERT_TRUE(answer.status.ok()) << answer.status.to_string();
  EXPECT_EQ(json::parse(answer.body)["status"], "not_serving");
  EXPECT_EQ(blocked.get().body, "done") << "the running call is still answered";
  stopper.join();
}

TEST_F(ServiceTest, SeveralServicesShareOneConnection) {
  std::string other = testbroker::unique("svc-b");
  std::vector<Service> services{calculator(queue), Service(other, "test.Other")};
  services[1].method("Who", [](const Request& r) { return Reply::ok("other:" + r.queue); });
  auto s = Server::start(server_options(), std::move(services));
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto c = client();
  CallOptions who;
  who.method = "Who";
  EXPECT_EQ(c->call(other, "", who), "other:" + other);
  EXPECT_EQ(*typed_call<int>(*c, queue, "Add", Sum{{1, 1}}), 2);
  EXPECT_EQ(c->try_call(queue, "", who).status.code(), StatusCode::unimplemented)
      << "each queue has its own methods";
  (*s)->stop();
  testbroker::Raw().remove(other);
}

TEST_F(ServiceTest, AServiceThatCannotBeServedIsRefusedAtStart) {
  auto h = [](const Request&) { return Reply::ok(""); };
  auto reserved = Server::start(server_options(), Service(queue).method("amqprpc.x", h));
  EXPECT_EQ(reserved.status().code(), StatusCode::invalid_argument);
  std::vector<Service> same_queue{Service(queue), Service(queue)};
  same_queue[0].default_handler(h);
  same_queue[1].default_handler(h);
  auto twice = Server::start(server_options(), std::move(same_queue));
  EXPECT_EQ(twice.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(twice.status().message().find(queue), std::string::npos);
}

namespace {

// Runs rabbitmqctl on the suite's private node (scripts/test.sh exports its name and port).
int ctl(const std::string& args) {
  const char* name = std::getenv("AMQPRPC_BROKER_NAME");
  const char* port = std::getenv("AMQPRPC_BROKER_PORT");
  if (name == nullptr || port == nullptr) return -1;
  std::string cmd = std::string("AMQPRPC_BROKER_NAME=") + name + " AMQPRPC_BROKER_PORT=" + port +
                    " " AMQPRPC_SOURCE_DIR "/scripts/broker.sh ctl " + args + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0 ? 0 : 1;
}

// Two real broker users, created for a test and deleted after it.
class VerifiedCallers : public ServiceTest {
 protected:
  void SetUp() override {
    if (std::getenv("AMQPRPC_BROKER_NAME") == nullptr) {
      GTEST_SKIP() << "needs the suite's private node to add users (scripts/test.sh)";
    }
    for (const auto& user : {alice, bob}) {
      ASSERT_EQ(ctl("add_user " + user + " " + password), 0) << "add_user " << user;
      ASSERT_EQ(ctl("set_permissions -p / " + user + " '.*' '.*' '.*'"), 0);
    }
  }
  void TearDown() override {
    ctl("delete_user " + alice);
    ctl("delete_user " + bob);
    ServiceTest::TearDown();
  }
  std::unique_ptr<Client> client_as(const std::string& user, bool send_user_id = true) {
    ClientOptions o;
    o.connection = testbroker::options();
    if (!user.empty()) {
      o.connection.user = user;
      o.connection.password = password;
    }
    o.send_user_id = send_user_id;
    auto c = Client::connect(o);
    if (!c) throw std::runtime_error(c.status().to_string());
    return std::move(*c);
  }
  std::string alice = testbroker::unique("alice");
  std::string bob = testbroker::unique("bob");
  std::string password = testbroker::unique("pw");
};

Service bank(const std::string& queue, const std::string& auditor) {
  Service s(queue, "test.Bank");
  s.method("WhoAmI", [](const Request& r) { return Reply::ok(r.caller); });
  s.method("Audit", [](const Request&) { return Reply::ok("audited"); });
  s.allow("Audit", {auditor});
  return s;
}

CallOptions method(std::string name) {
  CallOptions o;
  o.method = std::move(name);
  return o;
}

}  // namespace

TEST_F(VerifiedCallers, HandlersSeeTheBrokerValidatedCallerAndAMethodAdmitsOnlyItsList) {
  auto server = serve(bank(queue, alice));  // the server logs in as guest
  auto as_alice = client_as(alice);
  auto as_bob = client_as(bob);
  EXPECT_EQ(as_alice->call(queue, "", method("WhoAmI")), alice);
  EXPECT_EQ(as_bob->call(queue, "", method("WhoAmI")), bob);
  EXPECT_EQ(as_alice->call(queue, "", method("Audit")), "audited");
  Reply refused = as_bob->try_call(queue, "", method("Audit"));
  EXPECT_EQ(refused.status.code(), StatusCode::permission_denied);
  EXPECT_NE(refused.status.message().find("'" + bob + "'"), std::string::npos)
      << refused.status.message();
  auto anonymous = client_as("", /*send_user_id=*/false);
  EXPECT_EQ(anonymous->call(queue, "", method("WhoAmI")), "") << "no user_id: unknown";
  EXPECT_EQ(anonymous->try_call(queue, "", method("Audit")).status.code(),
            StatusCode::permission_denied);
  EXPECT_EQ(server->stats().denied, 2u);
}

TEST_F(VerifiedCallers, TheDefaultHandlerCanBeRestrictedToo) {
  Service without_default(queue);
  without_default.method("M", [](const Request&) { return Reply::ok(""); });
  without_default.allow("", {alice});
  EXPECT_EQ(without_default.check().code(), StatusCode::invalid_argument)
      << "allow(\"\") names a default handler the service lacks";

  Service vault(queue, "test.Vault");
  vault.default_handler([](const Request& r) { return Reply::ok("opened for " + r.caller); });
  vault.allow("", {alice});
  auto server = serve(std::move(vault));
  EXPECT_EQ(client_as(alice)->call(queue, ""), "opened for " + alice);
  Reply refused = client_as(bob)->try_call(queue, "");
  EXPECT_EQ(refused.status.code(), StatusCode::permission_denied);
  EXPECT_NE(refused.status.message().find("default handler"), std::string::npos)
      << refused.status.message();
}

TEST_F(VerifiedCallers, ARequestHandedBackByAStoppingServerKeepsItsCaller) {
  // Server A takes two of alice's requests and stops while the first one runs: the second
  // goes back to the queue as A's own copy (its user_id is A's login), which must still say
  // alice, not guest, to server B.
  Gate gate;
  Service a = bank(queue, alice);
  a.method("Block", gate.handler());
  ServerOptions ao = server_options(/*workers=*/1);
  ao.stop_grace = std::chrono::milliseconds(0);
  auto server_a = serve(std::move(a), ao);
  auto as_alice = client_as(alice);
  auto blocked = as_alice->async_call(queue, "", method("Block"));
  ASSERT_TRUE(eventually([&] { return gate.entered.load(); }));
  auto who = as_alice->async_call(queue, "", method("WhoAmI"));
  ASSERT_TRUE(eventually([&] { return testbroker::Raw().depth(queue) == 0; }));  // A holds it
  server_a->stop();  // hands WhoAmI back at once (no grace), leaves Block running
  EXPECT_EQ(server_a->stats().requeued, 1u);
  Service b = bank(queue, alice);
  b.method("Block", [](const Request&) { return Reply::ok("done by b"); });
  auto server_b = serve(std::move(b), server_options(/*workers=*/2));
  Reply answer = who.get();
  ASSERT_TRUE(answer.status.ok()) << answer.status.to_string();
  EXPECT_EQ(answer.body, alice);
  gate.open();
  ASSERT_TRUE(eventually([&] { return gate.left.load(); }));  // A's handler left behind is done
  blocked.wait();  // answered by B: the request went back when A's connection closed
}
