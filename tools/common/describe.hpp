// What a server says of itself (its reply to amqprpc.describe), read by the command line: the
// methods, and the protobuf types of its descriptor set as dynamic messages, so `amqp-rpc call`
// can speak a protobuf method in JSON without generated code (as grpcurl does with reflection).
// The reply comes from whoever consumes the queue: every function here takes hostile input
// and answers with a status, never a crash (tests/fuzz/fuzz_describe.cpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "amqprpc/status.hpp"

namespace google::protobuf {
class Descriptor;
class Message;
}  // namespace google::protobuf

namespace amqprpc::tools {

// Standard base64 (RFC 4648 §4), padded or not; nothing else (no spaces, no line breaks, no
// URL alphabet). nullopt when `text` is not base64.
std::optional<std::string> base64_decode(std::string_view text);

// The message types of a google.protobuf.FileDescriptorSet: a descriptor pool over a database of
// its files (built lazily, file by file, when a type is asked for), and dynamic messages of them.
class Schema {
 public:
  // Fails with invalid_argument when `descriptor_set` is not a FileDescriptorSet or names a
  // file twice. A file that does not build (a missing import, a bad field) only makes its types
  // unknown: find() says why.
  static Result<std::unique_ptr<Schema>> from_descriptor_set(std::string_view descriptor_set);

  ~Schema();
  Schema(const Schema&) = delete;
  Schema& operator=(const Schema&) = delete;

  // The message type `full_name`, or not_found saying why (not in the set, or its file does not
  // build).
  Result<const google::protobuf::Descriptor*> find(const std::string& full_name) const;

  // A new, empty message of `type` (a type find() returned).
  std::unique_ptr<google::protobuf::Message> new_message(
      const google::protobuf::Descriptor* type) const;

  // `json` (protobuf's JSON mapping) as a serialized `type`; invalid_argument saying why not.
  Result<std::string> json_to_binary(const google::protobuf::Descriptor* type,
                                     std::string_view json) const;
  // A serialized `type` as JSON (protobuf's JSON mapping, one line); invalid_argument when the
  // bytes are not a `type`.
  Result<std::string> binary_to_json(const google::protobuf::Descriptor* type,
                                     std::string_view binary) const;

 private:
  struct Parts;
  explicit Schema(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> parts_;
};

// The definition of a message type as in a .proto file, for `describe`:
//   message amqprpc.test.EchoReply {
//     string text = 1;
//     repeated string parts = 2;
//   }
// each line after the first indented by `indent`.
std::string message_definition(const google::protobuf::Descriptor& type,
                               std::string_view indent = "");

struct DescribedMethod {
  std::string name;
  std::string encoding;  // "bytes", "json", "protobuf" or "mixed"
  std::string request_type;
  std::string reply_type;
  bool streaming = false;  // answers with a stream of items, then a status
};

struct Description {
  std::string service;
  std::string queue;
  bool default_handler = false;
  std::vector<DescribedMethod> methods;
  std::vector<std::string> reserved;
  std::unique_ptr<Schema> schema;  // null without a descriptor set (no protobuf method)

  const DescribedMethod* find(std::string_view method) const;
  // "Flip, Say" (or "none").
  std::string method_names() const;
};

// A reply to amqprpc.describe (its content type and body). invalid_argument saying what is
// wrong when it is not one: a server that does not describe itself (a tutorial server, an old
// server) answers something else.
Result<Description> parse_description(std::string_view content_type, std::string_view body);

}  // namespace amqprpc::tools
