// The calling side: one connection, one I/O thread, many calls in flight.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "amqprpc/message.hpp"
#include "amqprpc/metrics.hpp"
#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// One server instance's answer to a gather.
struct InstanceReply {
  std::string instance;  // the Server::instance() that answered
  Reply reply;           // what it answered: a reply, or its error
};

// What a gather collected (Client::gather).
struct GatherResult {
  // ok: every instance taking part when the request was sent answered (each reply says how);
  // deadline_exceeded: some had not by the deadline (the others' replies are here);
  // unavailable: no server instance of the queue takes part in gathers, or the connection
  // failed (replies so far are here); cancelled; invalid_argument.
  Status status;
  std::vector<InstanceReply> replies;  // in the order they came
  std::size_t expected = 0;            // instances taking part when the request was sent
  // How many of those did not answer.
  std::size_t missing() const { return expected > replies.size() ? expected - replies.size() : 0; }
  // When some are missing: the instances that answered this client's previous gather on the
  // queue and not this one (the missing ones by name, as far as this client has heard of them:
  // an instance never heard from has no name yet).
  std::vector<std::string> silent;
};

namespace detail {
class StreamState;
}

// The items of a streaming call (Client::stream) as they come, in order, then its final status:
// gRPC's server streaming. Reading is what lets the server send more (flow control): a reader
// that stops reading stops the server's producer, and nothing buffers more than the call's
// CallOptions::stream_window items. Destroying it cancels a stream still running.
class ReplyStream {
 public:
  explicit ReplyStream(std::shared_ptr<detail::StreamState> state);
  ~ReplyStream();
  ReplyStream(const ReplyStream&) = delete;
  ReplyStream& operator=(const ReplyStream&) = delete;

  // The next item (its body, content type, headers), waiting for it; nullopt once the stream
  // has ended, and status() says how. Not from the client's own callbacks: it would wait for
  // the thread that brings the items (use async_next there).
  std::optional<Reply> next();
  // The same, without blocking: `on_item` gets the next item, or nullopt at the end, on the
  // client's I/O thread or (when one is ready now) this one; one at a time. amqprpc/asio.hpp
  // makes it an Asio operation (co_await amqprpc::async_next(stream, asio::use_awaitable)).
  void async_next(std::function<void(std::optional<Reply>)> on_item);
  // Asks the server to stop; the stream ends with cancelled (items already here stay readable).
  void cancel();
  // The final status, once next() has returned nullopt: ok when the server ended the stream so,
  // its error, or why the stream broke (deadline_exceeded, unavailable, cancelled).
  Status status() const;
  // Whether the stream has ended and every item was read.
  bool done() const;

 private:
  std::shared_ptr<detail::StreamState> state_;
};

class Client {
 public:
  // Connects, opens the reply path and starts the I/O thread. Fails with unavailable (cannot
  // reach the broker), permission_denied (login or vhost refused) or invalid_argument.
  static Result<std::unique_ptr<Client>> connect(ClientOptions options);

  ~Client();  // fails calls still in flight with cancelled, closes the connection
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends body to queue and blocks until the matching reply or the deadline. Returns the reply
  // body; throws RpcError carrying the status on any failure (error reply, timeout, no route,
  // connection lost).
  std::string call(const std::string& queue, std::string body, const CallOptions& options = {});

  // The same, but never throws: the status of the returned Reply says what happened.
  Reply try_call(const std::string& queue, std::string body, const CallOptions& options = {});

  // Asynchronous forms. Safe from any thread. The callback runs on the client's I/O thread (or,
  // for a call refused at once, such as one with a bad option, on the calling thread before
  // async_call returns; under a retry or hedging policy only for a bad policy, as the attempts
  // start on the I/O thread): keep it short, do not call blocking methods of this client from it.
  // Exceptions it throws are logged and dropped. It may destroy the client.
  // Timeouts over 30 days are clamped to 30 days.
  std::future<Reply> async_call(const std::string& queue, std::string body,
                                const CallOptions& options = {});
  void async_call(const std::string& queue, std::string body, const CallOptions& options,
                  std::function<void(Reply)> on_done);

