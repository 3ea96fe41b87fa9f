// The socket I/O of a plain TCP connection, with rabbitmq-c as the codec. rabbitmq-c writes each
// frame with a send() of its own (three for a publish: method, header, body) and reads through
// a zero-timeout wait that ends every turn with a failed recv() and a poll(). Here frames are
// encoded (amqp_encode_method, amqp_encode_properties) into one buffer that the I/O loop writes
// with one send() per turn, and read with large recv()s; rabbitmq-c's decoders
// (amqp_decode_method, amqp_decode_properties) decode each whole frame where it lies in the read
// buffer, into a pool of this transport's that is recycled after each batch. rabbitmq-c still
// connects, logs in, runs the synchronous calls (declarations, qos, consume, close) and, on TLS,
// all of the I/O.
//
// rabbitmq-c's own reader sees none of this and stays idle between its synchronous calls, which
// take the socket over (hand_back) once what waits to be written is written and the start of a
// frame that has not fully arrived is given to it (amqp_handle_input).
//
// Thread safety: none; it belongs to its Channel's thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "amqprpc/status.hpp"

struct amqp_connection_state_t_;  // rabbitmq-c types, kept out of this header
struct amqp_frame_t_;
struct amqp_basic_properties_t_;
struct amqp_pool_t_;

namespace amqprpc::detail::amqp {

class Transport {
 public:
  // The socket and frame size of `conn`, which synchronous calls use between turns.
  explicit Transport(amqp_connection_state_t_* conn);
  // A socket alone (no rabbitmq-c connection: nothing to hand back to), e.g. for fuzzing.
  Transport(int fd, std::size_t frame_max);
  ~Transport();
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
  // arrived (the socket had nothing more now, or may_have_more). A frame's decoded parts and
  // body point into this transport's buffers: valid until the next call of next() or release().
  // Non-ok: the socket failed, or the broker sent what is not AMQP.
  Result<bool> next(amqp_frame_t_& frame);
  // After a batch of frames has been handled: their decoded parts are freed.
  void release();
  // A new read() turn: the socket may be read again (see next()), if it may have data.
  void begin_turn(bool socket_ready) {
    drained_ = !socket_ready;
    emptied_ = false;
  }
  // Whether the socket may have more than was read this turn (the buffer filled up).
  bool may_have_more() const { return more_; }
  // Whether this turn read all the socket had (a read that did not fill the buffer).
  bool emptied() const { return emptied_; }
  // Before rabbitmq-c uses the socket itself (a synchronous call, close): writes what waits
  // (within `bound`) and gives rabbitmq-c the start of a frame that has not fully arrived.
  // Whole frames still unread are dropped with `discard_input` (closing), else they make it
  // fail (a synchronous call in the middle of handling a batch). Non-ok also when the socket
  // failed.
  Status hand_back(std::chrono::milliseconds bound, bool discard_input);

 private:
  // Room for a frame of `size` bytes at the end of the output.
  char* reserve_frame(std::size_t size);
  std::size_t first_room() const;
  Status encode_method(std::uint16_t channel, std::uint32_t method_id, void* decoded);
  // Writes early when much waits, and waits for the socket when very much does.
  Status bound_output();
  std::size_t commit_frame(char* frame, std::uint8_t type, std::uint16_t channel,
                           std::size_t payload);
  Status write_error(int error);
  // One whole frame (header, payload, end marker) at `start`, decoded into `frame`.
  Status decode(const char* start, std::size_t whole, amqp_frame_t_& frame);

  amqp_connection_state_t_* conn_ = nullptr;
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
  bool emptied_ = false;                   // a recv() this turn did not fill it
  std::unique_ptr<amqp_pool_t_> pool_;     // decoded methods and properties of this batch
};

}  // namespace amqprpc::detail::amqp
