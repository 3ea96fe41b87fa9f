#include "raw_baseline.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <chrono>
#include <cstring>

namespace bench {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

amqp_connection_state_t raw_connect(const amqprpc::ConnectionOptions& o, std::string& error) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* s = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(s, o.host.c_str(), o.port) != AMQP_STATUS_OK) {
    error = "raw: cannot connect";
    amqp_destroy_connection(conn);
    return nullptr;
  }
  amqp_rpc_reply_t r = amqp_login(conn, o.vhost.c_str(), 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                  o.user.c_str(), o.password.c_str());
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    error = "raw: login failed";
    amqp_destroy_connection(conn);
    return nullptr;
  }
  amqp_channel_open(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
    error = "raw: channel.open failed";
    amqp_destroy_connection(conn);
    return nullptr;
  }
  return conn;
}

void raw_close(amqp_connection_state_t conn) {
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

bool raw_consume(amqp_connection_state_t conn, const std::string& queue, const amqp_table_t* args) {
  amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue.c_str()), 0, 0, 0, 0,
                     args != nullptr ? *args : amqp_empty_table);
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  return amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL;
}

Next raw_next_delivery(amqp_connection_state_t conn, amqp_envelope_t& env) {
  amqp_maybe_release_buffers(conn);
  timeval tv{0, 100'000};
  amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return Next::delivery;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
    return Next::idle;
  }
  return Next::failed;
}

std::string raw_serve(const amqprpc::ConnectionOptions& broker, const std::string& queue,
                      int prefetch, const std::atomic<bool>& stop) {
  std::string error;
  amqp_connection_state_t conn = raw_connect(broker, error);
  if (conn == nullptr) return error;
  amqp_basic_qos(conn, 1, 0, static_cast<std::uint16_t>(prefetch), 0);
  if (!raw_consume(conn, queue)) {
    raw_close(conn);
    return "raw: consume failed";
  }
  while (!stop.load(std::memory_order_relaxed)) {
    amqp_envelope_t env;
    const Next next = raw_next_delivery(conn, env);
    if (next == Next::idle) continue;
    if (next == Next::failed) {
      error = "raw: consume error";
      break;
    }
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
    p.correlation_id = env.message.properties.correlation_id;
    amqp_basic_publish(conn, 1, amqp_empty_bytes, env.message.properties.reply_to, 0, 0, &p,
                       env.message.body);
    amqp_basic_ack(conn, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
  }
  raw_close(conn);
  return error;
}

RunResult raw_client(const amqprpc::ConnectionOptions& broker, const std::string& queue,
                     int concurrency, std::size_t size, double warmup, double seconds,
                     const std::function<void(const char*)>& mark) {
  RunResult result;
  amqp_connection_state_t conn = raw_connect(broker, result.error);
  if (conn == nullptr) return result;
  amqp_bytes_t reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
  amqp_basic_consume(conn, 1, reply_to, amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
    result.error = "raw: consume reply-to failed";
    raw_close(conn);
    return result;
  }
  std::string body(size, 'x');
  constexpr std::size_t kRing = 1 << 16;  // >> concurrency: a slot is reused long after its reply
  std::vector<Clock::time_point> sent(kRing);
  std::uint64_t next = 0;
  char id[24];
  auto publish = [&] {
    int n = std::snprintf(id, sizeof id, "%llu", static_cast<unsigned long long>(next));
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    p.correlation_id = amqp_bytes_t{static_cast<std::size_t>(n), id};
    p.reply_to = reply_to;
    sent[next % kRing] = Clock::now();
    ++next;
    return amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 0, 0,
                              &p, amqp_bytes_t{body.size(), body.data()}) == AMQP_STATUS_OK;
  };
  for (int i = 0; i < concurrency; ++i) publish();

  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration<double>(warmup);
  const auto end = measure_from + std::chrono::duration<double>(seconds);
  bool measuring = false;
  Clock::time_point measured_start;
  int in_flight = concurrency;
  while (in_flight > 0) {
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t env;
    timeval tv{10, 0};
    amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      result.error = "raw: no reply within 10 s";
      break;
    }
    auto now = Clock::now();
    std::uint64_t seq =
        std::strtoull(std::string(static_cast<char*>(env.message.properties.correlation_id.bytes),
                                  env.message.properties.correlation_id.len)
                          .c_str(),
                      nullptr, 10);
    amqp_destroy_envelope(&env);
    --in_flight;
    if (!measuring && now >= measure_from) {
      measuring = true;
      measured_start = now;
      mark("measure");
    }
    if (measuring && now < end) {
      result.latencies_us.push_back(
          std::chrono::duration<double, std::micro>(now - sent[seq % kRing]).count());
    }
    if (now < end) {
      publish();
      ++in_flight;
    } else if (measuring && result.seconds == 0) {
      result.seconds = std::chrono::duration<double>(now - measured_start).count();
      mark("end");
    }
  }
  if (result.seconds == 0 && measuring) {
    result.seconds = std::chrono::duration<double>(Clock::now() - measured_start).count();
  }
  result.calls = result.latencies_us.size();
  raw_close(conn);
  return result;
}

}  // namespace bench
