#include "amqp/session.hpp"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <vector>

namespace amqprpc::detail {
namespace {

std::string to_string(amqp_bytes_t b) {
  return b.len == 0 ? std::string{} : std::string(static_cast<const char*>(b.bytes), b.len);
}

amqp_bytes_t to_bytes(std::string_view s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

// Header values become text: strings as they are, numbers in decimal, booleans as true/false,
// decimals as digits with the point placed, arrays as [a,b] and tables as {k=v}, nested at most
// a few levels (deeper parts become "...").
std::string field_to_string(const amqp_field_value_t& v, int depth = 0) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return to_string(v.value.bytes);
    case AMQP_FIELD_KIND_BOOLEAN:
      return v.value.boolean ? "true" : "false";
    case AMQP_FIELD_KIND_I8:
      return std::to_string(v.value.i8);
    case AMQP_FIELD_KIND_U8:
      return std::to_string(v.value.u8);
    case AMQP_FIELD_KIND_I16:
      return std::to_string(v.value.i16);
    case AMQP_FIELD_KIND_U16:
      return std::to_string(v.value.u16);
    case AMQP_FIELD_KIND_I32:
      return std::to_string(v.value.i32);
    case AMQP_FIELD_KIND_U32:
      return std::to_string(v.value.u32);
    case AMQP_FIELD_KIND_I64:
      return std::to_string(v.value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return std::to_string(v.value.u64);
    case AMQP_FIELD_KIND_F32:
      return std::to_string(v.value.f32);
    case AMQP_FIELD_KIND_F64:
      return std::to_string(v.value.f64);
    case AMQP_FIELD_KIND_DECIMAL: {
      std::string digits = std::to_string(v.value.decimal.value);
      unsigned places = v.value.decimal.decimals;
      if (places == 0) return digits;
      if (digits.size() <= places) digits.insert(0, places - digits.size() + 1, '0');
      digits.insert(digits.size() - places, ".");
      return digits;
    }
    case AMQP_FIELD_KIND_ARRAY: {
      if (depth >= 4) return "[...]";
      std::string out = "[";
      for (int i = 0; i < v.value.array.num_entries; ++i) {
        if (i > 0) out += ',';
        out += field_to_string(v.value.array.entries[i], depth + 1);
      }
      return out + "]";
    }
    case AMQP_FIELD_KIND_TABLE: {
      if (depth >= 4) return "{...}";
      std::string out = "{";
      for (int i = 0; i < v.value.table.num_entries; ++i) {
        if (i > 0) out += ',';
        const amqp_table_entry_t& e = v.value.table.entries[i];
        out += to_string(e.key) + "=" + field_to_string(e.value, depth + 1);
      }
      return out + "}";
    }
    default:
      return {};  // void
  }
}

Properties copy_properties(const amqp_basic_properties_t& p) {
  Properties out;
  if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) out.content_type = to_string(p.content_type);
  if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) out.correlation_id = to_string(p.correlation_id);
  if (p._flags & AMQP_BASIC_REPLY_TO_FLAG) out.reply_to = to_string(p.reply_to);
  if (p._flags & AMQP_BASIC_EXPIRATION_FLAG) out.expiration = to_string(p.expiration);
  if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) out.message_id = to_string(p.message_id);
  if (p._flags & AMQP_BASIC_PRIORITY_FLAG) out.priority = p.priority;
  if (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) out.delivery_mode = p.delivery_mode;
  if (p._flags & AMQP_BASIC_HEADERS_FLAG) out.headers = headers_from_table(p.headers);
  return out;
}

std::string_view method_reply_text(amqp_bytes_t text) {
  return {static_cast<const char*>(text.bytes), text.len};
}

// Maps an AMQP reply code (connection.close / channel.close) to our status codes.
StatusCode code_for_amqp_reply(int reply_code) {
  switch (reply_code) {
    case 403:  // ACCESS_REFUSED
    case 530:  // NOT_ALLOWED (e.g. no access to the vhost)
      return StatusCode::permission_denied;
    case 404:  // NOT_FOUND
      return StatusCode::not_found;
    case 405:  // RESOURCE_LOCKED (exclusive queue of another connection)
    case 406:  // PRECONDITION_FAILED (declaration disagrees with the existing queue)
      return StatusCode::failed_precondition;
    case 320:  // CONNECTION_FORCED (broker shutting down, or closed by an operator)
      return StatusCode::unavailable;
    case 311:  // CONTENT_TOO_LARGE
    case 506:  // RESOURCE_ERROR
      return StatusCode::resource_exhausted;
    default:
      return StatusCode::internal;
  }
}

}  // namespace

