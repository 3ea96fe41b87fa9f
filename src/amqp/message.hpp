// The AMQP messages the library sends and receives, as plain C++ values: no rabbitmq-c type
// here, so the protocol, client and server code above src/amqp/ never sees <amqp.h>.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "amqprpc/message.hpp"

namespace amqprpc::detail::amqp {

// The basic.properties the library uses. Empty strings and nullopt are "not set".
struct Properties {
  std::string content_type;
  std::string correlation_id;
  std::string reply_to;
  std::string expiration;  // per-message TTL in ms, as text
  std::string message_id;
  std::optional<std::uint8_t> priority;
  std::uint8_t delivery_mode = 0;  // 0: unset, 1: transient, 2: persistent
  // The publishing user, validated by RabbitMQ: a message carrying it was published by a
  // connection logged in as that user.
  std::string user_id;
  Headers headers;
  // The header table exactly as it arrived (AMQP encoding), when the channel keeps it (see
  // Channel::keep_wire_headers). Publishing properties that carry it sends this table with the
  // entries of `headers` added or replacing theirs: a message re-published this way keeps what
  // it carried, in its own size, whatever the text of `headers` would grow to.
  std::string wire_headers;
};

// A header given as two views (PropertiesView::added).
struct HeaderView {
  std::string_view key;
  std::string_view value;
};

// Properties to publish, as views of strings kept elsewhere (a call, a Properties), so that
// publishing copies and allocates nothing. It must not outlive what it views. Every Properties
// publishes as its view. The headers sent are `wire_headers`' entries, then `headers`', then
// `added`, each name once: an `added` entry replaces a `headers` entry of its name, and both
// replace a `wire_headers` entry of theirs.
struct PropertiesView {
  PropertiesView() = default;
  // Implicit: a Properties is published, validated and copied as it is.
  PropertiesView(const Properties& p)  // NOLINT(google-explicit-constructor)
      : content_type(p.content_type),
        correlation_id(p.correlation_id),
        reply_to(p.reply_to),
        expiration(p.expiration),
        message_id(p.message_id),
        priority(p.priority),
        delivery_mode(p.delivery_mode),
        user_id(p.user_id),
        headers(&p.headers),
        wire_headers(p.wire_headers) {}

  // Calls f(key, value) for the entries of `headers` and `added` that the message carries
  // (the rule above), each name once.
  template <class F>
  void for_each_header(F&& f) const {
    if (headers != nullptr) {
      for (const auto& [key, value] : *headers) {
        if (!is_added(key)) f(std::string_view(key), std::string_view(value));
      }
    }
    for (const HeaderView& h : added) f(h.key, h.value);
  }
  // Whether `key` is the name of an entry of `headers` or `added`.
  bool names(std::string_view key) const {
    return is_added(key) || (headers != nullptr && headers->find(key) != headers->end());
  }

  std::string_view content_type;
  std::string_view correlation_id;
  std::string_view reply_to;
  std::string_view expiration;
  std::string_view message_id;
  std::optional<std::uint8_t> priority;
  std::uint8_t delivery_mode = 0;
  std::string_view user_id;
  const Headers* headers = nullptr;   // none when null
  std::span<const HeaderView> added;  // each name at most once
  std::string_view wire_headers;

 private:
  bool is_added(std::string_view key) const {
    for (const HeaderView& h : added) {
      if (h.key == key) return true;
    }
    return false;
  }
};

// The properties a view shows, copied (the headers as for_each_header gives them; the wire
// headers as they are).
inline Properties to_properties(const PropertiesView& v) {
  Properties p;
  p.content_type = v.content_type;
  p.correlation_id = v.correlation_id;
  p.reply_to = v.reply_to;
  p.expiration = v.expiration;
  p.message_id = v.message_id;
  p.priority = v.priority;
  p.delivery_mode = v.delivery_mode;
  p.user_id = v.user_id;
  v.for_each_header(
      [&](std::string_view key, std::string_view value) { p.headers.emplace(key, value); });
  p.wire_headers = v.wire_headers;
  return p;
}

// A whole message pushed to one of our consumers.
struct Delivery {
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string consumer_tag;
  Properties props;
  std::string body;
};

// A mandatory message the broker could not route, sent back to us.
struct Returned {
  std::uint16_t reply_code = 0;
  std::string reply_text;
  Properties props;
  std::string body;
};

// What the frame assembler hands out once a message's last frame has arrived.
using Incoming = std::variant<Delivery, Returned>;

// A passive declaration on the side channel (Channel::probe): does a queue or an exchange
// exist, and, for a queue, how many consumers and ready messages it has.
struct Probe {
  enum class Kind { queue, exchange };
  Kind kind = Kind::queue;
  std::string name;
};

struct ProbeResult {
  Probe probe;
  // ok: it exists; not_found: it does not; anything else (permission_denied,
  // failed_precondition for another connection's exclusive queue...): the broker would not say.
  Status status;
  std::uint32_t consumers = 0;
  std::uint32_t messages = 0;
};

struct QueueSpec {
  std::string name;  // empty: the broker picks a name
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = false;
  Headers arguments;  // e.g. x-queue-type = quorum

  // A queue of this connection alone: exclusive, deleted with it (empty name: the broker's).
  static QueueSpec of_this_connection(std::string name) {
    return QueueSpec{std::move(name), false, true, true, {}};
  }
};

}  // namespace amqprpc::detail::amqp
