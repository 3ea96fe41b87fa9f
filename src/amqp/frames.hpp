// Frames into messages (the role of rabbitmq-c's amqp_consumer.c): a basic.deliver or
// basic.return method starts a message, its header frame brings the properties and the body
// size, body frames bring the body; the last one completes it.
#pragma once

#include <cstdint>
#include <optional>

#include "amqp/message.hpp"

struct amqp_frame_t_;  // rabbitmq-c types, kept out of this header
struct amqp_basic_properties_t_;

namespace amqprpc::detail::amqp {

class FrameAssembler {
 public:
  // Whether messages keep their header table as it arrived (Properties::wire_headers).
  void keep_wire_headers(bool keep) { keep_wire_headers_ = keep; }
  // The method frame that starts a message. Drops a message still being assembled.
  void begin(Incoming message);
  // A content (header or body) frame; the finished message once its last byte arrived. Stray
  // content frames (no message begun, or a body before its header) are ignored.
  std::optional<Incoming> add(const amqp_frame_t_& frame);

 private:
  std::optional<Incoming> partial_;
  std::uint64_t body_size_ = 0;
  bool have_header_ = false;
  bool keep_wire_headers_ = false;
};

// The properties rabbitmq-c decoded, as our values; with `keep_wire_headers`, the header table
// in its AMQP encoding too.
Properties properties_from(const amqp_basic_properties_t_& p, bool keep_wire_headers = false);

}  // namespace amqprpc::detail::amqp
