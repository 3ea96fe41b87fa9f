// The command line's reading of describe replies (tools/common/describe): base64, the reply's
// JSON, the descriptor set as dynamic messages, and what it refuses.
#include "common/describe.hpp"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/timestamp.pb.h>
#include <gtest/gtest.h>

#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/service.hpp"
#include "framework/reserved.hpp"
#include "proto/test_messages.pb.h"

namespace {

using amqprpc::tools::base64_decode;
using amqprpc::tools::parse_description;
using amqprpc::tools::Schema;
namespace pb = google::protobuf;

TEST(Base64Decode, ReadsPaddedAndUnpaddedStandardBase64) {
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode("Zg=="), "f");
  EXPECT_EQ(base64_decode("Zg"), "f");
  EXPECT_EQ(base64_decode("Zm8="), "fo");
  EXPECT_EQ(base64_decode("Zm9v"), "foo");
  EXPECT_EQ(base64_decode("+/8="), std::string("\xfb\xff", 2));
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(base64_decode(amqprpc::detail::base64_encode(all)), all);
}

TEST(Base64Decode, RefusesWhatIsNotBase64) {
  EXPECT_FALSE(base64_decode("Z"));       // 6 bits: not a byte
  EXPECT_FALSE(base64_decode("Zg="));     // padded but not in blocks of four
  EXPECT_FALSE(base64_decode("Z=g="));    // '=' inside
  EXPECT_FALSE(base64_decode("Zg==="));   // three '='
  EXPECT_FALSE(base64_decode("Zm9v\n"));  // line break
  EXPECT_FALSE(base64_decode("Zm 9v"));   // space
  EXPECT_FALSE(base64_decode("-_8="));    // URL alphabet
  EXPECT_FALSE(base64_decode(std::string("Zm\0v", 4)));
}

amqprpc::Service echo_service() {
  namespace test = amqprpc::test;
  amqprpc::Service s("q", "amqprpc.test.Echo");
  s.method<test::EchoRequest, test::EchoReply>(
      "Say", [](const test::EchoRequest&) { return test::EchoReply{}; });
  s.method<nlohmann::json, nlohmann::json>("Flip", [](const nlohmann::json& j) { return j; });
  return s;
}

TEST(ParseDescription, ReadsWhatAServerSaysAndBuildsItsTypes) {
  auto d = parse_description("application/json", amqprpc::detail::describe_json(echo_service()));
  ASSERT_TRUE(d.ok()) << d.status().to_string();
  EXPECT_EQ(d->service, "amqprpc.test.Echo");
  EXPECT_EQ(d->queue, "q");
  EXPECT_FALSE(d->default_handler);
  EXPECT_EQ(d->method_names(), "Flip, Say");
  ASSERT_NE(d->find("Say"), nullptr);
  EXPECT_EQ(d->find("Say")->request_type, "amqprpc.test.EchoRequest");
  EXPECT_EQ(d->find("Flip")->encoding, "json");
  EXPECT_EQ(d->find("Nope"), nullptr);
  ASSERT_NE(d->schema, nullptr);

  auto request = d->schema->find("amqprpc.test.EchoRequest");
  ASSERT_TRUE(request.ok());
  auto binary = d->schema->json_to_binary(*request, R"({"text":"hi","repeat":2})");
  ASSERT_TRUE(binary.ok()) << binary.status().to_string();
  amqprpc::test::EchoRequest generated;
  ASSERT_TRUE(generated.ParseFromString(*binary));
  EXPECT_EQ(generated.text(), "hi");
  EXPECT_EQ(generated.repeat(), 2);
  EXPECT_EQ(d->schema->binary_to_json(*request, *binary).value(), R"({"text":"hi","repeat":2})");
  EXPECT_EQ(amqprpc::tools::message_definition(**request),
            "message amqprpc.test.EchoRequest {\n  string text = 1;\n  int32 repeat = 2;\n}");

  EXPECT_FALSE(d->schema->json_to_binary(*request, R"({"txt":"hi"})").ok()) << "no such field";
  EXPECT_FALSE(d->schema->json_to_binary(*request, R"({"text":)").ok()) << "not JSON";
  EXPECT_FALSE(d->schema->binary_to_json(*request, "\xff\xff\xff").ok()) << "not a message";
  EXPECT_EQ(d->schema->find("amqprpc.test.Nope").status().code(), amqprpc::StatusCode::not_found);
}

