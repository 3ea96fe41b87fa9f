#include "amqp/channel.hpp"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <vector>

#include "amqp/errors.hpp"
#include "amqp/table.hpp"

namespace amqprpc::detail::amqp {
namespace {

constexpr amqp_channel_t kChannel = 1;
constexpr amqp_channel_t kSideChannel = 2;  // probes: passive declarations

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

bool connected_to_itself(int fd) {
  sockaddr_storage local{}, peer{};
  socklen_t local_len = sizeof local, peer_len = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
      getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
    return false;
  }
  return local_len == peer_len && std::memcmp(&local, &peer, local_len) == 0;
}

void set_string(amqp_basic_properties_t& props, amqp_flags_t flag, amqp_bytes_t& field,
                std::string_view value) {
  if (value.empty()) return;
  props._flags |= flag;
  field = as_bytes(value);
}

}  // namespace

Result<std::unique_ptr<Channel>> Channel::open(const ConnectionOptions& o) {
  std::unique_ptr<Channel> s(new Channel());
  s->max_message_size_ = o.max_message_size;
  s->conn_ = amqp_new_connection();
  if (s->conn_ == nullptr) return Status{StatusCode::resource_exhausted, "out of memory"};
  const std::string where = o.to_string();

  amqp_socket_t* socket = nullptr;
  if (o.tls.enabled) {
    socket = amqp_ssl_socket_new(s->conn_);
    if (socket == nullptr) return Status{StatusCode::internal, "cannot create a TLS socket"};
    amqp_ssl_socket_set_verify_peer(socket, o.tls.verify_peer ? 1 : 0);
    // rabbitmq-c checks DNS names only, so a broker addressed by IP could never be verified:
    // for an IP literal, OpenSSL checks the certificate's IP addresses (subjectAltName IP
    // entries) during its own verification of the peer instead.
    const bool ip_host = is_ip_literal(o.host);
    amqp_ssl_socket_set_verify_hostname(socket, o.tls.verify_hostname && !ip_host ? 1 : 0);
    if (o.tls.verify_hostname && ip_host) {
      auto* ctx = static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket));
      if (ctx == nullptr ||
          X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), o.host.c_str()) != 1) {
        return Status{StatusCode::internal, "cannot set up verification of IP " + o.host};
      }
    }
    if (!o.tls.ca_file.empty() &&
        amqp_ssl_socket_set_cacert(socket, o.tls.ca_file.c_str()) != AMQP_STATUS_OK) {
      return Status{StatusCode::invalid_argument,
                    "cannot load the CA file '" + o.tls.ca_file + "'"};
    }
    if (!o.tls.cert_file.empty()) {
      const std::string& key = o.tls.key_file.empty() ? o.tls.cert_file : o.tls.key_file;
      if (amqp_ssl_socket_set_key(socket, o.tls.cert_file.c_str(), key.c_str()) != AMQP_STATUS_OK) {
        return Status{StatusCode::invalid_argument,
                      "cannot load the client certificate '" + o.tls.cert_file + "' or its key"};
      }
    }
  } else {
    socket = amqp_tcp_socket_new(s->conn_);
    if (socket == nullptr) return Status{StatusCode::internal, "cannot create a TCP socket"};
  }

  timeval tv = to_timeval(o.connect_timeout);
  int rc = amqp_socket_open_noblock(socket, o.host.c_str(), o.port, &tv);
  if (rc != AMQP_STATUS_OK) {
    std::string why = amqp_error_string2(rc);
    // rabbitmq-c folds refused, unreachable and the like into "a socket error occurred".
    if (rc == AMQP_STATUS_SOCKET_ERROR) why = "connection refused or network unreachable";
    if (rc == AMQP_STATUS_TIMEOUT)
      why = "no answer within " + std::to_string(o.connect_timeout.count()) + " ms";
    return Status{StatusCode::unavailable, "cannot connect to " + where + ": " + why};
  }
  if (connected_to_itself(amqp_get_sockfd(s->conn_))) {
    // Nothing listens on a local port in the ephemeral range, and the kernel gave this socket
    // that very port: a TCP self-connect. Dropped at once, so it cannot keep a broker from
    // listening there again.
    s->dead_ = true;
    return Status{StatusCode::unavailable,
                  "cannot connect to " + where + ": connection refused (nothing listening)"};
  }
  if (o.heartbeat.count() > 0) {
    // A peer that stops reading (a cut network, a hung broker) would block a publish forever:
    // rabbitmq-c sends without a deadline. The kernel gives up on data unacknowledged (or a
    // window kept shut) for two heartbeat intervals, which fails the send and frees the loop.
    unsigned int ms = static_cast<unsigned int>(o.heartbeat.count() * 2000);
    ::setsockopt(amqp_get_sockfd(s->conn_), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
  }
  amqp_set_handshake_timeout(s->conn_, &tv);
  amqp_set_rpc_timeout(s->conn_, &tv);

  // Ask for the notifications we handle; rabbitmq-c merges these with its own capabilities.
  amqp_table_entry_t caps[2];
  caps[0].key = amqp_cstring_bytes("consumer_cancel_notify");
  caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  caps[0].value.value.boolean = 1;
  caps[1].key = amqp_cstring_bytes("connection.blocked");
  caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  caps[1].value.value.boolean = 1;
  amqp_table_entry_t props[2];
  props[0].key = amqp_cstring_bytes("capabilities");
  props[0].value.kind = AMQP_FIELD_KIND_TABLE;
  props[0].value.value.table.num_entries = 2;
  props[0].value.value.table.entries = caps;
  props[1].key = amqp_cstring_bytes("product");
  props[1].value.kind = AMQP_FIELD_KIND_UTF8;
  props[1].value.value.bytes = amqp_cstring_bytes("amqp-rpc");
  amqp_table_t client_properties{2, props};

  const int heartbeat = static_cast<int>(o.heartbeat.count());
  amqp_rpc_reply_t login = amqp_login_with_properties(
      s->conn_, o.vhost.c_str(), 0, o.frame_max, heartbeat, &client_properties,
      AMQP_SASL_METHOD_PLAIN, o.user.c_str(), o.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    s->dead_ = true;
    Status st = status_from_rpc_reply(login, "login to " + where + " as '" + o.user + "'");
    if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        login.library_error == AMQP_STATUS_TIMEOUT) {
      st = Status{StatusCode::unavailable,
                  "cannot connect to " + where + ": no AMQP handshake within " +
                      std::to_string(o.connect_timeout.count()) +
                      " ms (is this a RabbitMQ AMQP port? amqp:// on a TLS port?)"};
    } else if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
               login.library_error == AMQP_STATUS_SOCKET_ERROR) {
      st = Status{StatusCode::unavailable,
                  st.message() +
                      " (the connection broke during the AMQP handshake: is this a "
                      "TLS port? then use amqps://)"};
    } else if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
               login.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
      // RabbitMQ drops the socket on a bad password when the client did not ask otherwise.
      st = Status{
          StatusCode::permission_denied,
          st.message() + " (wrong user name or password, or no access to vhost '" + o.vhost + "')"};
    }
    return st;
  }

  amqp_channel_open(s->conn_, kChannel);
  if (Status st = s->check_rpc("open channel"); !st.ok()) return st;
  s->open_ = true;
  s->heartbeat_ = amqp_get_heartbeat(s->conn_);
  s->rpc_timeout_ = o.connect_timeout;
  // TLS keeps rabbitmq-c's own I/O: its frames go through OpenSSL, which batching would not
  // spare the encryption, and the connections that need the speed are on loopback or a LAN.
  if (!o.tls.enabled) {
    s->transport_ = std::make_unique<Transport>(s->conn_);
    s->quiet_rabbitmq_c_heartbeats();
  }
  return s;
}

