// The reserved methods every server answers itself (docs/PROTOCOL.md): amqprpc.describe, the
// service's methods and types (and, for protobuf, the FileDescriptorSet of its .proto files),
// and amqprpc.health, whether this server is serving.
#pragma once

#include <string>

#include "amqprpc/message.hpp"
#include "amqprpc/service.hpp"

namespace amqprpc::detail {

// The describe reply's JSON body (computed once per service: it does not change).
std::string describe_json(const Service& service);

// The serialized google.protobuf.FileDescriptorSet of a service's .proto files, imports
// first: what describe sends base64-encoded.
std::string file_descriptor_set(const ProtoFiles& files);

// The health reply: {"status":"serving"} or {"status":"not_serving"}.
Reply health_reply(bool serving);

// Standard base64 (RFC 4648, padded).
std::string base64_encode(std::string_view bytes);

}  // namespace amqprpc::detail