Headers headers_from_table(const amqp_table_t& table) {
  Headers out;
  for (int i = 0; i < table.num_entries; ++i) {
    const amqp_table_entry_t& e = table.entries[i];
    out.emplace(to_string(e.key), field_to_string(e.value));
  }
  return out;
}

Status status_from_rpc_reply(const amqp_rpc_reply_t& reply, std::string_view what) {
  std::string prefix(what);
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {};
    case AMQP_RESPONSE_NONE:
      return {StatusCode::internal, prefix + ": no reply from rabbitmq-c"};
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
      int err = reply.library_error;
      StatusCode code = StatusCode::unavailable;
      if (err == AMQP_STATUS_TIMEOUT) code = StatusCode::deadline_exceeded;
      if (err == AMQP_STATUS_BAD_URL || err == AMQP_STATUS_INVALID_PARAMETER) {
        code = StatusCode::invalid_argument;
      }
      return {code, prefix + ": " + amqp_error_string2(err)};
    }
    case AMQP_RESPONSE_SERVER_EXCEPTION: {
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        return {code_for_amqp_reply(m->reply_code),
                prefix + ": broker closed the connection: " +
                    std::string(method_reply_text(m->reply_text))};
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        return {code_for_amqp_reply(m->reply_code),
                prefix + ": broker closed the channel: " +
                    std::string(method_reply_text(m->reply_text))};
      }
      return {StatusCode::internal, prefix + ": unexpected broker reply"};
    }
  }
  return {StatusCode::internal, prefix + ": unknown rabbitmq-c reply"};
}

Result<std::unique_ptr<Session>> Session::open(const ConnectionOptions& o) {
  std::unique_ptr<Session> s(new Session());
  s->conn_ = amqp_new_connection();
  if (s->conn_ == nullptr) return Status{StatusCode::resource_exhausted, "out of memory"};
  const std::string where = o.to_string();

  amqp_socket_t* socket = nullptr;
  if (o.tls.enabled) {
    socket = amqp_ssl_socket_new(s->conn_);
    if (socket == nullptr) return Status{StatusCode::internal, "cannot create a TLS socket"};
    amqp_ssl_socket_set_verify_peer(socket, o.tls.verify_peer ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, o.tls.verify_hostname ? 1 : 0);
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
  s->channel_open_ = true;
  return s;
}

Session::~Session() {
  close();
  if (conn_ != nullptr) amqp_destroy_connection(conn_);
}

void Session::close() {
  if (conn_ == nullptr || dead_) return;
  if (channel_open_) amqp_channel_close(conn_, kChannel, AMQP_REPLY_SUCCESS);
  channel_open_ = false;
  amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  dead_ = true;
}

int Session::fd() const {
  return amqp_get_sockfd(conn_);
}

void Session::cork(bool on) {
  int value = on ? 1 : 0;
  // Best effort: a socket that refuses only costs a few more packets.
  ::setsockopt(fd(), IPPROTO_TCP, TCP_CORK, &value, sizeof value);
}

bool Session::has_buffered() const {
  return amqp_frames_enqueued(conn_) || amqp_data_in_buffer(conn_);
}

std::optional<std::chrono::milliseconds> Session::heartbeat_tick() const {
  int hb = amqp_get_heartbeat(conn_);
  if (hb <= 0) return std::nullopt;
  // rabbitmq-c sends a heartbeat when half the interval passed without sending; look twice as
  // often so one is never late.
  return std::chrono::milliseconds(hb * 1000 / 4);
}

Status Session::check_rpc(std::string_view what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return {};
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    amqp_channel_close_ok_t ok{};
    amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    channel_open_ = false;
    auto* close = static_cast<amqp_channel_close_t*>(r.reply.decoded);
    channel_error_ = to_string(close->reply_text);
  }
  if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
      r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    dead_ = true;
  }
  return status_from_rpc_reply(r, what);
}