Channel::~Channel() {
  close();
  if (conn_ != nullptr) amqp_destroy_connection(conn_);
}

void Channel::close() {
  if (conn_ == nullptr || dead_) return;
  if (!hand_back(/*closing=*/true).ok()) {
    dead_ = true;
    return;
  }
  // A broker that stopped answering (frozen, cut off) must not hold a close for the connect
  // timeout: the handshake gets kCloseTimeout, then the socket is dropped.
  timeval bound = to_timeval(kCloseTimeout);
  amqp_set_rpc_timeout(conn_, &bound);
  bool answered = true;
  if (open_) {
    answered = amqp_channel_close(conn_, kChannel, AMQP_REPLY_SUCCESS).reply_type !=
               AMQP_RESPONSE_LIBRARY_EXCEPTION;
  }
  open_ = false;
  if (answered) amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  dead_ = true;
}

int Channel::fd() const {
  return amqp_get_sockfd(conn_);
}

int Channel::frame_max() const {
  return amqp_get_frame_max(conn_);
}

std::chrono::seconds Channel::heartbeat() const {
  return std::chrono::seconds(heartbeat_);
}

void Channel::quiet_rabbitmq_c_heartbeats() {
  if (rabbitmq_c_quiet_ || !amqp_release_buffers_ok(conn_)) return;  // tuning needs it idle
  amqp_tune_connection(conn_, amqp_get_channel_max(conn_), amqp_get_frame_max(conn_), 0);
  rabbitmq_c_quiet_ = true;
}

