#include "amqp/transport.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace amqprpc::detail::amqp {
namespace {

constexpr std::size_t kHeaderSize = 7;  // type, channel, payload size
constexpr std::size_t kFooterSize = 1;  // AMQP_FRAME_END
constexpr std::size_t kFrameOverhead = kHeaderSize + kFooterSize;
// What waits to be written past this is written at once rather than at the end of the turn,
// and past the second the writer waits for the socket (like rabbitmq-c, which always waits):
// a large body never sits in memory twice for long.
constexpr std::size_t kFlushEarly = std::size_t{1} << 20;
constexpr std::size_t kWaitAbove = std::size_t{16} << 20;
// The room a method or a header is first encoded into; frame_max only if that is too small
// (frame_max may be large: no buffer grows to it for nothing).
constexpr std::size_t kFirstRoom = std::size_t{64} << 10;
// The read buffer's first size; it grows to hold a larger frame when one comes.
constexpr std::size_t kFirstInput = std::size_t{256} << 10;

void put16(char* p, std::uint16_t v) {
  p[0] = static_cast<char>(v >> 8);
  p[1] = static_cast<char>(v);
}
void put32(char* p, std::uint32_t v) {
  put16(p, static_cast<std::uint16_t>(v >> 16));
  put16(p + 2, static_cast<std::uint16_t>(v));
}
void put64(char* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v >> 32));
  put32(p + 4, static_cast<std::uint32_t>(v));
}
std::uint16_t get16(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<std::uint16_t>(u[0] << 8 | u[1]);
}
std::uint32_t get32(const char* p) {
  return static_cast<std::uint32_t>(get16(p)) << 16 | get16(p + 2);
}
std::uint64_t get64(const char* p) {
  return static_cast<std::uint64_t>(get32(p)) << 32 | get32(p + 4);
}
amqp_bytes_t bytes_of(const char* p, std::size_t n) {
  return amqp_bytes_t{n, const_cast<char*>(p)};
}

Status lost(const std::string& why) {
  return {StatusCode::unavailable, "connection lost: " + why};
}

}  // namespace

Transport::Transport(amqp_connection_state_t conn)
    : Transport(amqp_get_sockfd(conn), static_cast<std::size_t>(amqp_get_frame_max(conn))) {
  conn_ = conn;
}

Transport::Transport(int fd, std::size_t frame_max)
    : fd_(fd),
      frame_max_(frame_max),
      last_write_(std::chrono::steady_clock::now()),
      in_(kFirstInput),
      pool_(std::make_unique<amqp_pool_t>()) {
  init_amqp_pool(pool_.get(), 4096);
}

Transport::~Transport() {
  empty_amqp_pool(pool_.get());
}

void Transport::release() {
  recycle_amqp_pool(pool_.get());
}

char* Transport::reserve_frame(std::size_t size) {
  if (out_.size() < out_len_ + size) out_.resize(std::max(out_len_ + size, 2 * out_.size()));
  return out_.data() + out_len_;
}

std::size_t Transport::first_room() const {
  return std::min(frame_max_, kFirstRoom);
}

Status Transport::bound_output() {
  if (out_len_ - written_ < kFlushEarly) return {};
  if (Status st = flush(); !st.ok()) return st;
  if (out_len_ - written_ < kWaitAbove) return {};
  return flush_all(std::chrono::milliseconds::max());
}

std::size_t Transport::commit_frame(char* frame, std::uint8_t type, std::uint16_t channel,
                                    std::size_t payload) {
  frame[0] = static_cast<char>(type);
  put16(frame + 1, channel);
  put32(frame + 3, static_cast<std::uint32_t>(payload));
  frame[kHeaderSize + payload] = static_cast<char>(AMQP_FRAME_END);
  out_len_ += payload + kFrameOverhead;
  return payload + kFrameOverhead;
}

Status Transport::method(std::uint16_t channel, std::uint32_t method_id, void* decoded) {
  if (Status st = encode_method(channel, method_id, decoded); !st.ok()) return st;
  return bound_output();
}

Status Transport::encode_method(std::uint16_t channel, std::uint32_t method_id, void* decoded) {
  // Most methods are small: a large room is taken only when the first does not do.
  for (std::size_t size = first_room();; size = frame_max_) {
    char* frame = reserve_frame(size);
    put32(frame + kHeaderSize, method_id);
    amqp_bytes_t room{size - kFrameOverhead - 4, frame + kHeaderSize + 4};
    const int n = amqp_encode_method(method_id, decoded, room);
    if (n >= 0) {
      commit_frame(frame, AMQP_FRAME_METHOD, channel, static_cast<std::size_t>(n) + 4);
      return {};
    }
    if (size == frame_max_) {
      return {StatusCode::invalid_argument,
              std::string("cannot encode an AMQP method: ") + amqp_error_string2(n)};
    }
  }
}

