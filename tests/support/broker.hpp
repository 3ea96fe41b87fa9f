// Test helpers for talking to the real broker: where it is, unique names, and a raw rabbitmq-c
// connection for doing what our library deliberately does not (publishing malformed requests,
// inspecting queues).
#pragma once

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/server.hpp"

namespace testbroker {

inline std::string url() {
  const char* env = std::getenv("AMQP_URL");
  if (env == nullptr || *env == '\0') {
    throw std::runtime_error(
        "AMQP_URL is not set: run the suite with scripts/test.sh, which starts a private broker");
  }
  return env;
}

inline amqprpc::ConnectionOptions options() {
  auto o = amqprpc::ConnectionOptions::from_uri(url());
  if (!o) throw std::runtime_error(o.status().to_string());
  o->connect_timeout = std::chrono::milliseconds(5000);
  return *o;
}

// A client of the test broker (o.connection is set to it); throws when it cannot connect.
inline std::unique_ptr<amqprpc::Client> connect(amqprpc::ClientOptions o = {}) {
  o.connection = options();
  auto c = amqprpc::Client::connect(std::move(o));
  if (!c) throw std::runtime_error(c.status().to_string());
  return std::move(*c);
}

// Server options for the test broker: `workers` handler threads, quiet, and no poison-message
// accounting (a test that wants it turns it on).
inline amqprpc::ServerOptions server_options(std::size_t workers = 1) {
  amqprpc::ServerOptions o;
  o.connection = options();
  o.workers = workers;
  o.max_attempts = 0;
  o.logger = [](amqprpc::LogLevel, std::string_view) {};
  return o;
}

// A server of `service` on the test broker; throws when it cannot start.
inline std::unique_ptr<amqprpc::Server> serve(amqprpc::Service service,
                                              amqprpc::ServerOptions o = server_options()) {
  auto s = amqprpc::Server::start(std::move(o), std::move(service));
  if (!s) throw std::runtime_error(s.status().to_string());
  return std::move(*s);
}

inline std::string unique(const std::string& prefix) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  return prefix + "-" + std::to_string(rd() % 1000000) + "-" + std::to_string(++counter);
}

// Polls cond every 10 ms until it holds or `limit` passes. Returns whether it held. The default
// bound is generous: it only costs time when the outcome never comes.
// Wait for each fact a test asserts, not only the first: a fact seen on the broker (a queue
// bound again, a reply received) or a handler's own flag says nothing of a stat the library
// updates on another thread a moment later (reconnects is counted after the connection's
// set-up, streams_orphaned after the producer is woken). A stat read once after waiting for
// something else is a race that a slow, shared CI machine loses now and then.
inline bool eventually(const std::function<bool()>& cond,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(30000)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return cond();
}

