// What protoc-gen-amqprpc generates, without a broker: names, namespaces and types of the
// generated classes (tests/proto/codegen/), and the server base's methods called as the server
// calls them. The calculator's integration test calls generated code through a broker.
#include <gtest/gtest.h>

#include <type_traits>

#include "amqprpc/service.hpp"
#include "proto/codegen/edge.amqprpc.h"
#include "proto/codegen/plain.amqprpc.h"

namespace {

using amqprpc::Request;
using amqprpc::Result;
using amqprpc::StatusCode;

// Calls `method` of `service` as the server would, with `body` as a protobuf request.
amqprpc::Reply call(const amqprpc::Service& service, const std::string& method,
                    const std::string& body) {
  const amqprpc::Service::Method* m = service.find(method);
  if (m == nullptr) return amqprpc::Reply::error(StatusCode::not_found, "no method " + method);
  Request r;
  r.method = method;
  r.body = body;
  r.content_type = "application/protobuf";
  return m->handler(r);
}

Outer::Inner inner(const std::string& text) {
  Outer::Inner i;
  i.set_text(text);
  return i;
}

class EchoingEdge : public EdgeService {
 public:
  Result<Outer::Inner> Echo(const Outer::Inner& request, const Request& context) override {
    return inner(request.text() + " via " + context.method);
  }
};

TEST(Codegen, AServiceWithoutAPackageIsInTheGlobalNamespaceAndNamedByItsName) {
  EXPECT_STREQ(EdgeClient::kDefaultQueue, "Edge");
  EXPECT_STREQ(SecondClient::kDefaultQueue, "Second");
  EdgeService base;
  EXPECT_EQ(base.service().queue(), "Edge");
  EXPECT_EQ(base.service().name(), "Edge");
}

TEST(Codegen, NestedAndImportedMessagesTypeTheMethods) {
  using EchoResult = decltype(std::declval<EdgeClient&>().Echo(Outer::Inner{}));
  static_assert(std::is_same_v<EchoResult, Result<Outer_Inner>>);
  using PingResult = decltype(std::declval<EdgeClient&>().Ping(google::protobuf::Empty{}));
  static_assert(std::is_same_v<PingResult, Result<google::protobuf::Empty>>);
  EdgeService base;
  amqprpc::Service s = base.service("q");
  ASSERT_EQ(s.methods().size(), 2u);
  EXPECT_EQ(s.find("Echo")->info.request_type, "Outer.Inner");
  EXPECT_EQ(s.find("Echo")->info.reply_type, "Outer.Inner");
  EXPECT_EQ(s.find("Ping")->info.request_type, "google.protobuf.Empty");
  EXPECT_EQ(s.find("Ping")->info.encoding, "protobuf");
  // describe gets the file and what it imports.
  EXPECT_EQ(s.proto_files().count("proto/codegen/edge.proto"), 1u);
  EXPECT_EQ(s.proto_files().count("google/protobuf/empty.proto"), 1u);
}

TEST(Codegen, TheServerBaseCallsTheOverridesAndAnswersUnimplementedForTheRest) {
  EchoingEdge edge;
  amqprpc::Service s = edge.service();
  amqprpc::Reply echo = call(s, "Echo", inner("hello").SerializeAsString());
  ASSERT_TRUE(echo.status.ok()) << echo.status.to_string();
  Outer::Inner out;
  ASSERT_TRUE(out.ParseFromString(echo.body));
  EXPECT_EQ(out.text(), "hello via Echo");
  EXPECT_EQ(echo.content_type, "application/protobuf");

  amqprpc::Reply ping = call(s, "Ping", "");
  EXPECT_EQ(ping.status.code(), StatusCode::unimplemented);
  EXPECT_EQ(ping.status.message(), "method 'Ping' of Edge is not implemented by this server");
}

TEST(Codegen, ARequestThatDoesNotDecodeNeverReachesTheOverride) {
  EchoingEdge edge;
  amqprpc::Reply r = call(edge.service(), "Echo", "\xff\xff\xff");
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument) << r.status.to_string();
}

TEST(Codegen, AFileWithoutServicesStillGetsItsMessages) {
  amqprpc::codegen::plain::Lone lone;
  lone.set_n(7);
  EXPECT_EQ(lone.n(), 7);
}

}  // namespace
