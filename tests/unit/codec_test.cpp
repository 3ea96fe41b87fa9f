// Typed messages: the codecs, typed handlers' decoding and encoding, error details, describe.
#include <gtest/gtest.h>

#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/service.hpp"
#include "framework/reserved.hpp"
#include "proto/test_messages.pb.h"

namespace amqprpc {
namespace {

struct Point {
  int x = 0;
  int y = 0;
};
void to_json(nlohmann::json& j, const Point& p) {
  j = {{"x", p.x}, {"y", p.y}};
}
void from_json(const nlohmann::json& j, Point& p) {
  j.at("x").get_to(p.x);
  j.at("y").get_to(p.y);
}

static_assert(Codec<Point>::encoding == "json");
static_assert(Codec<std::vector<int>>::encoding == "json");
static_assert(Codec<test::EchoRequest>::encoding == "protobuf");
static_assert(Codec<std::string>::encoding == "bytes");

Request request(std::string body, std::string content_type, Headers headers = {}) {
  Request r;
  r.body = std::move(body);
  r.content_type = std::move(content_type);
  r.headers = std::move(headers);
  return r;
}

TEST(JsonCodec, RoundTripsAStruct) {
  Encoded e = Codec<Point>::encode({3, 4}, {});
  EXPECT_EQ(e.content_type, "application/json");
  Point p;
  ASSERT_TRUE(Codec<Point>::decode(e.content_type, e.body, p).ok());
  EXPECT_EQ(p.x, 3);
  EXPECT_EQ(p.y, 4);
}

TEST(JsonCodec, SaysWhatIsWrongWithABadBody) {
  Point p;
  Status not_json = Codec<Point>::decode("application/json", "{x:", p);
  EXPECT_EQ(not_json.code(), StatusCode::invalid_argument);
  EXPECT_NE(not_json.message().find("not valid JSON"), std::string::npos);
  Status missing = Codec<Point>::decode("", R"({"x": 1})", p);
  EXPECT_EQ(missing.code(), StatusCode::invalid_argument);
  EXPECT_NE(missing.message().find("y"), std::string::npos) << missing.message();
  Status wrong_type = Codec<Point>::decode("application/json", R"({"x": "a", "y": 1})", p);
  EXPECT_EQ(wrong_type.code(), StatusCode::invalid_argument);
  Status other = Codec<Point>::decode("application/protobuf", R"({"x":1,"y":2})", p);
  EXPECT_EQ(other.code(), StatusCode::invalid_argument);
  EXPECT_NE(other.message().find("application/protobuf"), std::string::npos);
}

TEST(ProtobufCodec, RoundTripsBinaryAndNamesTheType) {
  test::EchoRequest in;
  in.set_text("hi");
  in.set_repeat(3);
  Encoded e = Codec<test::EchoRequest>::encode(in, {});
  EXPECT_EQ(e.content_type, "application/protobuf");
  EXPECT_EQ(e.type, "amqprpc.test.EchoRequest");
  test::EchoRequest out;
  ASSERT_TRUE(Codec<test::EchoRequest>::decode(e.content_type, e.body, out).ok());
  EXPECT_EQ(out.text(), "hi");
  EXPECT_EQ(out.repeat(), 3);
}

TEST(ProtobufCodec, ReadsAndAnswersJsonWhenThePeerSpeaksJson) {
  test::EchoRequest out;
  ASSERT_TRUE(
      Codec<test::EchoRequest>::decode("application/json", R"({"text":"x","repeat":2})", out).ok());
  EXPECT_EQ(out.repeat(), 2);
  Encoded e = Codec<test::EchoRequest>::encode(out, "application/json");
  EXPECT_EQ(e.content_type, "application/json");
  EXPECT_EQ(nlohmann::json::parse(e.body)["text"], "x");
}

TEST(ProtobufCodec, RefusesGarbageWithAClearError) {
  test::EchoRequest out;
  Status bad = Codec<test::EchoRequest>::decode("application/protobuf", "\xff\xff\xff", out);
  EXPECT_EQ(bad.code(), StatusCode::invalid_argument);
  EXPECT_NE(bad.message().find("amqprpc.test.EchoRequest"), std::string::npos);
  Status bad_json = Codec<test::EchoRequest>::decode("application/json", R"({"nope":1})", out);
  EXPECT_EQ(bad_json.code(), StatusCode::invalid_argument);
  Status text = Codec<test::EchoRequest>::decode("text/plain", "hi", out);
  EXPECT_EQ(text.code(), StatusCode::invalid_argument);
}

TEST(TypedMethod, DecodesCallsAndEncodes) {
  Service s("q");
  s.method<Point, Point>("Flip", [](const Point& p) { return Point{p.y, p.x}; });
  const Service::Method* m = s.find("Flip");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->info.encoding, "json");
  Reply r = m->handler(request(R"({"x":1,"y":2})", "application/json"));
  ASSERT_TRUE(r.status.ok()) << r.status.to_string();
  EXPECT_EQ(nlohmann::json::parse(r.body), nlohmann::json::parse(R"({"x":2,"y":1})"));
}

TEST(TypedMethod, ABadRequestIsInvalidArgumentNamingTheMethodAndTheHandlerIsNotCalled) {
  Service s("q");
  int calls = 0;
  s.method<test::EchoRequest, test::EchoReply>("Say", [&](const test::EchoRequest&) {
    ++calls;
    return test::EchoReply{};
  });
  Reply r = s.find("Say")->handler(request("\xff\xff", "application/protobuf"));
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(r.status.message().find("'Say'"), std::string::npos) << r.status.message();
  Reply wrong_type = s.find("Say")->handler(
      request("", "application/protobuf", {{"x-rpc-type", "amqprpc.test.ErrorInfo"}}));
  EXPECT_EQ(wrong_type.status.code(), StatusCode::invalid_argument);
  EXPECT_NE(wrong_type.status.message().find("amqprpc.test.ErrorInfo"), std::string::npos);
  EXPECT_EQ(calls, 0);
}

TEST(TypedMethod, AHandlerResultErrorBecomesTheReplyStatusWithItsDetail) {
  Service s("q");
  s.method<test::EchoRequest, test::EchoReply>(
      "Say", [](const test::EchoRequest& r, const Request&) -> Result<test::EchoReply> {
        test::ErrorInfo info;
        info.set_field("text");
        info.set_reason("empty");
        if (r.text().empty()) {
          return error_with_detail(StatusCode::invalid_argument, "text is empty", info);
        }
        test::EchoReply out;
        out.set_text(r.text());
        return out;
      });
  Reply r = s.find("Say")->handler(request("", "application/protobuf"));
  EXPECT_EQ(r.status.code(), StatusCode::invalid_argument);
  auto info = detail_as<test::ErrorInfo>(r.status);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), "empty");
  EXPECT_FALSE(detail_as<test::EchoReply>(r.status).has_value()) << "another type";
}

