// The wire contract shared by client and server (docs/PROTOCOL.md explains it for other
// languages). Success replies are the body alone, as the seed expects; errors add headers.
#pragma once

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

// The properties and body of the reply a server sends for `reply` to a request.
inline void encode_reply(const Reply& reply, std::string_view correlation_id, Properties& props,
                         std::string& body) {
  props.correlation_id = correlation_id;
  props.headers = reply.headers;
  props.content_type = reply.content_type;
  if (reply.status.ok()) {
    body = reply.body;
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