TEST(ParseDescription, SaysWhyAReplyIsNotADescription) {
  auto why = [](std::string_view content_type, std::string_view body) {
    auto d = parse_description(content_type, body);
    EXPECT_FALSE(d.ok());
    EXPECT_EQ(d.status().code(), amqprpc::StatusCode::invalid_argument);
    return d.status().message();
  };
  EXPECT_EQ(why("", ""), "not a describe reply: not JSON");
  EXPECT_EQ(why("text/plain", "{}"),
            "not a describe reply: its content type is 'text/plain', not application/json");
  EXPECT_EQ(why("", "[]"), "not a describe reply: not a JSON object");
  EXPECT_EQ(why("", R"({"methods":[]})"), "not a describe reply: no \"service\" string");
  EXPECT_EQ(why("", R"({"service":"s"})"), "not a describe reply: no \"methods\" array");
  EXPECT_EQ(why("", R"({"service":"s","methods":[{"name":1}]})"),
            "not a describe reply: a method is not an object with a \"name\" and string members");
  EXPECT_EQ(why("", R"({"service":"s","methods":[],"file_descriptor_set":"Zg="})"),
            "not a describe reply: \"file_descriptor_set\" is not base64");
  EXPECT_EQ(
      why("", R"({"service":"s","methods":[],"file_descriptor_set":"/w=="})"),
      "not a describe reply: \"file_descriptor_set\": not a google.protobuf.FileDescriptorSet");
}

pb::FileDescriptorProto when_file() {
  pb::FileDescriptorProto f;
  f.set_name("when.proto");
  f.set_package("t");
  f.set_syntax("proto3");
  f.add_dependency("google/protobuf/timestamp.proto");
  auto* m = f.add_message_type();
  m->set_name("When");
  auto* at = m->add_field();
  at->set_name("at");
  at->set_number(1);
  at->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  at->set_type(pb::FieldDescriptorProto::TYPE_MESSAGE);
  at->set_type_name(".google.protobuf.Timestamp");
  return f;
}

TEST(Schema, WellKnownTypesComeFromOurProtobufNotFromTheServer) {
  // A server's Timestamp with another layout: the JSON mapping would trust it. Ours is used.
  pb::FileDescriptorProto fake;
  fake.set_name("google/protobuf/timestamp.proto");
  fake.set_package("google.protobuf");
  fake.set_syntax("proto3");
  auto* ts = fake.add_message_type();
  ts->set_name("Timestamp");
  auto* seconds = ts->add_field();
  seconds->set_name("seconds");
  seconds->set_number(1);
  seconds->set_label(pb::FieldDescriptorProto::LABEL_OPTIONAL);
  seconds->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  pb::FileDescriptorSet set;
  *set.add_file() = fake;
  *set.add_file() = when_file();
  auto schema = Schema::from_descriptor_set(set.SerializeAsString());
  ASSERT_TRUE(schema.ok()) << schema.status().to_string();
  auto when = (*schema)->find("t.When");
  ASSERT_TRUE(when.ok()) << when.status().to_string();
  auto binary = (*schema)->json_to_binary(*when, R"({"at":"2024-01-02T03:04:05Z"})");
  ASSERT_TRUE(binary.ok()) << binary.status().to_string();
  EXPECT_EQ((*schema)->binary_to_json(*when, *binary).value(), R"({"at":"2024-01-02T03:04:05Z"})");
}

TEST(Schema, ATypeWhoseFileDoesNotBuildIsUnknownWithTheReason) {
  pb::FileDescriptorSet set;
  *set.add_file() = when_file();  // its import is missing
  auto schema = Schema::from_descriptor_set(set.SerializeAsString());
  ASSERT_TRUE(schema.ok());
  auto when = (*schema)->find("t.When");
  EXPECT_EQ(when.status().code(), amqprpc::StatusCode::not_found);
  EXPECT_NE(when.status().message().find("does not build"), std::string::npos)
      << when.status().message();

  *set.add_file() = when_file();
  EXPECT_FALSE(Schema::from_descriptor_set(set.SerializeAsString()).ok()) << "a file twice";
  // A file outside google/protobuf/ defining google.protobuf types: left out.
  pb::FileDescriptorProto sneaky = when_file();
  sneaky.set_package("google.protobuf");
  sneaky.clear_dependency();
  sneaky.mutable_message_type(0)->mutable_field(0)->set_type(pb::FieldDescriptorProto::TYPE_STRING);
  sneaky.mutable_message_type(0)->mutable_field(0)->clear_type_name();
  pb::FileDescriptorSet other;
  *other.add_file() = sneaky;
  auto s2 = Schema::from_descriptor_set(other.SerializeAsString());
  ASSERT_TRUE(s2.ok());
  EXPECT_FALSE((*s2)->find("google.protobuf.When").ok());
}

}  // namespace
