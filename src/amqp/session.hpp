// RAII over one rabbitmq-c connection and its channel. Used by the I/O thread alone: rabbitmq-c
// handles are not thread-safe. Turns rabbitmq-c's return codes into Status values.
#pragma once

#include <amqp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "amqprpc/message.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc::detail {

struct Properties {
  std::string content_type;
  std::string correlation_id;
  std::string reply_to;
  std::string expiration;  // per-message TTL in ms, as text
  std::string message_id;
  std::optional<std::uint8_t> priority;
  std::uint8_t delivery_mode = 0;  // 0: unset, 1: transient, 2: persistent
  Headers headers;
};

// A whole message pushed to one of our consumers.
struct Delivery {
  std::uint64_t delivery_tag = 0;
  bool redelivered = false;
  std::string consumer_tag;
  std::string exchange;
  std::string routing_key;
  Properties props;
  std::string body;
};

// A mandatory message the broker could not route, sent back to us.
struct Returned {
  std::uint16_t reply_code = 0;
  std::string reply_text;
  std::string exchange;
  std::string routing_key;
  Properties props;
  std::string body;
};

// Receives what pump() assembles from frames.
class FrameSink {
 public:
  virtual void on_delivery(Delivery&& d) = 0;
  virtual void on_return(Returned&& r) = 0;
  virtual void on_consumer_cancelled(const std::string& consumer_tag) = 0;
  virtual void on_blocked(bool blocked, const std::string& reason) = 0;
  // Publisher confirms: the broker took (ack) or refused (nack) publish number `seq`, or all
  // publishes up to it when `multiple`.
  virtual void on_confirm(std::uint64_t seq, bool multiple, bool ack) = 0;

 protected:
  ~FrameSink() = default;
};

struct QueueSpec {
  std::string name;  // empty: the broker picks a name
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = false;
  Headers arguments;  // e.g. x-queue-type = quorum
};

// A message being assembled from method, header and body frames.
struct PartialMessage {
  bool is_return = false;
  Delivery delivery;
  Returned returned;
  std::uint64_t body_size = 0;
  bool have_header = false;
};

class Session {
 public:
  // Corks the session's socket for a scope.
  class Cork {
   public:
    Cork(Session& s, bool enable) : session_(enable ? &s : nullptr) {
      if (session_) session_->cork(true);
    }
    ~Cork() {
      if (session_) session_->cork(false);
    }
    Cork(const Cork&) = delete;
    Cork& operator=(const Cork&) = delete;

   private:
    Session* session_;
  };

  static constexpr amqp_channel_t kChannel = 1;

  // Connects (TCP or TLS), logs in, opens the channel. Bounded by options.connect_timeout.
  static Result<std::unique_ptr<Session>> open(const ConnectionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  int fd() const;
  int frame_max() const { return amqp_get_frame_max(conn_); }
  int heartbeat_seconds() const { return amqp_get_heartbeat(conn_); }
  // Frames handed out by pump() so far: a change means the broker sent something.
  std::uint64_t frames_read() const { return frames_read_; }
  // Frames already read from the socket and not yet handed out: poll() would not see them.
  bool has_buffered() const;
  // How often to look at the connection when idle so heartbeats flow both ways.
  std::optional<std::chrono::milliseconds> heartbeat_tick() const;

  Status publish(std::string_view exchange, std::string_view routing_key, bool mandatory,
                 const Properties& props, std::string_view body);
  // Puts the channel in confirm mode; from then on each publish has a sequence number.
  Status confirm_select();
  // The sequence number of the last publish in confirm mode (0 before any, or not confirming).
  std::uint64_t last_publish_seq() const { return publish_seq_; }
  Status ack(std::uint64_t delivery_tag);
  Status reject(std::uint64_t delivery_tag, bool requeue);
  Status qos(std::uint16_t prefetch);
  Result<std::string> declare_queue(const QueueSpec& spec);
  Result<std::string> consume(const std::string& queue, bool no_ack, bool exclusive);
  Status cancel(const std::string& consumer_tag);

  // Reads what is available without blocking (also sends a heartbeat when one is due) and hands
  // each complete message to the sink. A non-ok status means the session is unusable.
  Status pump(FrameSink& sink);

  // Holds back partial TCP segments while on, so a batch of publishes leaves in few packets
  // (less work for the kernel and the broker); turning it off sends what is held.
  void cork(bool on);

  // Closes channel and connection politely (bounded); the destructor does it too.
  void close();

 private:
  Session() = default;
  Status dispatch(const amqp_frame_t& frame, FrameSink& sink);
  Status check_rpc(std::string_view what);

  amqp_connection_state_t conn_ = nullptr;
  bool channel_open_ = false;
  bool confirming_ = false;
  std::uint64_t frames_read_ = 0;
  std::string channel_error_;  // why the broker closed our channel, once it has
  std::uint64_t publish_seq_ = 0;
  bool dead_ = false;

  std::optional<PartialMessage> partial_;
};

// Application headers as text (see field_to_string in session.cpp for the rendering).
Headers headers_from_table(const amqp_table_t& table);

// A readable description of a rabbitmq-c reply (library error, or the broker's close reason).
Status status_from_rpc_reply(const amqp_rpc_reply_t& reply, std::string_view what);

}  // namespace amqprpc::detail