  // A one-way call (fire-and-forget): sends `body` to `method` of the service on `queue` and
  // expects nothing back; the server runs the handler and acks. Blocks until the request is
  // sent; with ClientOptions::confirm_requests, until the broker has taken it (a queue that does
  // not exist then fails with unavailable). Fails like a call when it cannot be sent. Retry and
  // hedging policies do not apply: one attempt (no reply tells whether another is needed).
  Status notify(const std::string& queue, const std::string& method, std::string body,
                const CallOptions& options = {});

  // Gather: sends one request to `method` of every server instance of the service on `queue`
  // (each has its own queue bound to the service's fanout exchange; see docs/PROTOCOL.md) and
  // collects their replies, each with the instance that answered. Ends when every instance
  // taking part when the request was sent has answered, or at the deadline, returning what it
  // has and how many (and, when it can tell, which) are missing. A second reply from one
  // instance is dropped. Never throws. Interceptors and retry policies do not apply.
  GatherResult gather(const std::string& queue, const std::string& method, std::string body,
                      const CallOptions& options = {});
  // The same, asynchronously; the callback runs on the client's I/O thread (as async_call's).
  std::future<GatherResult> async_gather(const std::string& queue, const std::string& method,
                                         std::string body, const CallOptions& options = {});
  void async_gather(const std::string& queue, const std::string& method, std::string body,
                    const CallOptions& options, std::function<void(GatherResult)> on_done);

  // A streaming call (a method that answers with many items, then a status; Service::
  // stream_method): the items are read from the returned stream as they come, in order.
  // Bounded by the call's deadline like any call; CallOptions::stream_window sets how many
  // items may be on their way before the reader takes them. Failures before any item (no
  // server, bad options) end the stream at once with that status.
  std::unique_ptr<ReplyStream> stream(const std::string& queue, const std::string& method,
                                      std::string body, const CallOptions& options = {});
  // The same with callbacks on the client's I/O thread: `on_item` for each item in order (the
  // server may send another when it returns: a slow callback slows the server, never fills
  // memory), then `on_done` with the final status. Keep them short, as async_call's.
  void stream(const std::string& queue, const std::string& method, std::string body,
              const CallOptions& options, std::function<void(Reply)> on_item,
              std::function<void(Status)> on_done);

  // The queue replies come back on ("amq.rabbitmq.reply-to" or the exclusive queue's name).
  std::string reply_queue() const;

  // With a retry or hedging policy (options.hpp), a call is made of attempts, each a request of
  // its own: `calls`, `errors` and `latency` count calls, as their callers saw them; `replies`,
  // `timeouts` and `unroutable` count what happened to requests (attempts).
  struct Stats {
    std::uint64_t calls = 0;         // calls started (one per call, however many attempts)
    std::uint64_t replies = 0;       // requests answered by a reply (ok or error reply)
    std::uint64_t timeouts = 0;      // calls that reached their deadline waiting for a reply
    std::uint64_t unroutable = 0;    // no queue to take the request (returned, or known missing)
    std::uint64_t no_server = 0;     // failed fast: the queue exists, nobody consumes it
    std::uint64_t late_replies = 0;  // replies whose correlation id no call waits for
    std::uint64_t cancelled = 0;     // cancelled through CallOptions::cancel while in flight
    std::uint64_t duplicate_replies = 0;  // second replies to a finished call (redelivery)
    std::uint64_t reconnects = 0;
    std::uint64_t retries = 0;  // attempts sent by a retry policy because an earlier one failed
    std::uint64_t hedges = 0;   // attempts sent by a hedging policy after the first
    // Replies to hedged attempts that came after another attempt had ended the call: dropped,
    // and counted here rather than in late_replies.
    std::uint64_t hedge_losses = 0;
    std::uint64_t gathers = 0;                   // gathers started
    std::uint64_t streams = 0;                   // streaming calls started
    std::uint64_t stream_items = 0;              // items received by streaming calls
    std::map<StatusCode, std::uint64_t> errors;  // failed calls by status code
    LatencyHistogram latency;                    // submit to completion, every call
  };
  Stats stats() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace amqprpc
