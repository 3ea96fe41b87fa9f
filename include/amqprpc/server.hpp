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
#include "amqprpc/service.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

class Server {
 public:
  // Connects, declares options.queue, sets the prefetch, starts consuming, and joins the gathers
  // of its services (ServerOptions::gather). Returns once requests are being consumed, or the
  // reason they cannot be. Every request goes to `handler` (the
  // default handler of a service on options.queue).
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Handler handler);
  // Serves a service on its queue (options.queue is not used).
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Service service);
  // Several services on one connection, each on its own queue with its own consumer.
  static Result<std::unique_ptr<Server>> start(ServerOptions options,
                                               std::vector<Service> services);

  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Graceful stop: cancels the consumers (no new requests arrive), lets the handlers running
  // now finish (for ServerOptions::stop_grace at most) and sends their replies and acks, hands
  // requests no handler had started back to the broker (for other servers; gathers, which no
  // other server may answer, are answered unavailable instead), then closes (a
  // broker that does not answer the close is given 1 s). Idempotent. From a handler it only
  // starts the stop; wait() tells when it is done. An asynchronous handler's own thread (a
  // coroutine's executor) is not the server's: stop() there blocks the thread its handlers need
  // to answer, so post the stop to another thread. Context stop callbacks must not stop or
  // destroy the server.
  void stop();

  // What the reserved health method answers: serving (the default) or not_serving, like gRPC's
  // SetServingStatus. A stopping server answers not_serving whatever this says.
  void set_serving(bool serving);
  // What health answers now: false once set_serving(false) or a stop has begun.
  bool serving() const;

  // Who this server is in its replies to gathers (header x-rpc-instance): ServerOptions::
  // instance, or the name made for it when that was empty. Any thread.
  const std::string& instance() const;

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
    std::uint64_t oneway = 0;         // one-way calls handled (nothing sent back)
    std::uint64_t unimplemented = 0;  // calls of a method the service does not have
    std::uint64_t denied = 0;         // calls refused: the caller is not on the method's list
    std::uint64_t reserved = 0;       // describe and health requests answered by the framework
    std::uint64_t gathers = 0;        // requests that came through the instance queue (gathers)
    std::uint64_t stream_items = 0;   // items written by streaming methods
    // Checks that the caller of a stream waiting for credit is still there, and streams
    // stopped because it was not (its reply queue or direct reply-to address was gone).
    std::uint64_t stream_probes = 0;
    std::uint64_t streams_orphaned = 0;
    std::uint64_t reconnects = 0;
    // Now: requests given to handlers and not answered yet (asynchronous ones included).
    std::uint64_t in_hand = 0;
    std::map<StatusCode, std::uint64_t> errors;  // error replies by status code
    // From a request's start (interceptors, handler) to its answer, asynchronous ones included.
    LatencyHistogram handler_latency;
  };
  Stats stats() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amqprpc
