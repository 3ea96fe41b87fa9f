// The serving side: consumes a queue, runs a handler per request, replies, then acks.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "amqprpc/message.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// Turns a request into a reply. Runs on one of the server's worker threads. An exception it
// throws becomes an error reply with code internal and the exception's message.
using Handler = std::function<Reply(const Request&)>;

class Server {
 public:
  // Connects, declares the queue, sets the prefetch, starts consuming. Returns once requests
  // are being consumed, or the reason they cannot be.
  static Result<std::unique_ptr<Server>> start(ServerOptions options, Handler handler);

  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops consuming, finishes the requests in hand (replying and acking each), and closes.
  // Requests the broker had sent but no worker had started go back to the queue. Idempotent.
  void stop();

  // Blocks until the server stops: stop() was called, or the connection was lost. Returns why.
  Status wait();

  struct Stats {
    std::uint64_t received = 0;
    std::uint64_t replied_ok = 0;
    std::uint64_t replied_error = 0;
    std::uint64_t rejected = 0;  // no reply_to: rejected without requeue
  };
  Stats stats() const;

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amqprpc
