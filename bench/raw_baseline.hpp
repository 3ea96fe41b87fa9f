// The broker's practical ceiling on this machine: an echo server and a pipelined client written
// directly on rabbitmq-c's C API, with no framework at all. One thread each, blocking reads.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "amqprpc/options.hpp"

struct amqp_connection_state_t_;  // rabbitmq-c's
struct amqp_envelope_t_;
struct amqp_table_t_;

namespace bench {

// A rabbitmq-c connection logged in with channel 1 open, or null with `error` set.
amqp_connection_state_t_* raw_connect(const amqprpc::ConnectionOptions& broker, std::string& error);
// Closes channel 1 and the connection, and frees it.
void raw_close(amqp_connection_state_t_* conn);

// Declares `queue` (with `args`, if given) and consumes it on channel 1, acks manual. False:
// the broker refused, and the connection is unusable.
bool raw_consume(amqp_connection_state_t_* conn, const std::string& queue,
                 const amqp_table_t_* args = nullptr);
// The next delivery of an echo server's consumer: it waits 100 ms at most, so that its loop
// checks a stop flag that often.
enum class Next {
  delivery,  // in `env`: the caller destroys it
  idle,      // none came
  failed,    // the connection broke
};
Next raw_next_delivery(amqp_connection_state_t_* conn, amqp_envelope_t_& env);

// Serves echo on `queue` until `stop` is set (checked every 100 ms). Returns an error or "".
std::string raw_serve(const amqprpc::ConnectionOptions& broker, const std::string& queue,
                      int prefetch, const std::atomic<bool>& stop);

struct RunResult {
  std::uint64_t calls = 0;
  double seconds = 0;
  std::vector<double> latencies_us;  // one per call
  std::string error;
};

// Keeps `concurrency` echo calls of `size` bytes in flight for `seconds` (after `warmup`
// seconds not counted), replies through direct reply-to. Calls mark("measure") with the first
// reply of the measured window and mark("end") with the first reply after it.
RunResult raw_client(const amqprpc::ConnectionOptions& broker, const std::string& queue,
                     int concurrency, std::size_t size, double warmup, double seconds,
                     const std::function<void(const char*)>& mark);

}  // namespace bench