Status Transport::publish(std::uint16_t channel, void* publish_method,
                          const amqp_basic_properties_t& properties, std::string_view body) {
  const std::size_t mark = out_len_;
  if (Status st = encode_method(channel, AMQP_BASIC_PUBLISH_METHOD, publish_method); !st.ok()) {
    return st;
  }
  char* frame = nullptr;
  int n = -1;
  for (std::size_t size = first_room();; size = frame_max_) {
    frame = reserve_frame(size);
    put16(frame + kHeaderSize, AMQP_BASIC_CLASS);
    put16(frame + kHeaderSize + 2, 0);  // weight
    put64(frame + kHeaderSize + 4, body.size());
    amqp_bytes_t room{size - kFrameOverhead - 12, frame + kHeaderSize + 12};
    // rabbitmq-c's encoder takes a non-const pointer but only reads through it.
    n = amqp_encode_properties(AMQP_BASIC_CLASS, const_cast<amqp_basic_properties_t*>(&properties),
                               room);
    if (n >= 0 || size == frame_max_) break;
  }
  if (n < 0) {
    out_len_ = mark;
    return {StatusCode::invalid_argument,
            "the message's properties and headers do not fit in one frame of " +
                std::to_string(frame_max_) + " bytes (" + amqp_error_string2(n) + ")"};
  }
  commit_frame(frame, AMQP_FRAME_HEADER, channel, static_cast<std::size_t>(n) + 12);
  const std::size_t chunk = frame_max_ - kFrameOverhead;
  for (std::size_t at = 0; at < body.size(); at += chunk) {
    const std::size_t len = std::min(chunk, body.size() - at);
    frame = reserve_frame(len + kFrameOverhead);
    std::memcpy(frame + kHeaderSize, body.data() + at, len);
    commit_frame(frame, AMQP_FRAME_BODY, channel, len);
    if (Status st = bound_output(); !st.ok()) return st;
  }
  return bound_output();
}

void Transport::heartbeat() {
  commit_frame(reserve_frame(kFrameOverhead), AMQP_FRAME_HEARTBEAT, 0, 0);
}

Status Transport::write_error(int error) {
  if (error == EPIPE || error == ECONNRESET) {
    return lost(amqp_error_string2(AMQP_STATUS_CONNECTION_CLOSED));
  }
  return lost(std::strerror(error));
}

Status Transport::flush() {
  while (written_ < out_len_) {
    const ssize_t n = ::send(fd_, out_.data() + written_, out_len_ - written_, MSG_NOSIGNAL);
    if (n > 0) {
      written_ += static_cast<std::size_t>(n);
      last_write_ = std::chrono::steady_clock::now();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return write_error(n < 0 ? errno : EPIPE);
  }
  if (written_ == out_len_) {
    // All written: the next frames start at the front (this is the only place that writes, so
    // the output never holds written bytes past a flush).
    written_ = out_len_ = 0;
  } else if (written_ >= out_len_ / 2) {
    // Most of it went: keep the buffer from creeping forward.
    std::memmove(out_.data(), out_.data() + written_, out_len_ - written_);
    out_len_ -= written_;
    written_ = 0;
  }
  return {};
}

Status Transport::flush_all(std::chrono::milliseconds bound) {
  const bool forever = bound == std::chrono::milliseconds::max();
  const auto until = forever ? std::chrono::steady_clock::time_point::max()
                             : std::chrono::steady_clock::now() + bound;
  for (;;) {
    if (Status st = flush(); !st.ok()) return st;
    if (!wants_write()) return {};
    int timeout = -1;
    if (!forever) {
      auto left =
          std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return lost("the broker took nothing written for " + std::to_string(bound.count()) + " ms");
      }
      timeout = static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30));
    }
    pollfd p{fd_, POLLOUT, 0};
    if (::poll(&p, 1, timeout) < 0 && errno != EINTR) return lost(std::strerror(errno));
  }
}

