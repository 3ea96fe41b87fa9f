// One AMQP connection and the channel the library uses on it, behind RAII; plus a side channel
// for passive declarations (probe), which the broker may close without harm to the main one.
//
// Thread safety: none. rabbitmq-c handles are not thread-safe; a Channel belongs to one thread
// at a time (the connector thread that opens it, then the I/O loop that uses it).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "amqp/frames.hpp"
#include "amqp/message.hpp"
#include "amqp/transport.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

struct amqp_connection_state_t_;  // rabbitmq-c's connection, kept out of this header

namespace amqprpc::detail::amqp {

class Channel {
 public:
  // What read() finds on the connection, besides heartbeats and replies to our own methods.
  class Events {
   public:
    virtual void on_delivery(Delivery&& d) = 0;
    virtual void on_return(Returned&& r) = 0;
    virtual void on_consumer_cancelled(const std::string& consumer_tag) = 0;
    // The broker answered our cancel(): no delivery for that consumer follows.
    virtual void on_cancel_ok(const std::string& consumer_tag) = 0;
    virtual void on_blocked(bool blocked, const std::string& reason) = 0;
    // Publisher confirms: the broker took (ack) or refused (nack) publish number `seq`, or all
    // publishes up to it when `multiple`.
    virtual void on_confirm(std::uint64_t seq, bool multiple, bool ack) = 0;
    // The answer to a probe(), in the order they were sent.
    virtual void on_probe(ProbeResult&& result) = 0;

   protected:
    ~Events() = default;
  };

  // Holds back partial TCP segments for a scope, so a batch of publishes leaves in few packets
  // (less work for the kernel and the broker). For TLS, where rabbitmq-c writes each frame
  // itself; on plain TCP a turn's frames already leave with one send (flush()).
  class Cork {
   public:
    Cork(Channel& c, bool enable) : channel_(enable ? &c : nullptr) {
      if (channel_) channel_->cork(true);
    }
    ~Cork() {
      if (channel_) channel_->cork(false);
    }
    Cork(const Cork&) = delete;
    Cork& operator=(const Cork&) = delete;

   private:
    Channel* channel_;
  };

  // Connects (TCP or TLS), logs in, opens the channel. Bounded by options.connect_timeout.
  static Result<std::unique_ptr<Channel>> open(const ConnectionOptions& options);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  int fd() const;
  int frame_max() const;
  // The broker's limit on a message body, as configured (ConnectionOptions::max_message_size).
  std::size_t max_message_size() const { return max_message_size_; }
  std::chrono::seconds heartbeat() const;
  // Frames handed out by read() so far: a change means the broker sent something.
  std::uint64_t frames_read() const { return frames_read_; }
  // Frames already read from the socket and not yet handed out: poll() would not see them.
  bool has_buffered() const;
  // Whether the last read() took all the socket had then (false when unknown: TLS).
  bool read_it_all() const { return transport_ && transport_->emptied(); }
  // Frames encoded and not yet written (plain TCP: publishes, acks and other methods wait for
  // flush(), so that a turn of the I/O loop writes them with one send).
  bool wants_write() const { return transport_ && transport_->wants_write(); }
  // Whether writes are this library's own, never blocking (plain TCP); on TLS rabbitmq-c
  // writes, and may block while the socket is full.
  bool writes_without_blocking() const { return transport_ != nullptr; }
  // Writes what waits, as much as the socket takes without blocking; the rest waits until
  // poll() says the socket is writable. Also sends a heartbeat when one is due. Non-ok: the
  // connection is unusable.
  Status flush();
  // How often to look at the connection when idle so heartbeats flow both ways.
  std::optional<std::chrono::milliseconds> heartbeat_tick() const;