TEST(TypedReply, AReplyThatDoesNotDecodeFailsTheCallWithInternal) {
  Reply garbage = Reply::ok("\xff\xff\xff");
  garbage.content_type = "application/protobuf";
  auto r = detail::decode_typed_reply<test::EchoReply>(std::move(garbage), "Say");
  EXPECT_EQ(r.status().code(), StatusCode::internal);
  EXPECT_NE(r.status().message().find("'Say'"), std::string::npos);
  Reply wrong = Reply::ok("");
  wrong.headers["x-rpc-type"] = "amqprpc.test.ErrorInfo";
  EXPECT_EQ(detail::decode_typed_reply<test::EchoReply>(std::move(wrong), "Say").status().code(),
            StatusCode::internal);
}

TEST(Service, RefusesReservedRepeatedAndEmptyMethodNames) {
  auto h = [](const Request&) { return Reply::ok(""); };
  EXPECT_FALSE(Service("q").method("amqprpc.health", h).check().ok());
  EXPECT_FALSE(Service("q").method("", h).check().ok());
  EXPECT_FALSE(Service("q").method("A", h).method("A", h).check().ok());
  EXPECT_FALSE(Service("q").check().ok()) << "nothing to serve";
  EXPECT_FALSE(Service("").default_handler(h).check().ok());
  EXPECT_TRUE(Service("q").method("A", h).check().ok());
}

TEST(Service, AllowListsAdmitOnlyTheirVerifiedCallers) {
  auto h = [](const Request&) { return Reply::ok(""); };
  Service s("q", "Bank");
  s.method("Audit", h).method("Balance", h).allow("Audit", {"auditor"});
  ASSERT_TRUE(s.check().ok());
  EXPECT_TRUE(s.authorize("Audit", "auditor").ok());
  EXPECT_TRUE(s.authorize("Balance", "anyone").ok()) << "no list: open";
  Status other = s.authorize("Audit", "mallory");
  EXPECT_EQ(other.code(), StatusCode::permission_denied);
  EXPECT_NE(other.message().find("'Audit'"), std::string::npos);
  EXPECT_NE(other.message().find("'mallory'"), std::string::npos);
  EXPECT_EQ(s.authorize("Audit", "").code(), StatusCode::permission_denied);
  EXPECT_FALSE(Service("q").method("A", h).allow("B", {"x"}).check().ok())
      << "a list for a method the service lacks is a mistake";
}

TEST(Describe, ListsMethodsTypesAndTheDescriptorSet) {
  Service s("queue-1", "amqprpc.test.Echo");
  s.default_handler([](const Request&) { return Reply::ok(""); });
  s.method<test::EchoRequest, test::EchoReply>(
      "Say", [](const test::EchoRequest&) { return test::EchoReply{}; });
  s.method<Point, Point>("Flip", [](const Point& p) { return p; });
  auto j = nlohmann::json::parse(detail::describe_json(s));
  EXPECT_EQ(j["service"], "amqprpc.test.Echo");
  EXPECT_EQ(j["queue"], "queue-1");
  EXPECT_EQ(j["default_handler"], true);
  ASSERT_EQ(j["methods"].size(), 2u);
  EXPECT_EQ(j["methods"][1]["name"], "Say");
  EXPECT_EQ(j["methods"][1]["request_type"], "amqprpc.test.EchoRequest");
  EXPECT_EQ(j["methods"][1]["encoding"], "protobuf");
  EXPECT_EQ(j["methods"][0]["encoding"], "json");
  ASSERT_TRUE(j.contains("file_descriptor_set"));
  // The base64 decodes to a FileDescriptorSet naming the test file.
  google::protobuf::FileDescriptorSet set;
  ASSERT_TRUE(set.ParseFromString(detail::file_descriptor_set(s.proto_files())));
  ASSERT_EQ(set.file_size(), 1);
  EXPECT_EQ(set.file(0).name(), "test_messages.proto");
}

TEST(Describe, Base64IsStandard) {
  EXPECT_EQ(detail::base64_encode(""), "");
  EXPECT_EQ(detail::base64_encode("f"), "Zg==");
  EXPECT_EQ(detail::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(detail::base64_encode("foobar"), "Zm9vYmFy");
}

}  // namespace
}  // namespace amqprpc
