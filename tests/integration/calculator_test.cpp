// calc.Calculator (examples/calculator) through the code protoc-gen-amqprpc generated, against
// the real broker: the stub's blocking, future, callback and one-way forms, the server base,
// errors with typed details, methods left unimplemented, replies that do not decode, describe.
#include <google/protobuf/descriptor.pb.h>
#include <gtest/gtest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "calculator_service.hpp"
#include "framework/reserved.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;
using testbroker::eventually;

namespace {

calc::Operands operands(double a, double b) {
  calc::Operands o;
  o.set_a(a);
  o.set_b(b);
  return o;
}

// The calculator, noting each Add it is asked.
class RecordingCalculator : public calc::CalculatorImpl {
 public:
  struct Seen {
    double a, b;
    bool oneway;
  };
  Result<calc::Value> Add(const calc::Operands& request, const Request& context) override {
    {
      std::lock_guard lock(mu_);
      seen_.push_back({request.a(), request.b(), context.oneway});
    }
    return CalculatorImpl::Add(request, context);
  }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
};

// A server base with Add only: the other methods keep the generated default.
class AddOnly : public calc::CalculatorService {
 public:
  Result<calc::Value> Add(const calc::Operands& request, const Request&) override {
    calc::Value v;
    v.set_value(request.a() + request.b());
    return v;
  }
};

class CalculatorTest : public testing::Test {
 protected:
  void SetUp() override {
    ClientOptions o;
    o.connection = testbroker::options();
    auto c = Client::connect(o);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    client = std::move(*c);
  }
  void TearDown() override {
    server.reset();
    client.reset();
    try {
      testbroker::Raw().remove(queue);
    } catch (...) {
    }
  }
  void serve(Service service) {
    ServerOptions o;
    o.connection = testbroker::options();
    auto s = Server::start(std::move(o), std::move(service));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server = std::move(*s);
  }

  std::string queue = testbroker::unique("calc");
  RecordingCalculator calculator;  // outlives the server (declared before it)
  std::unique_ptr<Client> client;
  std::unique_ptr<Server> server;
};

TEST(CalculatorGenerated, TheDefaultQueueAndTheServiceNameAreTheServicesFullName) {
  EXPECT_STREQ(calc::CalculatorClient::kDefaultQueue, "calc.Calculator");
  calc::CalculatorImpl impl;
  Service s = impl.service();
  EXPECT_EQ(s.queue(), "calc.Calculator");
  EXPECT_EQ(s.name(), "calc.Calculator");
  EXPECT_EQ(impl.service("elsewhere").queue(), "elsewhere");
  EXPECT_EQ(impl.service("elsewhere").name(), "calc.Calculator");
  EXPECT_TRUE(s.check().ok()) << s.check().to_string();
}

TEST_F(CalculatorTest, EachMethodAnswersThroughTheBlockingStub) {
  serve(calculator.service(queue));
  calc::CalculatorClient stub(*client, queue);
  EXPECT_EQ(stub.queue(), queue);
  auto add = stub.Add(operands(2, 3));
  ASSERT_TRUE(add.ok()) << add.status().to_string();
  EXPECT_EQ(add->value(), 5);
  auto sub = stub.Subtract(operands(2, 3));
  ASSERT_TRUE(sub.ok()) << sub.status().to_string();
  EXPECT_EQ(sub->value(), -1);
  auto mul = stub.Multiply(operands(2, 3));
  ASSERT_TRUE(mul.ok()) << mul.status().to_string();
  EXPECT_EQ(mul->value(), 6);
  auto div = stub.Divide(operands(3, 2));
  ASSERT_TRUE(div.ok()) << div.status().to_string();
  EXPECT_EQ(div->value(), 1.5);
}

TEST_F(CalculatorTest, TheWireMethodNamesAreTheProtoNamesSoHandWrittenCallsReachThem) {
  serve(calculator.service(queue));
  auto r = typed_call<calc::Value>(*client, queue, "Multiply", operands(4, 2.5));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->value(), 10);
  auto wrong = typed_call<calc::Value>(*client, queue, "multiply", operands(4, 2.5));
  EXPECT_EQ(wrong.status().code(), StatusCode::unimplemented) << wrong.status().to_string();
}

TEST_F(CalculatorTest, TheFutureAndCallbackFormsAnswerToo) {
  serve(calculator.service(queue));
  calc::CalculatorClient stub(*client, queue);
  auto future = stub.SubtractAsync(operands(10, 4));
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  auto sub = future.get();
  ASSERT_TRUE(sub.ok()) << sub.status().to_string();
  EXPECT_EQ(sub->value(), 6);

  std::promise<Result<calc::Value>> done;
  stub.MultiplyAsync(operands(7, 6), {},
                     [&done](Result<calc::Value> r) { done.set_value(std::move(r)); });
  auto from_callback = done.get_future();
  ASSERT_EQ(from_callback.wait_for(30s), std::future_status::ready);
  auto mul = from_callback.get();
  ASSERT_TRUE(mul.ok()) << mul.status().to_string();
  EXPECT_EQ(mul->value(), 42);

  // Errors come through both forms as they do through the blocking one.
  auto div = stub.DivideAsync(operands(1, 0));
  ASSERT_EQ(div.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(div.get().status().code(), StatusCode::invalid_argument);
}

TEST_F(CalculatorTest, ACoroutineAwaitsTheStub) {
  serve(calculator.service(queue));
  calc::CalculatorClient stub(*client, queue);
  asio::io_context ctx;
  Result<calc::Value> sum = Status{StatusCode::unknown, "not run"};
  Result<calc::Value> div = Status{StatusCode::unknown, "not run"};
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        const CallOptions options;  // named: GCC 12 and temporaries in co_await (asio.hpp)
        const calc::Operands two_and_three = operands(2, 3), by_zero = operands(1, 0);
        sum = co_await stub.Add(two_and_three, options, asio::use_awaitable);
        div = co_await stub.Divide(by_zero, options, asio::use_awaitable);
      },
      asio::detached);
  ctx.run();
  ASSERT_TRUE(sum.ok()) << sum.status().to_string();
  EXPECT_EQ(sum->value(), 5);
  EXPECT_EQ(div.status().code(), StatusCode::invalid_argument);
  EXPECT_TRUE(detail_as<calc::MathError>(div.status()).has_value());
}