  // Publishes a message. Returns its publish sequence number once the channel is in confirm
  // mode (the number the broker's basic.ack/nack will name), 0 before.
  Result<std::uint64_t> publish(std::string_view exchange, std::string_view routing_key,
                                bool mandatory, const PropertiesView& props, std::string_view body);
  // Deliveries keep their header table as it arrived, to be re-published unchanged.
  void keep_wire_headers(bool keep) { assembler_.keep_wire_headers(keep); }
  // Puts the channel in confirm mode; from then on each publish has a sequence number.
  Status confirm_select();
  Status ack(std::uint64_t delivery_tag);
  Status reject(std::uint64_t delivery_tag, bool requeue);
  Status qos(std::uint16_t prefetch);
  Result<std::string> declare_queue(const QueueSpec& spec);
  Result<std::string> consume(const std::string& queue, bool no_ack, bool exclusive);
  // A queue the broker deletes once unused for `expires` (no consumer, not declared again):
  // x-expires, an integer argument, which QueueSpec's text arguments cannot carry.
  Result<std::string> declare_expiring_queue(const QueueSpec& spec,
                                             std::chrono::milliseconds expires);
  // exchange.declare (not passive, not internal, no arguments): `type` is "fanout", "direct"...
  Status declare_exchange(const std::string& name, std::string_view type, bool durable,
                          bool auto_delete);
  Status bind_queue(const std::string& queue, const std::string& exchange,
                    std::string_view routing_key);
  // Asks the broker to cancel a consumer, without blocking: Events::on_cancel_ok says when it
  // has, after the last delivery it sent.
  Status cancel(const std::string& consumer_tag);

  // Asks, without blocking, whether a queue or an exchange exists (a passive declaration), and
  // for a queue how many consumers it has; Events::on_probe answers. It runs on a side channel:
  // the broker answers a missing queue by closing the channel it was asked on (404), which
  // must not take the main channel, its consumer and its calls with it. The side channel opens
  // on the first probe and again after each such close; probes sent behind a refused one, which
  // the closing channel ignored, are sent again.
  Status probe(Probe probe);
  // Probes sent and not answered yet.
  std::size_t probes_pending() const { return probes_.size(); }

  // Reads what is available without blocking and hands each complete message and notification
  // to `events`. `socket_ready`: whether the socket may have data (false: only frames already
  // read are handed out). Non-ok: the connection is unusable.
  Status read(Events& events, bool socket_ready = true);

  // Closes channel and connection politely, waiting at most kCloseTimeout for the broker's
  // answer; the destructor does it too.
  void close();
  static constexpr std::chrono::milliseconds kCloseTimeout{1000};

 private:
  Channel() = default;
  void cork(bool on);
  // Before a synchronous call (or close, `closing`): rabbitmq-c takes the socket over (see
  // Transport::hand_back).
  Status hand_back(bool closing = false);
  // With the transport, rabbitmq-c must neither send heartbeats (its writes would land inside
  // the transport's) nor judge the broker's silence by timers the transport's traffic never
  // moves: its heartbeat is set to 0 once it is idle; the negotiated one is heartbeat_.
  void quiet_rabbitmq_c_heartbeats();
  // Whether rabbitmq-c's reader has frames or bytes of its own, or is within a frame: it reads
  // until it has none, then the transport reads.
  bool rabbitmq_c_reads() const;
  // An asynchronous method (no answer awaited): encoded for the next flush, or sent by
  // rabbitmq-c on TLS.
  Status send_method(std::uint16_t channel, std::uint32_t method_id, void* decoded);
  Status check_rpc(std::string_view what);
  Status dispatch(const struct amqp_frame_t_& frame, Events& events);
  Status dispatch_side(const struct amqp_frame_t_& frame, Events& events);
  Status send_probe(const Probe& probe);

  amqp_connection_state_t_* conn_ = nullptr;
  bool open_ = false;  // the channel, as far as we know
  bool confirming_ = false;
  bool dead_ = false;  // the connection
  std::uint64_t frames_read_ = 0;
  std::uint64_t publish_seq_ = 0;
  std::uint64_t consumers_ = 0;  // consumer tags given: c1, c2, ...
  std::size_t max_message_size_ = 0;
  std::string channel_error_;  // why the broker closed our channel, once it has
  FrameAssembler assembler_;
  std::unique_ptr<Transport> transport_;      // plain TCP; null on TLS (rabbitmq-c's own I/O)
  int heartbeat_ = 0;                         // negotiated, in seconds
  bool rabbitmq_c_quiet_ = false;             // rabbitmq-c's own heartbeat set to 0
  std::chrono::milliseconds rpc_timeout_{0};  // how long a synchronous call may take
  bool side_open_ = false;    // channel.open sent on the side channel (answered or not)
  std::deque<Probe> probes_;  // sent on the side channel, answers awaited, in order
};

}  // namespace amqprpc::detail::amqp
