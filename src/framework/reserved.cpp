#include "framework/reserved.hpp"

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "amqprpc/codec.hpp"

namespace amqprpc::detail {

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  // OpenSSL's encoder: no line breaks, padded, NUL-terminated (hence the extra byte).
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string file_descriptor_set(const ProtoFiles& files) {
  // FileDescriptorSet is `repeated FileDescriptorProto file = 1;`: each file is field 1,
  // length-delimited (tag byte 0x0a, varint length, bytes).
  std::string out;
  for (const auto& [name, proto] : files) {
    out.push_back('\x0a');
    for (std::size_t n = proto.size();; n >>= 7) {
      if (n < 0x80) {
        out.push_back(static_cast<char>(n));
        break;
      }
      out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    }
    out += proto;
  }
  return out;
}

std::string describe_json(const Service& service) {
  using json = nlohmann::json;
  json methods = json::array();
  for (const auto& [name, m] : service.methods()) {
    json method{
        {"name", name},
        {"encoding", m.info.encoding},
        {"request_type", m.info.request_type.empty() ? m.info.encoding : m.info.request_type},
        {"reply_type", m.info.reply_type.empty() ? m.info.encoding : m.info.reply_type}};
    // Only streaming methods say so: describe of a service without them reads as before.
    if (m.stream_handler) method["streaming"] = true;
    methods.push_back(std::move(method));
  }
  json j{{"service", service.name()},
         {"queue", service.queue()},
         {"default_handler", static_cast<bool>(service.default_method())},
         {"methods", std::move(methods)},
         {"reserved", {kDescribeMethod, kHealthMethod}}};
  if (!service.proto_files().empty()) {
    j["file_descriptor_set"] = base64_encode(file_descriptor_set(service.proto_files()));
  }
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Reply health_reply(bool serving) {
  Reply reply = Reply::ok(serving ? R"({"status":"serving"})" : R"({"status":"not_serving"})");
  reply.content_type = std::string(kJsonContentType);
  return reply;
}

}  // namespace amqprpc::detail
