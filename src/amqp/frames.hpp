// Frames into messages (the role of rabbitmq-c's amqp_consumer.c): a basic.deliver or
// basic.return method starts a message, its header frame brings the properties and the body
// size, body frames bring the body; the last one completes it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "amqp/message.hpp"

struct amqp_frame_t_;  // rabbitmq-c types, kept out of this header
struct amqp_basic_properties_t_;

namespace amqprpc::detail::amqp {

class FrameAssembler {
 public:
  // Whether messages keep their header table as it arrived (Properties::wire_headers).
  void keep_wire_headers(bool keep) { keep_wire_headers_ = keep; }
  // The method frame that starts a message (a Delivery or a Returned), moved in once. Drops a
  // message still being assembled.
  template <class Message>
  void begin(Message&& message) {
    partial_.emplace(std::in_place_type<std::decay_t<Message>>, std::forward<Message>(message));
    body_size_ = 0;
    have_header_ = false;
    done_ = false;
  }
  // A content (header or body) frame; the finished message once its last byte arrived, or
  // null. The message is the assembler's until the next call: the caller moves it out (a
  // message is only moved where it goes, never on its way). Stray content frames (no message
  // begun, or a body before its header) are ignored.
  Incoming* add(const amqp_frame_t_& frame);
  // Drops a finished message (what its receiver left of it): its memory is not kept until the
  // next message begins.
  void release() {
    partial_.reset();
    done_ = false;
  }

 private:
  std::optional<Incoming> partial_;
  std::uint64_t body_size_ = 0;
  bool have_header_ = false;
  bool done_ = false;  // partial_ was handed out whole: nothing is being assembled
  bool keep_wire_headers_ = false;
};

// The properties rabbitmq-c decoded, as our values, into `out` (empty): a message's properties
// are read where they stay. With `keep_wire_headers`, the header table in its AMQP encoding
// too, copied from `raw`, the property list as it arrived (the header frame's), when it is there.
void read_properties(const amqp_basic_properties_t_& p, bool keep_wire_headers, Properties& out,
                     std::string_view raw = {});
// The header table in a basic header frame's raw property list, with its length prefix, as
// amqp_decode_table reads it; empty when there is none or the list is cut short.
std::string_view header_table_in(std::string_view raw);

}  // namespace amqprpc::detail::amqp
