// Protobuf messages: every generated message travels as application/protobuf with its full
// name in x-rpc-type; a request in JSON (application/json, protobuf's JSON mapping) is read too,
// and answered in JSON. Include this to type methods and calls with protobuf messages; it needs
// Debian's libprotobuf-dev (link protobuf::libprotobuf). Code from protoc-gen-amqprpc includes
// it.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>

#include <concepts>
#include <string>
#include <string_view>

#include "amqprpc/codec.hpp"

namespace amqprpc {

namespace detail {

// Adds `file` and, first, everything it imports.
inline void add_proto_file(const google::protobuf::FileDescriptor* file, ProtoFiles& files) {
  if (files.count(file->name()) != 0) return;
  for (int i = 0; i < file->dependency_count(); ++i) add_proto_file(file->dependency(i), files);
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  files.emplace(file->name(), proto.SerializeAsString());
}

}  // namespace detail

template <class T>
requires std::derived_from<T, google::protobuf::Message>
struct Codec<T> {
  static constexpr std::string_view encoding = "protobuf";
  static std::string type_name() { return T::descriptor()->full_name(); }

  static Encoded encode(const T& value, std::string_view peer_content_type) {
    if (peer_content_type == kJsonContentType) {
      std::string json;
      google::protobuf::util::JsonPrintOptions options;
      options.preserve_proto_field_names = false;
      if (google::protobuf::util::MessageToJsonString(value, &json, options).ok()) {
        return {std::move(json), std::string(kJsonContentType), type_name()};
      }
      // Not representable in JSON (cannot happen for valid messages): binary instead.
    }
    return {value.SerializeAsString(), std::string(kProtobufContentType), type_name()};
  }

  static Status decode(std::string_view content_type, const std::string& body, T& out) {
    if (content_type == kJsonContentType) {
      google::protobuf::util::JsonParseOptions options;
      auto st = google::protobuf::util::JsonStringToMessage(body, &out, options);
      if (!st.ok()) {
        return {StatusCode::invalid_argument, "JSON: " + std::string(st.message())};
      }
      return {};
    }
    if (!content_type.empty() && content_type != kProtobufContentType) {
      return {StatusCode::invalid_argument,
              "content type '" + std::string(content_type) + "' is neither " +
                  std::string(kProtobufContentType) + " nor " + std::string(kJsonContentType)};
    }
    if (!out.ParseFromString(body)) {
      return {StatusCode::invalid_argument, "not a valid serialized " + type_name() + " (" +
                                                std::to_string(body.size()) + " bytes)"};
    }
    return {};
  }

  static void add_proto_files(ProtoFiles& files) {
    detail::add_proto_file(T::descriptor()->file(), files);
  }
};

}  // namespace amqprpc