TEST_F(CalculatorTest, DividingByZeroIsInvalidArgumentWithAMathErrorDetail) {
  serve(calculator.service(queue));
  calc::CalculatorClient stub(*client, queue);
  auto r = stub.Divide(operands(1, 0));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::invalid_argument);
  EXPECT_EQ(r.status().message(), "cannot divide by zero");
  auto why = detail_as<calc::MathError>(r.status());
  ASSERT_TRUE(why.has_value()) << "the error carries a calc.MathError";
  EXPECT_EQ(why->operation(), "Divide");
  EXPECT_EQ(why->reason(), "division by zero");
  EXPECT_FALSE(detail_as<calc::Value>(r.status()).has_value()) << "a detail of another type";
}

TEST_F(CalculatorTest, ANotifyRunsTheMethodOneWay) {
  serve(calculator.service(queue));
  calc::CalculatorClient stub(*client, queue);
  ASSERT_TRUE(stub.AddNotify(operands(20, 22)).ok());
  ASSERT_TRUE(eventually([&] { return !calculator.seen().empty(); }));
  auto seen = calculator.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].a, 20);
  EXPECT_EQ(seen[0].b, 22);
  EXPECT_TRUE(seen[0].oneway);
  ASSERT_TRUE(eventually([&] { return server->stats().oneway == 1; }));
  auto stats = server->stats();
  EXPECT_EQ(stats.replied_ok + stats.replied_error, 0u) << "nothing is sent back to a one-way call";
}

TEST_F(CalculatorTest, AMethodTheServerBaseDoesNotOverrideIsUnimplemented) {
  AddOnly add_only;
  serve(add_only.service(queue));
  calc::CalculatorClient stub(*client, queue);
  auto add = stub.Add(operands(1, 1));
  ASSERT_TRUE(add.ok()) << add.status().to_string();
  EXPECT_EQ(add->value(), 2);
  auto div = stub.Divide(operands(1, 1));
  EXPECT_EQ(div.status().code(), StatusCode::unimplemented) << div.status().to_string();
  EXPECT_NE(div.status().message().find("Divide"), std::string::npos) << div.status().message();
}

TEST_F(CalculatorTest, AReplyThatDoesNotDecodeFailsTheCallWithInternal) {
  // Not a generated server: one whose Add answers bytes that are no calc.Value.
  Service liar(queue);
  liar.method("Add", [](const Request&) {
    Reply reply = Reply::ok(std::string("\xff\xff\xff\xff garbage", 13));
    reply.content_type = "application/protobuf";
    return reply;
  });
  serve(std::move(liar));
  calc::CalculatorClient stub(*client, queue);
  auto r = stub.Add(operands(1, 2));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::internal) << r.status().to_string();
  EXPECT_NE(r.status().message().find("calc.Value"), std::string::npos) << r.status().message();
}

TEST_F(CalculatorTest, DescribeListsTheFourMethodsWithTheirTypesAndTheProtoFile) {
  serve(calculator.service(queue));
  CallOptions describe;
  describe.method = std::string(kDescribeMethod);
  Reply reply = client->try_call(queue, "", describe);
  ASSERT_TRUE(reply.status.ok()) << reply.status.to_string();
  auto j = nlohmann::json::parse(reply.body);
  EXPECT_EQ(j["service"], "calc.Calculator");
  EXPECT_EQ(j["queue"], queue);
  std::vector<std::string> names;
  for (const auto& m : j["methods"]) {
    names.push_back(m["name"]);
    EXPECT_EQ(m["encoding"], "protobuf");
    EXPECT_EQ(m["request_type"], "calc.Operands");
    EXPECT_EQ(m["reply_type"], "calc.Value");
  }
  EXPECT_EQ(names, (std::vector<std::string>{"Add", "Divide", "Multiply", "Subtract"}));
  ASSERT_TRUE(j.contains("file_descriptor_set"));
  // The descriptor set names calculator.proto and its service, as protoc read it.
  const std::string encoded = j["file_descriptor_set"];
  calc::CalculatorImpl impl;
  Service local = impl.service(queue);
  EXPECT_EQ(encoded, detail::base64_encode(detail::file_descriptor_set(local.proto_files())));
  google::protobuf::FileDescriptorSet set;
  ASSERT_TRUE(set.ParseFromString(detail::file_descriptor_set(local.proto_files())));
  ASSERT_EQ(set.file_size(), 1);
  EXPECT_EQ(set.file(0).name(), "calculator.proto");
  ASSERT_EQ(set.file(0).service_size(), 1);
  EXPECT_EQ(set.file(0).service(0).name(), "Calculator");
}

}  // namespace