// A bare rabbitmq-c connection, blocking, for test set-up and inspection.
class Raw {
 public:
  Raw() {
    auto o = options();
    conn_ = amqp_new_connection();
    amqp_socket_t* s = amqp_tcp_socket_new(conn_);
    if (amqp_socket_open(s, o.host.c_str(), o.port) != AMQP_STATUS_OK) {
      throw std::runtime_error("raw: cannot connect");
    }
    check(amqp_login(conn_, o.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, o.user.c_str(),
                     o.password.c_str()),
          "login");
    amqp_channel_open(conn_, 1);
    check(amqp_get_rpc_reply(conn_), "channel.open");
  }
  ~Raw() {
    amqp_channel_close(conn_, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn_);
  }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  // `exclusive`: this connection's alone (and gone with it).
  void declare(const std::string& queue, bool durable = false, bool exclusive = false) {
    amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 0, durable, exclusive, 0,
                       amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "queue.declare");
  }
  // A queue with integer arguments (x-max-length...) and string ones (x-overflow...).
  void declare_with(const std::string& queue, const std::vector<std::pair<std::string, long>>& ints,
                    const std::vector<std::pair<std::string, std::string>>& strings) {
    std::vector<amqp_table_entry_t> e;
    for (const auto& [k, v] : ints) {
      amqp_table_entry_t x;
      x.key = amqp_cstring_bytes(k.c_str());
      x.value.kind = AMQP_FIELD_KIND_I64;
      x.value.value.i64 = v;
      e.push_back(x);
    }
    for (const auto& [k, v] : strings) {
      amqp_table_entry_t x;
      x.key = amqp_cstring_bytes(k.c_str());
      x.value.kind = AMQP_FIELD_KIND_UTF8;
      x.value.value.bytes = amqp_cstring_bytes(v.c_str());
      e.push_back(x);
    }
    amqp_table_t args{static_cast<int>(e.size()), e.data()};
    amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 0, 0, 0, 0, args);
    check(amqp_get_rpc_reply(conn_), "queue.declare with arguments");
  }
  void remove(const std::string& queue) {
    amqp_queue_delete(conn_, 1, amqp_cstring_bytes(queue.c_str()), 0, 0);
    check(amqp_get_rpc_reply(conn_), "queue.delete");
  }
  std::uint32_t depth(const std::string& queue) {
    auto* ok = amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0,
                                  amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "queue.declare passive");
    return ok->message_count;
  }
  // How many consumers a queue has (a passive declare, as a gathering client counts a
  // service's instances on its roster); nullopt when there is no such queue.
  std::optional<std::uint32_t> consumers(const std::string& queue) {
    auto* ok = amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0,
                                  amqp_empty_table);
    if (!survived(amqp_get_rpc_reply(conn_), "queue.declare passive")) return std::nullopt;
    return ok->consumer_count;
  }
  bool exchange_exists(const std::string& exchange) {
    amqp_exchange_declare(conn_, 1, amqp_cstring_bytes(exchange.c_str()),
                          amqp_cstring_bytes("fanout"), 1, 0, 0, 0, amqp_empty_table);
    return survived(amqp_get_rpc_reply(conn_), "exchange.declare passive");
  }
  void remove_exchange(const std::string& exchange) {
    amqp_exchange_delete(conn_, 1, amqp_cstring_bytes(exchange.c_str()), 0);
    check(amqp_get_rpc_reply(conn_), "exchange.delete");
  }
  // Consumes a queue (amq.rabbitmq.reply-to too) with no-ack; next() reads what it delivers.
  void consume(const std::string& queue) {
    amqp_basic_consume(conn_, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 1, 0,
                       amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "basic.consume");
  }

  // Publishes to the default exchange; empty reply_to / correlation_id are left unset.
  void publish(const std::string& queue, const std::string& body, const std::string& reply_to,
               const std::string& correlation_id,
               const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    publish_to("", queue, body, reply_to, correlation_id, headers);
  }
  // Publishes to an exchange. Not mandatory: a basic.return would come in the way of the next
  // synchronous method on this connection.
  void publish_to(const std::string& exchange, const std::string& routing_key,
                  const std::string& body, const std::string& reply_to,
                  const std::string& correlation_id,
                  const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    amqp_basic_properties_t p{};
    std::vector<amqp_table_entry_t> entries;
    for (const auto& [k, v] : headers) {
      amqp_table_entry_t e;
      e.key = amqp_cstring_bytes(k.c_str());
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = amqp_cstring_bytes(v.c_str());
      entries.push_back(e);
    }
    if (!entries.empty()) {
      p._flags |= AMQP_BASIC_HEADERS_FLAG;
      p.headers.num_entries = static_cast<int>(entries.size());
      p.headers.entries = entries.data();
    }
    if (!reply_to.empty()) {
      p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
      p.reply_to = amqp_cstring_bytes(reply_to.c_str());
    }
    if (!correlation_id.empty()) {
      p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
      p.correlation_id = amqp_cstring_bytes(correlation_id.c_str());
    }
    amqp_bytes_t b{body.size(), const_cast<char*>(body.data())};
    if (amqp_basic_publish(conn_, 1, amqp_cstring_bytes(exchange.c_str()),
                           amqp_cstring_bytes(routing_key.c_str()), 0, 0, &p,
                           b) != AMQP_STATUS_OK) {
      throw std::runtime_error("raw: publish failed");
    }
  }

  struct Got {
    std::string body;
    std::string correlation_id;
    std::string reply_to;
    std::string expiration;
    std::optional<int> priority;
    std::string content_type;
    std::optional<std::string> deadline_header;
    std::map<std::string, std::string> headers;
  };
  // basic.get with auto-ack; nullopt when the queue is empty.
  std::optional<Got> get(const std::string& queue) {
    amqp_rpc_reply_t r = amqp_basic_get(conn_, 1, amqp_cstring_bytes(queue.c_str()), 1);
    check(r, "basic.get");
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) return std::nullopt;
    amqp_message_t m;
    check(amqp_read_message(conn_, 1, &m, 0), "read message");
    Got g = got(m);
    amqp_destroy_message(&m);
    return g;
  }
  // The next message a consume() delivers, waiting `limit` at most; nullopt when none came.
  std::optional<Got> next(std::chrono::milliseconds limit) {
    amqp_maybe_release_buffers(conn_);
    amqp_envelope_t envelope;
    timeval tv{static_cast<time_t>(limit.count() / 1000),
               static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
    amqp_rpc_reply_t r = amqp_consume_message(conn_, &envelope, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      return std::nullopt;
    }
    check(r, "consume message");
    Got g = got(envelope.message);
    amqp_destroy_envelope(&envelope);
    return g;
  }

 private:
  static Got got(const amqp_message_t& m) {
    Got g;
    g.body.assign(static_cast<char*>(m.body.bytes), m.body.len);
    auto str = [](amqp_bytes_t b) { return std::string(static_cast<char*>(b.bytes), b.len); };
    if (m.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
      g.correlation_id = str(m.properties.correlation_id);
    if (m.properties._flags & AMQP_BASIC_REPLY_TO_FLAG) g.reply_to = str(m.properties.reply_to);
    if (m.properties._flags & AMQP_BASIC_PRIORITY_FLAG) g.priority = m.properties.priority;
    if (m.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
      g.content_type = str(m.properties.content_type);
    }
    if (m.properties._flags & AMQP_BASIC_EXPIRATION_FLAG)
      g.expiration = str(m.properties.expiration);
    if (m.properties._flags & AMQP_BASIC_HEADERS_FLAG) {
      for (int i = 0; i < m.properties.headers.num_entries; ++i) {
        auto& e = m.properties.headers.entries[i];
        if (str(e.key) == "x-rpc-deadline") g.deadline_header = str(e.value.value.bytes);
        if (e.value.kind == AMQP_FIELD_KIND_UTF8) g.headers[str(e.key)] = str(e.value.value.bytes);
      }
    }
    return g;
  }
  static void check(const amqp_rpc_reply_t& r, const char* what) {
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
      throw std::runtime_error(std::string("raw: ") + what + " failed");
  }
  // False when the broker refused with 404 NOT_FOUND, which closes the channel: it is opened
  // again, so the connection goes on. Other failures throw.
  bool survived(const amqp_rpc_reply_t& r, const char* what) {
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD &&
        static_cast<amqp_channel_close_t*>(r.reply.decoded)->reply_code == AMQP_NOT_FOUND) {
      amqp_channel_close_ok_t ok{};
      amqp_send_method(conn_, 1, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      amqp_channel_open(conn_, 1);
      check(amqp_get_rpc_reply(conn_), "channel.open again");
      return false;
    }
    check(r, what);
    return true;
  }
  amqp_connection_state_t conn_;
};

// A test with a queue of its own (`queue`, a unique name from `prefix`), deleted at its end.
class OwnQueue : public testing::Test {
 protected:
  explicit OwnQueue(const std::string& prefix) : queue(unique(prefix)) {}
  void TearDown() override {
    try {
      Raw().remove(queue);
    } catch (...) {
    }
  }
  std::string queue;
};

}  // namespace testbroker