void Channel::cork(bool on) {
  if (transport_) return;  // one send per turn already
  int value = on ? 1 : 0;
  // Best effort: a socket that refuses only costs a few more packets.
  ::setsockopt(fd(), IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

bool Channel::has_buffered() const {
  return amqp_frames_enqueued(conn_) || amqp_data_in_buffer(conn_) ||
         (transport_ && transport_->may_have_more());
}

bool Channel::rabbitmq_c_reads() const {
  return amqp_frames_enqueued(conn_) || amqp_data_in_buffer(conn_) ||
         !amqp_release_buffers_ok(conn_);
}

Status Channel::hand_back(bool closing) {
  if (!transport_) return {};
  quiet_rabbitmq_c_heartbeats();
  // A synchronous call waits for what is written before it as long as for its answer; a close
  // no longer than kCloseTimeout, and drops what was read and will never be handled.
  Status st = closing ? transport_->hand_back(kCloseTimeout, /*discard_input=*/true)
                      : transport_->hand_back(rpc_timeout_, /*discard_input=*/false);
  if (!st.ok()) dead_ = true;
  return st;
}

Status Channel::send_method(std::uint16_t channel, std::uint32_t method_id, void* decoded) {
  if (dead_) return {StatusCode::unavailable, "connection is closed"};
  if (transport_) {
    Status st = transport_->method(channel, method_id, decoded);
    if (!st.ok() && st.code() == StatusCode::unavailable) dead_ = true;
    return st;
  }
  if (int rc = amqp_send_method(conn_, channel, method_id, decoded); rc != AMQP_STATUS_OK) {
    dead_ = true;
    return {StatusCode::unavailable, std::string("connection lost: ") + amqp_error_string2(rc)};
  }
  return {};
}

Status Channel::flush() {
  if (!transport_ || dead_) return {};
  // rabbitmq-c sends heartbeats only from its own waits: with the transport, they are sent here
  // after half an interval without writing (the I/O loop flushes at least four times an
  // interval).
  // Only into an empty buffer: while the socket takes nothing, one would not leave earlier.
  if (heartbeat_ > 0 && !transport_->wants_write() &&
      std::chrono::steady_clock::now() - transport_->last_write() >=
          std::chrono::milliseconds(heartbeat_ * 500)) {
    transport_->heartbeat();
  }
  Status st = transport_->flush();
  if (!st.ok()) dead_ = true;
  return st;
}

std::optional<std::chrono::milliseconds> Channel::heartbeat_tick() const {
  int hb = heartbeat_;
  if (hb <= 0) return std::nullopt;
  // A heartbeat goes out when half the interval passed without sending (flush(), or rabbitmq-c
  // on TLS); look twice as often so one is never late.
  return std::chrono::milliseconds(hb * 1000 / 4);
}

Status Channel::check_rpc(std::string_view what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return {};
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t ok{};
    amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    open_ = false;
    auto* close = static_cast<amqp_channel_close_t*>(r.reply.decoded);
    channel_error_ = to_string(close->reply_text);
  }
  if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
      r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    dead_ = true;
  }
  return status_from_rpc_reply(r, what);
}

