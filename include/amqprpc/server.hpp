// The serving side: consumes a queue, runs a handler per request, replies, then acks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "amqprpc/message.hpp"
#include "amqprpc/metrics.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// Turns a request into a reply. Runs on one of the server's worker threads. An exception it
// throws becomes an error reply with code internal and the exception's message.
using Handler = std::function<Reply(const Request&)>;

// One queue and the handler for its requests: a server may serve several ("methods").
struct Route {
  std::string queue;
  Handler handler;
};

class Server {
 public:
  // Connects, declares options.queue, sets the prefetch, starts consuming. Returns once requests
  // are being consumed, or the reason they cannot be.
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Handler handler);
  // The same for several queues on one connection (options.queue is not used). Each queue has
  // its own consumer and prefetch; Request::queue tells a shared handler which one it serves.
  static Result<std::unique_ptr<Server>> start(ServerOptions options, std::vector<Route> routes);

  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Graceful stop: cancels the consumers (no new requests arrive), lets the handlers running
  // now finish (for ServerOptions::stop_grace at most) and sends their replies and acks, hands
  // requests no handler had started back to the broker (for other servers), then closes (a
  // broker that does not answer the close is given 1 s). Idempotent. From a handler it only
  // starts the stop; wait() tells when it is done.
  void stop();

  // Blocks until the server stops: stop() was called, or the connection was lost. Returns why.
  Status wait();

  struct Stats {
    std::uint64_t received = 0;
    std::uint64_t replied_ok = 0;
    std::uint64_t replied_error = 0;
    std::uint64_t rejected = 0;       // no reply_to: rejected without requeue
    std::uint64_t expired = 0;        // deadline passed before a handler started: acked, skipped
    std::uint64_t oversized = 0;      // over max_request_size: error reply
    std::uint64_t redelivered = 0;    // came back after a crash or lost connection
    std::uint64_t dead_lettered = 0;  // failed max_attempts times: moved to the dead-letter queue
    std::uint64_t requeued = 0;       // not started when the server stopped: back to the broker
    std::uint64_t reconnects = 0;
    std::map<StatusCode, std::uint64_t> errors;  // error replies by status code
    LatencyHistogram handler_latency;            // time spent in handlers
  };
  Stats stats() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amqprpc
