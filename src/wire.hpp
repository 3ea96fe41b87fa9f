// The wire contract shared by client and server (docs/PROTOCOL.md explains it for other
// languages). Success replies are the body alone, as the seed expects; errors add headers.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "amqp/session.hpp"
#include "amqprpc/message.hpp"

namespace amqprpc::detail::wire {

inline constexpr std::string_view kDirectReplyTo = "amq.rabbitmq.reply-to";
// Error replies: the status code's wire name, and its message (also the body, as text).
inline constexpr std::string_view kStatusHeader = "x-rpc-status";
inline constexpr std::string_view kMessageHeader = "x-rpc-message";
// Requests: the caller's absolute deadline, milliseconds since the Unix epoch.
inline constexpr std::string_view kDeadlineHeader = "x-rpc-deadline";
// Requests: how many times a server has been handed this request (poison-message accounting).
inline constexpr std::string_view kAttemptsHeader = "x-rpc-attempts";
// Set by quorum queues on redelivered messages: how many times it was returned.
inline constexpr std::string_view kDeliveryCountHeader = "x-delivery-count";
// Dead-lettered requests: why.
inline constexpr std::string_view kDeadReasonHeader = "x-rpc-dead-reason";

// A non-negative decimal integer header; nullopt when absent or not such a number.
inline std::optional<std::int64_t> int_header(const Headers& headers, std::string_view name) {
  auto it = headers.find(name);
  if (it == headers.end() || it->second.empty() || it->second.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : it->second) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

// Which delivery of this request this is (1 = the first), from the quorum queue's count or our
// own header, and the broker's redelivered flag.
inline std::int64_t attempt_of(const Headers& headers, bool redelivered) {
  if (auto count = int_header(headers, kDeliveryCountHeader)) return *count + 1;
  std::int64_t base = int_header(headers, kAttemptsHeader).value_or(1);
  if (base < 1) base = 1;
  return redelivered ? base + 1 : base;
}

// RabbitMQ's default max_message_size (128 MiB); larger bodies make the broker close the channel.
inline constexpr std::size_t kMaxBodySize = 128u * 1024 * 1024;

// Checks what rabbitmq-c and the broker would refuse only after part of the message is on the
// wire (which breaks the connection): short strings over 255 bytes, a header table too large
// for one frame, a body over the broker's limit. `what` names the message in the error.
inline Status validate_outgoing(const Properties& p, std::size_t body_size, int frame_max,
                                std::string_view what) {
  auto too_long = [&](std::string_view field, std::size_t size) {
    return Status{StatusCode::invalid_argument, std::string(what) + ": " + std::string(field) +
                                                    " is " + std::to_string(size) +
                                                    " bytes; AMQP allows at most 255"};
  };
  if (p.content_type.size() > 255) return too_long("content type", p.content_type.size());
  if (p.correlation_id.size() > 255) return too_long("correlation id", p.correlation_id.size());
  if (p.reply_to.size() > 255) return too_long("reply_to", p.reply_to.size());
  std::size_t table = 0;
  for (const auto& [key, value] : p.headers) {
    if (key.size() > 255) return too_long("header name '" + key.substr(0, 32) + "...'", key.size());
    table += 1 + key.size() + 1 + 4 + value.size();
  }
  // The header frame also carries the other properties: keep a margin for them.
  const std::size_t room = frame_max > 2048 ? static_cast<std::size_t>(frame_max) - 2048 : 0;
  if (table > room) {
    return {StatusCode::invalid_argument,
            std::string(what) + ": headers take " + std::to_string(table) +
                " bytes; they must fit in one frame (at most " + std::to_string(room) + ")"};
  }
  if (body_size > kMaxBodySize) {
    return {StatusCode::resource_exhausted,
            std::string(what) + ": body is " + std::to_string(body_size) +
                " bytes; the broker takes at most " + std::to_string(kMaxBodySize)};
  }
  return {};
}

// The properties and body of the reply a server sends for `reply` to a request.
inline void encode_reply(Reply&& reply, std::string_view correlation_id, Properties& props,
                         std::string& body) {
  props.correlation_id = correlation_id;
  props.headers = std::move(reply.headers);
  props.content_type = std::move(reply.content_type);
  if (reply.status.ok()) {
    body = std::move(reply.body);
    return;
  }
  props.headers.insert_or_assign(std::string(kStatusHeader),
                                 std::string(to_string(reply.status.code())));
  props.headers.insert_or_assign(std::string(kMessageHeader), reply.status.message());
  if (props.content_type.empty()) props.content_type = "text/plain";
  body = reply.status.message();
}

// What a client makes of a reply message.
inline Reply decode_reply(Properties&& props, std::string&& body) {
  Reply reply;
  reply.content_type = std::move(props.content_type);
  reply.headers = std::move(props.headers);
  auto status = reply.headers.find(kStatusHeader);
  if (status != reply.headers.end() && status->second != "ok") {
    StatusCode code = status_code_from_string(status->second).value_or(StatusCode::unknown);
    auto message = reply.headers.find(kMessageHeader);
    std::string text = message != reply.headers.end() ? message->second : body;
    if (code == StatusCode::unknown && status->second != "unknown") {
      text = "error reply with unknown status '" + status->second + "': " + text;
    }
    reply.status = Status{code, std::move(text)};
  }
  reply.body = std::move(body);
  return reply;
}

}  // namespace amqprpc::detail::wire
