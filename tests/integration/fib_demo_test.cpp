// The demo's handler behind the real broker: right answers, and bad requests answered clearly
// while the server keeps serving.
#include <gtest/gtest.h>

#include "amqprpc/client.hpp"
#include "amqprpc/json.hpp"
#include "amqprpc/server.hpp"
#include "fib.hpp"
#include "support/broker.hpp"

using namespace amqprpc;

class FibDemo : public testing::Test {
 protected:
  void SetUp() override {
    ServerOptions so;
    so.connection = testbroker::options();
    so.queue = queue;
    so.max_request_size = 64;
    auto s = Server::start(so, fib::service(queue, 10'000));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server = std::move(*s);
    ClientOptions co;
    co.connection = testbroker::options();
    auto c = Client::connect(co);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client = std::move(*c);
  }
  void TearDown() override {
    server.reset();
    testbroker::Raw().remove(queue);
  }
  std::string queue = testbroker::unique("fib");
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> client;
};

TEST_F(FibDemo, AnswersLikeTheSeed) {
  EXPECT_EQ(client->call(queue, "30"), "832040");
  EXPECT_EQ(client->call(queue, "100"), "354224848179261915075");
  EXPECT_EQ(client->call(queue, "10000").size(), 2090u);
}

TEST_F(FibDemo, BadRequestsGetClearErrorsAndServingGoesOn) {
  const std::pair<std::string, std::string> bad[] = {
      {"abc", "not a decimal number"},
      {"-1", "n must be >= 0"},
      {"", "empty request"},
      {"10001", "limit of 10000"},
      {std::string("\x00\x01\xff", 3), "not a decimal number"},
      {std::string(60, '9'), "limit of 10000"},
  };
  for (const auto& [body, mentions] : bad) {
    Reply r = client->try_call(queue, body);
    EXPECT_EQ(r.status.code(), StatusCode::invalid_argument) << body.substr(0, 10);
    EXPECT_NE(r.status.message().find(mentions), std::string::npos) << r.status.message();
    EXPECT_EQ(client->call(queue, "10"), "55")
        << "server must keep serving after " << body.substr(0, 10);
  }
  EXPECT_EQ(server->stats().replied_error, 6u);
}

TEST_F(FibDemo, TheTypedFibMethodSpeaksJson) {
  auto r = typed_call<fib::FibReply>(*client, queue, "Fib", fib::FibRequest{30});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->n, 30u);
  EXPECT_EQ(r->fib, "832040");
  auto over = typed_call<fib::FibReply>(*client, queue, "Fib", fib::FibRequest{10'001});
  EXPECT_EQ(over.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(over.status().message().find("limit of 10000"), std::string::npos);
  CallOptions o;
  o.method = "Fib";
  o.content_type = "application/json";
  for (std::string bad : {R"({"n": -1})", R"({"n": 2.5})", R"({"m": 1})", "30", "{"}) {
    Reply reply = client->try_call(queue, bad, o);
    EXPECT_EQ(reply.status.code(), StatusCode::invalid_argument) << bad;
    EXPECT_NE(reply.status.message().find("'Fib'"), std::string::npos) << reply.status.message();
  }
  EXPECT_EQ(client->call(queue, "10"), "55") << "the seed's way still works beside it";
}

TEST_F(FibDemo, OversizedRequestsAreRefusedBeforeParsing) {
  Reply r = client->try_call(queue, std::string(100000, '9'));
  EXPECT_EQ(r.status.code(), StatusCode::resource_exhausted);
  EXPECT_NE(r.status.message().find("at most 64"), std::string::npos) << r.status.message();
  EXPECT_EQ(client->call(queue, "30"), "832040");
}