Status Session::publish(std::string_view exchange, std::string_view routing_key, bool mandatory,
                        const Properties& p, std::string_view body) {
  amqp_basic_properties_t props{};
  if (!p.content_type.empty()) {
    props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.content_type = to_bytes(p.content_type);
  }
  if (!p.correlation_id.empty()) {
    props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    props.correlation_id = to_bytes(p.correlation_id);
  }
  if (!p.reply_to.empty()) {
    props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
    props.reply_to = to_bytes(p.reply_to);
  }
  if (!p.expiration.empty()) {
    props._flags |= AMQP_BASIC_EXPIRATION_FLAG;
    props.expiration = to_bytes(p.expiration);
  }
  if (!p.message_id.empty()) {
    props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    props.message_id = to_bytes(p.message_id);
  }
  if (p.priority) {
    props._flags |= AMQP_BASIC_PRIORITY_FLAG;
    props.priority = *p.priority;
  }
  if (p.delivery_mode != 0) {
    props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = p.delivery_mode;
  }
  std::vector<amqp_table_entry_t> entries;
  if (!p.headers.empty()) {
    entries.reserve(p.headers.size());
    for (const auto& [k, v] : p.headers) {
      amqp_table_entry_t e;
      e.key = to_bytes(k);
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = to_bytes(v);
      entries.push_back(e);
    }
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = static_cast<int>(entries.size());
    props.headers.entries = entries.data();
  }
  int rc = amqp_basic_publish(conn_, kChannel, to_bytes(exchange), to_bytes(routing_key),
                              mandatory ? 1 : 0, 0, &props, to_bytes(body));
  if (confirming_) ++publish_seq_;
  if (rc != AMQP_STATUS_OK) {
    dead_ = true;
    return {StatusCode::unavailable, std::string("publish failed: ") + amqp_error_string2(rc)};
  }
  return {};
}

Status Session::confirm_select() {
  amqp_confirm_select(conn_, kChannel);
  if (Status st = check_rpc("enable publisher confirms"); !st.ok()) return st;
  confirming_ = true;
  publish_seq_ = 0;
  return {};
}

Status Session::ack(std::uint64_t delivery_tag) {
  int rc = amqp_basic_ack(conn_, kChannel, delivery_tag, 0);
  if (rc != AMQP_STATUS_OK) {
    dead_ = true;
    return {StatusCode::unavailable, std::string("ack failed: ") + amqp_error_string2(rc)};
  }
  return {};
}

Status Session::reject(std::uint64_t delivery_tag, bool requeue) {
  int rc = amqp_basic_reject(conn_, kChannel, delivery_tag, requeue ? 1 : 0);
  if (rc != AMQP_STATUS_OK) {
    dead_ = true;
    return {StatusCode::unavailable, std::string("reject failed: ") + amqp_error_string2(rc)};
  }
  return {};
}

Status Session::qos(std::uint16_t prefetch) {
  amqp_basic_qos(conn_, kChannel, 0, prefetch, 0);
  return check_rpc("set prefetch to " + std::to_string(prefetch));
}

Result<std::string> Session::declare_queue(const QueueSpec& q) {
  std::vector<amqp_table_entry_t> args;
  for (const auto& [k, v] : q.arguments) {
    amqp_table_entry_t e;
    e.key = to_bytes(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = to_bytes(v);
    args.push_back(e);
  }
  amqp_table_t table{static_cast<int>(args.size()), args.data()};
  amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, kChannel, to_bytes(q.name), 0, q.durable ? 1 : 0,
                         q.exclusive ? 1 : 0, q.auto_delete ? 1 : 0, table);
  if (Status st = check_rpc("declare queue '" + q.name + "'"); !st.ok()) return st;
  return to_string(ok->queue);
}

Result<std::string> Session::consume(const std::string& queue, bool no_ack, bool exclusive) {
  amqp_basic_consume_ok_t* ok =
      amqp_basic_consume(conn_, kChannel, to_bytes(queue), amqp_empty_bytes, 0, no_ack ? 1 : 0,
                         exclusive ? 1 : 0, amqp_empty_table);
  if (Status st = check_rpc("consume from '" + queue + "'"); !st.ok()) return st;
  return to_string(ok->consumer_tag);
}

Status Session::cancel(const std::string& consumer_tag) {
  amqp_basic_cancel(conn_, kChannel, to_bytes(consumer_tag));
  return check_rpc("cancel consumer '" + consumer_tag + "'");
}

Status Session::pump(FrameSink& sink) {
  if (dead_) return {StatusCode::unavailable, "connection is closed"};
  if (!channel_open_) {
    // Closed by the broker during a synchronous call (e.g. a declaration it refused): without
    // its one channel the session is of no use; the owner drops it (and reconnects).
    return {StatusCode::unavailable, "the broker closed the channel: " + channel_error_};
  }
  timeval zero{};
  for (;;) {
    amqp_frame_t frame;
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
    if (Status st = dispatch(frame, sink); !st.ok()) return st;
  }
  if (!amqp_frames_enqueued(conn_)) amqp_maybe_release_buffers(conn_);
  return {};
}