Result<std::uint64_t> Channel::publish(std::string_view exchange, std::string_view routing_key,
                                       bool mandatory, const PropertiesView& p,
                                       std::string_view body) {
  amqp_basic_properties_t props{};
  set_string(props, AMQP_BASIC_CONTENT_TYPE_FLAG, props.content_type, p.content_type);
  set_string(props, AMQP_BASIC_CORRELATION_ID_FLAG, props.correlation_id, p.correlation_id);
  set_string(props, AMQP_BASIC_REPLY_TO_FLAG, props.reply_to, p.reply_to);
  set_string(props, AMQP_BASIC_EXPIRATION_FLAG, props.expiration, p.expiration);
  set_string(props, AMQP_BASIC_MESSAGE_ID_FLAG, props.message_id, p.message_id);
  set_string(props, AMQP_BASIC_USER_ID_FLAG, props.user_id, p.user_id);
  if (p.priority) {
    props._flags |= AMQP_BASIC_PRIORITY_FLAG;
    props.priority = *p.priority;
  }
  if (p.delivery_mode != 0) {
    props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = p.delivery_mode;
  }
  TableView headers(p);
  if (headers.table().num_entries > 0) {
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers = headers.table();
  }
  if (dead_) return Status{StatusCode::unavailable, "connection is closed"};
  if (transport_) {
    amqp_basic_publish_t m{};
    m.exchange = as_bytes(exchange);
    m.routing_key = as_bytes(routing_key);
    m.mandatory = mandatory ? 1 : 0;
    // A message that cannot be encoded is not sent (nor numbered); a socket that failed is
    // the connection's end.
    if (Status st = transport_->publish(kChannel, &m, props, body); !st.ok()) {
      if (st.code() == StatusCode::unavailable) dead_ = true;
      return st;
    }
    return confirming_ ? ++publish_seq_ : 0;
  }
  int rc = amqp_basic_publish(conn_, kChannel, as_bytes(exchange), as_bytes(routing_key),
                              mandatory ? 1 : 0, 0, &props, as_bytes(body));
  // The broker numbers every publish in confirm mode, even one that failed half-way.
  if (confirming_) ++publish_seq_;
  if (rc != AMQP_STATUS_OK) {
    dead_ = true;
    return Status{StatusCode::unavailable,
                  std::string("publish failed: ") + amqp_error_string2(rc)};
  }
  return confirming_ ? publish_seq_ : 0;
}

Status Channel::confirm_select() {
  if (Status st = hand_back(); !st.ok()) return st;
  amqp_confirm_select(conn_, kChannel);
  if (Status st = check_rpc("enable publisher confirms"); !st.ok()) return st;
  confirming_ = true;
  publish_seq_ = 0;
  return {};
}

Status Channel::ack(std::uint64_t delivery_tag) {
  amqp_basic_ack_t ack{};
  ack.delivery_tag = delivery_tag;
  return send_method(kChannel, AMQP_BASIC_ACK_METHOD, &ack);
}

Status Channel::reject(std::uint64_t delivery_tag, bool requeue) {
  amqp_basic_reject_t reject{};
  reject.delivery_tag = delivery_tag;
  reject.requeue = requeue ? 1 : 0;
  return send_method(kChannel, AMQP_BASIC_REJECT_METHOD, &reject);
}

Status Channel::qos(std::uint16_t prefetch) {
  if (Status st = hand_back(); !st.ok()) return st;
  amqp_basic_qos(conn_, kChannel, 0, prefetch, 0);
  return check_rpc("set prefetch to " + std::to_string(prefetch));
}