Result<bool> Transport::next(amqp_frame_t& frame) {
  for (;;) {
    const std::size_t avail = in_end_ - in_begin_;
    if (avail >= kHeaderSize) {
      const char* start = in_.data() + in_begin_;
      const std::size_t whole = std::size_t{get32(start + 3)} + kFrameOverhead;
      if (whole > frame_max_) {
        return lost("the broker sent a frame of " + std::to_string(whole) +
                    " bytes, over the frame_max of " + std::to_string(frame_max_));
      }
      if (avail >= whole) {
        in_begin_ += whole;
        if (static_cast<unsigned char>(start[whole - 1]) != AMQP_FRAME_END) {
          return lost("the broker sent a frame without its end marker (not AMQP?)");
        }
        if (Status st = decode(start, whole, frame); !st.ok()) return st;
        if (frame.frame_type == 0) continue;  // a frame type AMQP 0-9-1 does not know: ignored
        return true;
      }
    }
    if (drained_) return false;
    // Only the start of a frame is left: move it to the front, read after it.
    if (in_begin_ > 0) {
      std::memmove(in_.data(), in_.data() + in_begin_, avail);
      in_begin_ = 0;
      in_end_ = avail;
    }
    if (avail >= kHeaderSize) {
      // A frame larger than the buffer (up to frame_max, checked above): room for all of it.
      const std::size_t whole = std::size_t{get32(in_.data() + 3)} + kFrameOverhead;
      if (whole > in_.size()) in_.resize(whole);
    }
    const std::size_t room = in_.size() - in_end_;
    const ssize_t n = ::recv(fd_, in_.data() + in_end_, room, 0);
    if (n > 0) {
      in_end_ += static_cast<std::size_t>(n);
      // A short read took all there was: asking again would only fail. A full one may have
      // left more: the loop comes back without polling (may_have_more).
      more_ = static_cast<std::size_t>(n) == room;
      emptied_ = !more_;
      drained_ = true;
      continue;
    }
    if (n == 0) return lost(amqp_error_string2(AMQP_STATUS_CONNECTION_CLOSED));
    if (errno == EINTR) continue;
    drained_ = true;
    more_ = false;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    return lost(std::strerror(errno));
  }
}

Status Transport::decode(const char* start, std::size_t whole, amqp_frame_t& frame) {
  const char* payload = start + kHeaderSize;
  const std::size_t size = whole - kFrameOverhead;
  frame.frame_type = static_cast<std::uint8_t>(start[0]);
  frame.channel = get16(start + 1);
  switch (frame.frame_type) {
    case AMQP_FRAME_METHOD: {
      if (size < 4) return lost("the broker sent a method frame too short for its id");
      frame.payload.method.id = get32(payload);
      const int rc =
          amqp_decode_method(frame.payload.method.id, pool_.get(), bytes_of(payload + 4, size - 4),
                             &frame.payload.method.decoded);
      if (rc < 0) return lost(std::string("undecodable method: ") + amqp_error_string2(rc));
      return {};
    }
    case AMQP_FRAME_HEADER: {
      if (size < 12) return lost("the broker sent a header frame too short for its sizes");
      frame.payload.properties.class_id = get16(payload);
      frame.payload.properties.body_size = get64(payload + 4);
      frame.payload.properties.raw = bytes_of(payload + 12, size - 12);
      const int rc =
          amqp_decode_properties(frame.payload.properties.class_id, pool_.get(),
                                 frame.payload.properties.raw, &frame.payload.properties.decoded);
      if (rc < 0) return lost(std::string("undecodable properties: ") + amqp_error_string2(rc));
      return {};
    }
    case AMQP_FRAME_BODY:
      frame.payload.body_fragment = bytes_of(payload, size);
      return {};
    case AMQP_FRAME_HEARTBEAT:
      return {};
    default:
      frame.frame_type = 0;
      return {};
  }
}

Status Transport::hand_back(std::chrono::milliseconds bound, bool discard_input) {
  if (Status st = flush_all(bound); !st.ok()) return st;
  // Whole frames not handed out yet: a synchronous call cannot take over in the middle of a
  // batch (their order would be lost); a close can, dropping them (nothing handles them now).
  for (;;) {
    const std::size_t avail = in_end_ - in_begin_;
    if (avail < kHeaderSize) break;
    const std::size_t whole = std::size_t{get32(in_.data() + in_begin_ + 3)} + kFrameOverhead;
    if (avail < whole) break;
    if (!discard_input) {
      return {StatusCode::internal,
              "a synchronous AMQP call was made while frames were still being handled"};
    }
    in_begin_ += whole;
  }
  if (conn_ == nullptr) return {StatusCode::internal, "no rabbitmq-c connection to hand back to"};
  // The start of a frame whose rest is still in the socket: rabbitmq-c reads on from there.
  if (const std::size_t avail = in_end_ - in_begin_; avail > 0) {
    amqp_frame_t ignored;
    const int n = amqp_handle_input(conn_, amqp_bytes_t{avail, in_.data() + in_begin_}, &ignored);
    if (n < 0) return lost(amqp_error_string2(n));
  }
  in_begin_ = in_end_ = 0;
  more_ = false;
  return {};
}

}  // namespace amqprpc::detail::amqp
