// The socket I/O of a plain TCP connection, with rabbitmq-c as the codec. rabbitmq-c writes each
// frame with a send() of its own (three for a publish: method, header, body) and reads through
// a zero-timeout wait that ends every turn with a failed recv() and a poll(). Here frames are
// encoded (amqp_encode_method, amqp_encode_properties) into one buffer that the I/O loop writes
// with one send() per turn, and read with large recv()s whose complete frames rabbitmq-c decodes
// (amqp_handle_input) one at a time. rabbitmq-c still connects, logs in, runs the synchronous
// calls (declarations, qos, consume, close) and, on TLS, all of the I/O.
//
// Frames are handed to amqp_handle_input whole, so between frames rabbitmq-c's reader is idle:
// its buffers can be released after each batch, and a synchronous call can take over the socket
// (hand_back) once what waits to be written is written and the start of a frame that has not
// fully arrived is given to rabbitmq-c.
//
// Thread safety: none; it belongs to its Channel's thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "amqprpc/status.hpp"

struct amqp_connection_state_t_;  // rabbitmq-c types, kept out of this header
struct amqp_frame_t_;
struct amqp_basic_properties_t_;

namespace amqprpc::detail::amqp {

class Transport {
 public:
  explicit Transport(amqp_connection_state_t_* conn);
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // ---- writing: frames wait in a buffer until flush() ----
  // A method frame. Non-ok (nothing added) when the method does not fit in a frame.
  Status method(std::uint16_t channel, std::uint32_t method_id, void* decoded);
  // basic.publish with its header and body frames; all or nothing.
  Status publish(std::uint16_t channel, void* publish_method,
                 const amqp_basic_properties_t_& properties, std::string_view body);
  void heartbeat();
  bool wants_write() const { return written_ < out_len_; }
  // When a frame was last handed to the socket (heartbeats are due after silence).
  std::chrono::steady_clock::time_point last_write() const { return last_write_; }
  // Writes what waits, as much as the socket takes now; the rest waits for POLLOUT.
  Status flush();
  // Writes all that waits, waiting for the socket at most `bound` in all.
  Status flush_all(std::chrono::milliseconds bound);

  // ---- reading ----
  // The next frame read from the socket (heartbeats included). false: nothing complete has
  // arrived (the socket had nothing more, or a read() turn's budget is spent). The frame's
  // decoded parts live in rabbitmq-c's pools until its buffers are released.
  Result<bool> next(amqp_frame_t_& frame);
  // A new read() turn: the socket may be read again (see next()), if it may have data.
  void begin_turn(bool socket_ready) { drained_ = !socket_ready; }
  // Whether the socket may have more than was read this turn (the buffer filled up).
  bool may_have_more() const { return more_; }
  // Before rabbitmq-c uses the socket itself (a synchronous call, close): writes what waits and
  // gives rabbitmq-c the start of a frame that has not fully arrived. Non-ok when that cannot
  // be done (the socket failed, or complete frames are still unread: a synchronous call made
  // in the middle of handling a batch).
  Status hand_back(std::chrono::milliseconds bound);

 private:
  // Room for one more frame of up to frame_max bytes at the end of the output.
  char* reserve_frame();
  std::size_t commit_frame(char* frame, std::uint8_t type, std::uint16_t channel,
                           std::size_t payload);
  Status write_error(int error);

  amqp_connection_state_t_* conn_;
  int fd_;
  std::size_t frame_max_;
  std::vector<char> out_;
  std::size_t out_len_ = 0;  // bytes encoded
  std::size_t written_ = 0;  // of those, bytes the socket took
  std::chrono::steady_clock::time_point last_write_;
  std::vector<char> in_;
  std::size_t in_begin_ = 0, in_end_ = 0;  // received bytes not yet decoded
  bool drained_ = false;                   // the socket had no more this turn
  bool more_ = false;                      // the last recv() filled the buffer
};

}  // namespace amqprpc::detail::amqp