Result<std::string> Channel::declare_queue(const QueueSpec& q) {
  if (Status st = hand_back(); !st.ok()) return st;
  TableView args(q.arguments);
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, kChannel, as_bytes(q.name), 0, q.durable ? 1 : 0,
                         q.exclusive ? 1 : 0, q.auto_delete ? 1 : 0, args.table());
  if (Status st = check_rpc("declare queue '" + q.name + "'"); !st.ok()) return st;
  return to_string(ok->queue);
}

Result<std::string> Channel::consume(const std::string& queue, bool no_ack, bool exclusive) {
  if (Status st = hand_back(); !st.ok()) return st;
  // Our own tag, short enough to stay in a std::string's own buffer: every delivery carries it,
  // and the broker's (amq.ctag-<22 characters>) cost an allocation each. Tags are per channel.
  const std::string tag = "c" + std::to_string(++consumers_);
  amqp_basic_consume_ok_t* ok =
      amqp_basic_consume(conn_, kChannel, as_bytes(queue), as_bytes(tag), 0, no_ack ? 1 : 0,
                         exclusive ? 1 : 0, amqp_empty_table);
  if (Status st = check_rpc("consume from '" + queue + "'"); !st.ok()) return st;
  return to_string(ok->consumer_tag);
}

Result<std::string> Channel::declare_expiring_queue(const QueueSpec& q,
                                                    std::chrono::milliseconds expires) {
  if (Status st = hand_back(); !st.ok()) return st;
  TableView text(q.arguments);
  std::vector<amqp_table_entry_t> entries(text.table().entries,
                                          text.table().entries + text.table().num_entries);
  amqp_table_entry_t expiry{};
  expiry.key = amqp_cstring_bytes("x-expires");
  expiry.value.kind = AMQP_FIELD_KIND_I64;  // RabbitMQ refuses a text x-expires
  expiry.value.value.i64 = expires.count();
  entries.push_back(expiry);
  amqp_table_t args{static_cast<int>(entries.size()), entries.data()};
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, kChannel, as_bytes(q.name), 0, q.durable ? 1 : 0,
                         q.exclusive ? 1 : 0, q.auto_delete ? 1 : 0, args);
  if (Status st = check_rpc("declare queue '" + q.name + "'"); !st.ok()) return st;
  return to_string(ok->queue);
}

Status Channel::declare_exchange(const std::string& name, std::string_view type, bool durable,
                                 bool auto_delete) {
  if (Status st = hand_back(); !st.ok()) return st;
  amqp_exchange_declare(conn_, kChannel, as_bytes(name), as_bytes(type), 0, durable ? 1 : 0,
                        auto_delete ? 1 : 0, 0, amqp_empty_table);
  return check_rpc("declare exchange '" + name + "'");
}

Status Channel::bind_queue(const std::string& queue, const std::string& exchange,
                           std::string_view routing_key) {
  if (Status st = hand_back(); !st.ok()) return st;
  amqp_queue_bind(conn_, kChannel, as_bytes(queue), as_bytes(exchange), as_bytes(routing_key),
                  amqp_empty_table);
  return check_rpc("bind queue '" + queue + "' to exchange '" + exchange + "'");
}

Status Channel::cancel(const std::string& consumer_tag) {
  // Not a blocking RPC: the answer (basic.cancel-ok) comes through read() as on_cancel_ok,
  // after every delivery the broker sent before it saw the cancel.
  amqp_basic_cancel_t cancel{};
  cancel.consumer_tag = as_bytes(consumer_tag);
  cancel.nowait = 0;
  return send_method(kChannel, AMQP_BASIC_CANCEL_METHOD, &cancel);
}

Status Channel::probe(Probe probe) {
  if (dead_) return {StatusCode::unavailable, "connection is closed"};
  if (Status st = send_probe(probe); !st.ok()) return st;
  probes_.push_back(std::move(probe));
  return {};
}