Status Session::dispatch(const amqp_frame_t& frame, FrameSink& sink) {
  if (frame.frame_type == AMQP_FRAME_METHOD) {
    const amqp_method_t& m = frame.payload.method;
    switch (m.id) {
      case AMQP_BASIC_DELIVER_METHOD: {
        auto* d = static_cast<amqp_basic_deliver_t*>(m.decoded);
        partial_.emplace();
        partial_->delivery.delivery_tag = d->delivery_tag;
        partial_->delivery.redelivered = d->redelivered != 0;
        partial_->delivery.consumer_tag = to_string(d->consumer_tag);
        partial_->delivery.exchange = to_string(d->exchange);
        partial_->delivery.routing_key = to_string(d->routing_key);
        return {};
      }
      case AMQP_BASIC_RETURN_METHOD: {
        auto* r = static_cast<amqp_basic_return_t*>(m.decoded);
        partial_.emplace();
        partial_->is_return = true;
        partial_->returned.reply_code = r->reply_code;
        partial_->returned.reply_text = to_string(r->reply_text);
        partial_->returned.exchange = to_string(r->exchange);
        partial_->returned.routing_key = to_string(r->routing_key);
        return {};
      }
      case AMQP_BASIC_CANCEL_METHOD: {
        auto* c = static_cast<amqp_basic_cancel_t*>(m.decoded);
        std::string tag = to_string(c->consumer_tag);
        if (!c->nowait) {
          amqp_basic_cancel_ok_t ok{};
          ok.consumer_tag = c->consumer_tag;
          amqp_send_method(conn_, kChannel, AMQP_BASIC_CANCEL_OK_METHOD, &ok);
        }
        sink.on_consumer_cancelled(tag);
        return {};
      }
      case AMQP_BASIC_ACK_METHOD: {
        auto* a = static_cast<amqp_basic_ack_t*>(m.decoded);
        sink.on_confirm(a->delivery_tag, a->multiple != 0, true);
        return {};
      }
      case AMQP_BASIC_NACK_METHOD: {
        auto* n = static_cast<amqp_basic_nack_t*>(m.decoded);
        sink.on_confirm(n->delivery_tag, n->multiple != 0, false);
        return {};
      }
      case AMQP_CONNECTION_BLOCKED_METHOD: {
        auto* b = static_cast<amqp_connection_blocked_t*>(m.decoded);
        sink.on_blocked(true, to_string(b->reason));
        return {};
      }
      case AMQP_CONNECTION_UNBLOCKED_METHOD:
        sink.on_blocked(false, {});
        return {};
      case AMQP_CHANNEL_CLOSE_METHOD: {
        auto* c = static_cast<amqp_channel_close_t*>(m.decoded);
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        channel_open_ = false;
        // The caller drops the session on this status; closing it then ends the connection
        // politely.
        return {code_for_amqp_reply(c->reply_code),
                "broker closed the channel: " + to_string(c->reply_text)};
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        auto* c = static_cast<amqp_connection_close_t*>(m.decoded);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        dead_ = true;
        return {code_for_amqp_reply(c->reply_code) == StatusCode::internal
                    ? StatusCode::unavailable
                    : code_for_amqp_reply(c->reply_code),
                "broker closed the connection: " + to_string(c->reply_text)};
      }
      default:
        return {};  // acks of things we did not ask for, etc.: nothing to do
    }
  }
  if (!partial_) return {};  // a stray content frame: ignore
  if (frame.frame_type == AMQP_FRAME_HEADER) {
    partial_->have_header = true;
    partial_->body_size = frame.payload.properties.body_size;
    auto* p = static_cast<amqp_basic_properties_t*>(frame.payload.properties.decoded);
    Properties props = copy_properties(*p);
    std::string& body = partial_->is_return ? partial_->returned.body : partial_->delivery.body;
    body.reserve(partial_->body_size);
    (partial_->is_return ? partial_->returned.props : partial_->delivery.props) = std::move(props);
  } else if (frame.frame_type == AMQP_FRAME_BODY && partial_->have_header) {
    std::string& body = partial_->is_return ? partial_->returned.body : partial_->delivery.body;
    body.append(static_cast<const char*>(frame.payload.body_fragment.bytes),
                frame.payload.body_fragment.len);
  } else {
    return {};
  }
  std::string& body = partial_->is_return ? partial_->returned.body : partial_->delivery.body;
  if (partial_->have_header && body.size() >= partial_->body_size) {
    PartialMessage done = std::move(*partial_);
    partial_.reset();
    if (done.is_return) {
      sink.on_return(std::move(done.returned));
    } else {
      sink.on_delivery(std::move(done.delivery));
    }
  }
  return {};
}

}  // namespace amqprpc::detail
