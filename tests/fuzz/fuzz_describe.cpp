// libFuzzer target: what `amqp-rpc` reads from whoever consumes a queue (tools/common/describe):
// describe replies (JSON), base64, descriptor sets built into a pool, and JSON and binary
// messages of their types. The first byte picks the way in, the rest is the input:
//   0  a describe reply's body; each method's types are looked up and used
//   1  a serialized FileDescriptorSet; each top-level message type is looked up and used
//   2  base64 text: decoding agrees with the library's encoder
//   3  a JSON request and a binary reply for the test service's types (tests/proto/)
// No crash, no UB, no leak; what decodes is consistent.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/describe.hpp"
#include "framework/reserved.hpp"

namespace {

namespace tools = amqprpc::tools;

// The descriptor set of tests/proto/test_messages.proto, as a server describes it.
constexpr std::string_view kTestDescriptorSet =
    "CvcBChlwcm90by90ZXN0X21lc3NhZ2VzLnByb3RvEgxhbXFwcnBjLnRlc3QiKwoLRWNob1JlcXVlc3QSDAoEdGV4dB"
    "gBIAEoCRIOCgZyZXBlYXQYAiABKAUiKAoJRWNob1JlcGx5EgwKBHRleHQYASABKAkSDQoFcGFydHMYAiADKAkiKgoJ"
    "RXJyb3JJbmZvEg0KBWZpZWxkGAEgASgJEg4KBnJlYXNvbhgCIAEoCTJBCgRFY2hvEjkKA1NheRIZLmFtcXBycGMudG"
    "VzdC5FY2hvUmVxdWVzdBoXLmFtcXBycGMudGVzdC5FY2hvUmVwbHliBnByb3RvMw==";

// Uses a type the way the command line does: its definition, an empty message both ways, and
// `input` as JSON and as binary. `strict` (a proto3 schema of ours, no required fields): what
// converts once converts back.
void use_type(const tools::Schema& schema, const std::string& name, std::string_view input,
              bool strict = false) {
  auto type = schema.find(name);
  if (!type) return;
  (void)tools::message_definition(**type, "  ");
  auto empty = schema.json_to_binary(*type, "{}");
  if (empty) (void)schema.binary_to_json(*type, *empty);
  if (auto binary = schema.json_to_binary(*type, input)) {
    auto json = schema.binary_to_json(*type, *binary);
    if (!json && strict) std::abort();
  }
  if (auto json = schema.binary_to_json(*type, input)) {
    auto binary = schema.json_to_binary(*type, *json);  // unknown fields drop out of the JSON
    if (!binary && strict) std::abort();
  }
}

void from_describe(std::string_view body) {
  auto d = tools::parse_description("application/json", body);
  if (!d) {
    if (d.status().code() != amqprpc::StatusCode::invalid_argument) std::abort();
    return;
  }
  (void)d->method_names();
  if (d->schema == nullptr) return;
  int used = 0;
  for (const auto& m : d->methods) {
    if (d->find(m.name) == nullptr) std::abort();
    if (++used > 8) break;  // bounded work per input
    use_type(*d->schema, m.request_type, "{}");
    use_type(*d->schema, m.reply_type, "");
  }
}

void from_descriptor_set(std::string_view bytes) {
  auto schema = tools::Schema::from_descriptor_set(bytes);
  if (!schema) return;
  google::protobuf::FileDescriptorSet set;
  if (!set.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) std::abort();
  int used = 0;
  for (const auto& file : set.file()) {
    for (const auto& message : file.message_type()) {
      if (++used > 16) return;
      std::string name =
          file.package().empty() ? message.name() : file.package() + "." + message.name();
      use_type(**schema, name, "{}");
    }
  }
}

void base64(std::string_view text) {
  auto bytes = tools::base64_decode(text);
  if (!bytes) return;
  auto again = tools::base64_decode(amqprpc::detail::base64_encode(*bytes));
  if (!again || *again != *bytes) std::abort();
}

void test_service_messages(std::string_view input) {
  static const auto* schema = [] {
    auto bytes = tools::base64_decode(kTestDescriptorSet);
    if (!bytes) std::abort();
    auto s = tools::Schema::from_descriptor_set(*bytes);
    if (!s) std::abort();
    return s->release();
  }();
  use_type(*schema, "amqprpc.test.EchoRequest", input, true);
  use_type(*schema, "amqprpc.test.EchoReply", input, true);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // protobuf's complaints about bad input: not ours
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      from_describe(input);
      break;
    case 1:
      from_descriptor_set(input);
      break;
    case 2:
      base64(input);
      break;
    default:
      test_service_messages(input);
      break;
  }
  return 0;
}