Status Channel::send_probe(const Probe& probe) {
  if (!side_open_) {
    // Pipelined: the broker handles the open before the declaration that follows it.
    amqp_channel_open_t open{};
    if (Status st = send_method(kSideChannel, AMQP_CHANNEL_OPEN_METHOD, &open); !st.ok()) {
      return st;
    }
    side_open_ = true;
  }
  if (probe.kind == Probe::Kind::queue) {
    amqp_queue_declare_t declare{};
    declare.queue = as_bytes(probe.name);
    declare.passive = 1;
    declare.arguments = amqp_empty_table;
    return send_method(kSideChannel, AMQP_QUEUE_DECLARE_METHOD, &declare);
  }
  amqp_exchange_declare_t declare{};
  declare.exchange = as_bytes(probe.name);
  declare.type = amqp_cstring_bytes("fanout");  // not checked on a passive declaration
  declare.passive = 1;
  declare.arguments = amqp_empty_table;
  return send_method(kSideChannel, AMQP_EXCHANGE_DECLARE_METHOD, &declare);
}

Status Channel::dispatch_side(const amqp_frame_t& frame, Events& events) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return {};  // nothing with content comes here
  const amqp_method_t& m = frame.payload.method;
  switch (m.id) {
    case AMQP_QUEUE_DECLARE_OK_METHOD:
    case AMQP_EXCHANGE_DECLARE_OK_METHOD: {
      if (probes_.empty()) return {};
      ProbeResult result{std::move(probes_.front()), {}, 0, 0};
      probes_.pop_front();
      if (m.id == AMQP_QUEUE_DECLARE_OK_METHOD) {
        auto* ok = static_cast<amqp_queue_declare_ok_t*>(m.decoded);
        result.consumers = ok->consumer_count;
        result.messages = ok->message_count;
      }
      events.on_probe(std::move(result));
      return {};
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      // The broker refused the oldest probe (404 when the queue or exchange does not exist)
      // and closed the side channel; it ignored whatever followed on it.
      auto* c = static_cast<amqp_channel_close_t*>(m.decoded);
      amqp_channel_close_ok_t ok{};
      if (Status st = send_method(kSideChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok); !st.ok()) {
        return st;
      }
      side_open_ = false;
      if (probes_.empty()) return {};
      ProbeResult refused{std::move(probes_.front()),
                          Status{code_for_reply_code(c->reply_code), to_string(c->reply_text)}, 0,
                          0};
      probes_.pop_front();
      for (const Probe& again : probes_) {
        if (Status st = send_probe(again); !st.ok()) return st;
      }
      events.on_probe(std::move(refused));
      return {};
    }
    default:
      return {};  // channel.open-ok
  }
}

Status Channel::read(Events& events, bool socket_ready) {
  if (dead_) return {StatusCode::unavailable, "connection is closed"};
  if (!open_) {
    // Closed by the broker during a synchronous call (e.g. a declaration it refused): without
    // its one channel the session is of no use; the owner drops it (and reconnects).
    return {StatusCode::unavailable, "the broker closed the channel: " + channel_error_};
  }
  if (transport_) transport_->begin_turn(socket_ready);
  timeval zero{};
  for (;;) {
    amqp_frame_t frame;
    if (transport_ && !rabbitmq_c_reads()) {
      quiet_rabbitmq_c_heartbeats();  // once, at the first moment rabbitmq-c is idle
      auto got = transport_->next(frame);
      if (!got) {
        dead_ = true;
        return got.status();
      }
      if (!*got) break;
      ++frames_read_;
      if (frame.frame_type == AMQP_FRAME_HEARTBEAT) continue;
      if (Status st = dispatch(frame, events); !st.ok()) return st;
      continue;
    }
    int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) break;
    if (rc != AMQP_STATUS_OK) {
      dead_ = true;
      if (rc == AMQP_STATUS_HEARTBEAT_TIMEOUT) {
        return {StatusCode::unavailable, "broker missed heartbeats: connection presumed dead"};
      }
      return {StatusCode::unavailable, std::string("connection lost: ") + amqp_error_string2(rc)};
    }
    ++frames_read_;
    if (Status st = dispatch(frame, events); !st.ok()) return st;
  }
  if (transport_) transport_->release();
  if (!amqp_frames_enqueued(conn_)) amqp_maybe_release_buffers(conn_);
  return {};
}

