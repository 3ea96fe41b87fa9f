#include "amqp/frames.hpp"

#include <amqp.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include "amqp/table.hpp"

namespace amqprpc::detail::amqp {
namespace {
constexpr std::uint64_t kReserveAtMost = std::uint64_t{1} << 20;
}  // namespace

std::string_view header_table_in(std::string_view raw) {
  // A basic header's property list (AMQP 0-9-1, 4.2.6.1): 16 bits of flags, then the present
  // properties in flag order; the first three are content-type and content-encoding (short
  // strings: a length byte) and headers (a table: a 32-bit big-endian length).
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  const std::size_t n = raw.size();
  if (n < 2) return {};
  const unsigned flags = (unsigned{p[0]} << 8) | p[1];
  // Bit 0 says another flags word follows; basic's properties never need one, so a list that
  // has one is not read here (its table is re-encoded from what rabbitmq-c decoded instead).
  if ((flags & 1) != 0 || (flags & AMQP_BASIC_HEADERS_FLAG) == 0) return {};
  std::size_t at = 2;
  for (unsigned flag : {AMQP_BASIC_CONTENT_TYPE_FLAG, AMQP_BASIC_CONTENT_ENCODING_FLAG}) {
    if ((flags & flag) == 0) continue;
    if (at >= n) return {};
    at += 1 + std::size_t{p[at]};
  }
  if (at + 4 > n) return {};
  const std::size_t size = (std::size_t{p[at]} << 24) | (std::size_t{p[at + 1]} << 16) |
                           (std::size_t{p[at + 2]} << 8) | std::size_t{p[at + 3]};
  if (size > n - at - 4) return {};
  return {reinterpret_cast<const char*>(p + at), 4 + size};
}

void read_properties(const amqp_basic_properties_t& p, bool keep_wire_headers, Properties& out,
                     std::string_view raw) {
  if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) out.content_type = to_string(p.content_type);
  if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) out.correlation_id = to_string(p.correlation_id);
  if (p._flags & AMQP_BASIC_REPLY_TO_FLAG) out.reply_to = to_string(p.reply_to);
  if (p._flags & AMQP_BASIC_EXPIRATION_FLAG) out.expiration = to_string(p.expiration);
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) out.message_id = to_string(p.message_id);
  if (p._flags & AMQP_BASIC_PRIORITY_FLAG) out.priority = p.priority;
  if (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) out.delivery_mode = p.delivery_mode;
  if (p._flags & AMQP_BASIC_USER_ID_FLAG) out.user_id = to_string(p.user_id);
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
    out.headers = headers_from_table(p.headers);
    if (keep_wire_headers && p.headers.num_entries > 0) {
      // As it arrived: copied from the frame when it is there (re-encoding costs more).
      const std::string_view table = header_table_in(raw);
      out.wire_headers = table.empty() ? encode_table(p.headers) : std::string(table);
    }
  }
}

Incoming* FrameAssembler::add(const amqp_frame_t& frame) {
  if (!partial_ || done_) return nullptr;
  auto [props, body] = std::visit(
      [](auto& m) { return std::pair<Properties*, std::string*>(&m.props, &m.body); }, *partial_);
  if (frame.frame_type == AMQP_FRAME_HEADER) {
    if (frame.payload.properties.class_id != AMQP_BASIC_CLASS) {
      // Not basic content (decoded as another class's properties): no message of ours.
      partial_.reset();
      return nullptr;
    }
    if (have_header_) *props = Properties{};  // a second header: it replaces the first
    have_header_ = true;
    body_size_ = frame.payload.properties.body_size;
    read_properties(*static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded),
                    keep_wire_headers_, *props,
                    std::string_view(static_cast<const char*>(frame.payload.properties.raw.bytes),
                                     frame.payload.properties.raw.len));
    // The size is the peer's word: reserve no more than a frame-sized start on it (a body that
    // really is large grows as its frames arrive).
    body->reserve(static_cast<std::size_t>(std::min<std::uint64_t>(body_size_, kReserveAtMost)));
  } else if (frame.frame_type == AMQP_FRAME_BODY && have_header_) {
    body->append(static_cast<const char*>(frame.payload.body_fragment.bytes),
                 frame.payload.body_fragment.len);
  } else {
    return nullptr;
  }
  if (!have_header_ || body->size() < body_size_) return nullptr;
  done_ = true;
  return &*partial_;
}

}  // namespace amqprpc::detail::amqp
