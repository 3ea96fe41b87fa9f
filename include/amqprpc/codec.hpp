// Typed messages: a Codec<T> turns a T into a message body and back. Raw bytes (std::string)
// are built in; amqprpc/json.hpp adds every type nlohmann::json converts (to_json/from_json),
// amqprpc/protobuf.hpp every protobuf message. Include the one a program uses: the library
// itself depends on neither.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "amqprpc/status.hpp"

namespace amqprpc {

inline constexpr std::string_view kJsonContentType = "application/json";
inline constexpr std::string_view kProtobufContentType = "application/protobuf";
// The header naming a typed body's type (a protobuf message's full name), on requests, replies
// and, as x-rpc-detail-type, on error details.
inline constexpr std::string_view kTypeHeader = "x-rpc-type";

// A typed value as it travels.
struct Encoded {
  std::string body;
  std::string content_type;
  std::string type;  // for kTypeHeader; empty: not sent
};

// The .proto files a service's types come from, for describe: file name -> serialized
// google.protobuf.FileDescriptorProto. Protobuf codecs add their type's file and its imports.
using ProtoFiles = std::map<std::string, std::string, std::less<>>;

// What a codec provides (see the specialisations):
//   static constexpr std::string_view encoding;  // "bytes", "json" or "protobuf" (describe)
//   static std::string type_name();              // the type describe names and kTypeHeader carries
//   static Encoded encode(const T& value, std::string_view peer_content_type);
//       peer_content_type: what the other side spoke (a reply answers a JSON request in JSON
//       when the codec can); empty: the codec's own encoding
//   static Status decode(std::string_view content_type, const std::string& body, T& out);
//       invalid_argument saying what is wrong, never an exception
//   static void add_proto_files(ProtoFiles&);    // optional
template <class T>
struct Codec;

// Raw bytes: any content type, sent as the caller's (none by default).
template <>
struct Codec<std::string> {
  static constexpr std::string_view encoding = "bytes";
  static std::string type_name() { return "bytes"; }
  static Encoded encode(const std::string& value, std::string_view) { return {value, {}, {}}; }
  static Status decode(std::string_view, const std::string& body, std::string& out) {
    out = body;
    return {};
  }
};

template <class T>
concept Codable = requires(const T& value, T& out, const std::string& body) {
  { Codec<T>::encoding } -> std::convertible_to<std::string_view>;
  { Codec<T>::type_name() } -> std::convertible_to<std::string>;
  { Codec<T>::encode(value, std::string_view{}) } -> std::same_as<Encoded>;
  { Codec<T>::decode(std::string_view{}, body, out) } -> std::same_as<Status>;
};

// Whether T looks like a generated protobuf message (without including protobuf): JSON's
// codec leaves those to protobuf's.
template <class T>
concept ProtobufLike = requires {
  T::descriptor();
  T::default_instance();
};

namespace detail {
template <class T>
void add_proto_files(ProtoFiles& files) {
  if constexpr (requires { Codec<T>::add_proto_files(files); }) Codec<T>::add_proto_files(files);
}
}  // namespace detail

}  // namespace amqprpc