Status Channel::dispatch(const amqp_frame_t& frame, Events& events) {
  if (frame.channel == kSideChannel) return dispatch_side(frame, events);
  if (frame.frame_type == AMQP_FRAME_METHOD) {
    const amqp_method_t& m = frame.payload.method;
    switch (m.id) {
      case AMQP_BASIC_DELIVER_METHOD: {
        auto* d = static_cast<amqp_basic_deliver_t*>(m.decoded);
        Delivery delivery;
        delivery.delivery_tag = d->delivery_tag;
        delivery.redelivered = d->redelivered != 0;
        delivery.consumer_tag = to_string(d->consumer_tag);
        assembler_.begin(std::move(delivery));
        return {};
      }
      case AMQP_BASIC_RETURN_METHOD: {
        auto* r = static_cast<amqp_basic_return_t*>(m.decoded);
        Returned returned;
        returned.reply_code = r->reply_code;
        returned.reply_text = to_string(r->reply_text);
        assembler_.begin(std::move(returned));
        return {};
      }
      case AMQP_BASIC_CANCEL_METHOD: {
        auto* c = static_cast<amqp_basic_cancel_t*>(m.decoded);
        std::string tag = to_string(c->consumer_tag);
        if (!c->nowait) {
          amqp_basic_cancel_ok_t ok{};
          ok.consumer_tag = c->consumer_tag;
          if (Status st = send_method(kChannel, AMQP_BASIC_CANCEL_OK_METHOD, &ok); !st.ok()) {
            return st;
          }
        }
        events.on_consumer_cancelled(tag);
        return {};
      }
      case AMQP_BASIC_CANCEL_OK_METHOD: {
        auto* ok = static_cast<amqp_basic_cancel_ok_t*>(m.decoded);
        events.on_cancel_ok(to_string(ok->consumer_tag));
        return {};
      }
      case AMQP_BASIC_ACK_METHOD: {
        auto* a = static_cast<amqp_basic_ack_t*>(m.decoded);
        events.on_confirm(a->delivery_tag, a->multiple != 0, true);
        return {};
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* n = static_cast<amqp_basic_nack_t*>(m.decoded);
        events.on_confirm(n->delivery_tag, n->multiple != 0, false);
        return {};
      }
      case AMQP_CONNECTION_BLOCKED_METHOD: {
        auto* b = static_cast<amqp_connection_blocked_t*>(m.decoded);
        events.on_blocked(true, to_string(b->reason));
        return {};
      }
      case AMQP_CONNECTION_UNBLOCKED_METHOD:
        events.on_blocked(false, {});
        return {};
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* c = static_cast<amqp_channel_close_t*>(m.decoded);
        amqp_channel_close_ok_t ok{};
        // Written at once: the caller drops the session on the status below.
        if (send_method(frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok).ok()) flush();
        open_ = false;
        // The caller drops the session on this status; closing it then ends the connection
        // politely.
        return {code_for_reply_code(c->reply_code),
                "broker closed the channel: " + to_string(c->reply_text)};
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* c = static_cast<amqp_connection_close_t*>(m.decoded);
        amqp_connection_close_ok_t ok{};
        if (send_method(0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok).ok() && transport_) {
          transport_->flush_all(kCloseTimeout);  // the broker closes the socket after it
        }
        dead_ = true;
        return {code_for_reply_code(c->reply_code) == StatusCode::internal
                    ? StatusCode::unavailable
                    : code_for_reply_code(c->reply_code),
                "broker closed the connection: " + to_string(c->reply_text)};
      }
      default:
        return {};  // acks of things we did not ask for, etc.: nothing to do
    }
  }
  if (Incoming* message = assembler_.add(frame)) {
    if (auto* d = std::get_if<Delivery>(message)) {
      events.on_delivery(std::move(*d));
    } else {
      events.on_return(std::get<Returned>(std::move(*message)));
    }
    assembler_.release();
  }
  return {};
}

}  // namespace amqprpc::detail::amqp
