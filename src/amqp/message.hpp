// The AMQP messages the library sends and receives, as plain C++ values: no rabbitmq-c type
// here, so the protocol, client and server code above src/amqp/ never sees <amqp.h>.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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
