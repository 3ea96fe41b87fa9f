// JSON messages: every type nlohmann::json converts both ways (to_json/from_json, or the
// standard types it knows) travels as application/json. Include this to type methods and calls
// with such types; it needs Debian's nlohmann-json3-dev.
//
// A body that is not JSON, or that from_json refuses (by throwing), is a clear error, never a
// crash. One thing only from_json can check: nlohmann converts a JSON number to an integer
// field with a plain cast, so a floating-point number out of the field's range (1e300 into an
// int) is undefined behaviour, and -1 into an unsigned silently wraps. Read integer fields from
// the network with a check (is_number_integer / is_number_unsigned, then get), as the demo's
// examples/fib/fib.cpp does.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "amqprpc/codec.hpp"

namespace amqprpc {

template <class T>
concept JsonCodable = !ProtobufLike<T> && std::is_default_constructible_v<T> &&
                      requires(const T& value, const nlohmann::json& j) {
  nlohmann::json(value);
  j.template get<T>();
};

template <JsonCodable T>
struct Codec<T> {
  static constexpr std::string_view encoding = "json";
  static std::string type_name() { return "json"; }
  static Encoded encode(const T& value, std::string_view) {
    // Invalid UTF-8 in strings is replaced rather than thrown about: a reply always goes out.
    return {nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
            std::string(kJsonContentType),
            {}};
  }
  static Status decode(std::string_view content_type, const std::string& body, T& out) {
    if (!content_type.empty() && content_type != kJsonContentType) {
      return {StatusCode::invalid_argument, "content type '" + std::string(content_type) +
                                                "' is not " + std::string(kJsonContentType)};
    }
    nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return {StatusCode::invalid_argument, "not valid JSON"};
    try {
      out = j.template get<T>();
    } catch (const std::exception& e) {  // nlohmann's, or a from_json's own check
      return {StatusCode::invalid_argument, e.what()};
    }
    return {};
  }
};

}  // namespace amqprpc
