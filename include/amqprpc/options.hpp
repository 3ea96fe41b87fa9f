// Everything that configures a connection, a client, a server or a single call.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "amqprpc/message.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

class ClientInterceptor;
class ServerInterceptor;

enum class LogLevel { debug, info, warning, error };
// Where the library's log lines go. Unset: warnings and errors go to stderr.
using Logger = std::function<void(LogLevel, std::string_view)>;

struct TlsOptions {
  bool enabled = false;   // amqps://
  std::string ca_file;    // empty: the system's default trust store
  std::string cert_file;  // client certificate (optional)
  std::string key_file;
  bool verify_peer = true;
  bool verify_hostname = true;
};

// Where and how to connect. Build it by hand or from an AMQP URI:
//   amqp://user:pass@host:port/vhost?heartbeat=30&connection_timeout=5000
struct ConnectionOptions {
  std::string host = "localhost";
  std::uint16_t port = 5672;
  std::string vhost = "/";
  std::string user = "guest";
  std::string password = "guest";
  std::chrono::seconds heartbeat{60};                 // 0 disables heartbeats
  std::chrono::milliseconds connect_timeout{10'000};  // TCP connect + AMQP handshake
  int frame_max = 131072;
  // The broker's max_message_size: a larger body is refused before it is sent
  // (resource_exhausted), since the broker would close the channel, failing every call on it.
  // RabbitMQ does not announce its limit: set this to the broker's (RabbitMQ 4.x's default is
  // 16 MiB, 3.x's 128 MiB). URI: max_message_size=BYTES.
  std::size_t max_message_size = 16u * 1024 * 1024;
  TlsOptions tls;

  // Parses an AMQP URI following RabbitMQ's URI spec: percent-decoding in every part, defaults
  // (localhost, 5672 or 5671 for amqps, guest/guest, vhost "/"), IPv6 literals in brackets,
  // query parameters heartbeat (s), connection_timeout (ms), frame_max, max_message_size (bytes),
  // and for amqps cacertfile,
  // certfile, keyfile, verify=verify_peer|verify_none, server_name_indication.
  // An empty path ("amqp://host/") means vhost "/", as most clients read it.
  // Errors are invalid_argument and name the part that is wrong.
  static Result<ConnectionOptions> from_uri(std::string_view uri);

  // The URI with the password masked, for logs and messages.
  std::string to_string() const;
};

// What a client or server does when its connection drops: reconnect with exponential backoff
// and jitter, trying the endpoints in turn (`connection`, then `alternates`).
struct ReconnectOptions {
  bool enabled = true;
  std::chrono::milliseconds initial_delay{100};
  std::chrono::milliseconds max_delay{5'000};
  double multiplier = 2.0;
  double jitter = 0.2;  // each delay is randomly stretched or shrunk by up to this fraction
};

// What publishing does while the broker blocks the connection (memory or disk alarm).
enum class BlockedPolicy {
  wait,  // hold requests until the broker unblocks (each still bound by its deadline)
  fail,  // fail new calls at once with resource_exhausted
};

// How replies find their way back to a client.
enum class ReplyMode {
  direct_reply_to,  // RabbitMQ's amq.rabbitmq.reply-to pseudo-queue: no queue to declare
  exclusive_queue,  // an exclusive, server-named reply queue, as the seed does
};

// Retrying a failed call, in gRPC's shape (gRPC's retryPolicy): up to `max_attempts` attempts,
// each a new request, the next one sent after a random wait (full jitter) when an attempt fails
// with one of `retryable_codes`. Only for calls marked CallOptions::idempotent: a server may
// have done the work of an attempt that failed. Every attempt shares the call's deadline: no
// attempt starts after it, and a wait that would end after it is not made (the call then ends
// at once with the last attempt's status). Not for one-way calls (Client::notify).
struct RetryPolicy {
  // Attempts in all, the first included: 1 (no retry) to 5 (gRPC's cap).
  int max_attempts = 1;
  // The wait before attempt n (n >= 2) is random in [0, min(initial_backoff *
  // backoff_multiplier^(n-2), max_backoff)]: the random part spreads the retries of many callers
  // hit by the same failure. initial_backoff > 0, max_backoff >= initial_backoff, multiplier >= 1.
  std::chrono::milliseconds initial_backoff{100};
  std::chrono::milliseconds max_backoff{1'000};
  double backoff_multiplier = 2.0;
  // The statuses that make another attempt worth it; not empty (when max_attempts > 1), and
  // neither ok nor cancelled (the caller or the client gave up: never retried). unavailable
  // covers a lost connection, no route to the queue, a server's unavailable reply.
  std::vector<StatusCode> retryable_codes{StatusCode::unavailable};
};

// Hedging (gRPC's hedgingPolicy): sending copies of a call before the first has failed, for
// tail latency. The first attempt goes at once; while no attempt has a final answer, another
// goes every `delay`, up to `max_attempts` in all. The first reply that is ok, or an error not in
// `non_fatal_codes`, ends the call: the other attempts are cancelled (their replies, when they
// still come, are dropped and counted in Client::Stats::hedge_losses). A non-fatal error sends
// the next attempt at once; when every attempt has failed that way, the call ends with the last
// one's status. Only for calls marked CallOptions::idempotent (every copy may be processed); the
// call's deadline bounds every attempt, and none starts after it. Not for one-way calls.
struct HedgingPolicy {
  // Attempts in all, the first included: 1 (no hedging) to 5 (gRPC's cap).
  int max_attempts = 1;
  // Between one attempt and the next, >= 0 (0 sends them all at once). Set it near the
  // method's p95 latency: later means fewer extra requests, sooner means shorter tails.
  std::chrono::milliseconds delay{100};
  // Errors that do not end the call while other attempts run or may still be sent (neither ok
  // nor cancelled). Empty: any error ends it.
  std::vector<StatusCode> non_fatal_codes;
};

struct ClientOptions {
  ConnectionOptions connection;
  std::vector<ConnectionOptions> alternates;  // other brokers (cluster nodes), tried in turn
  ReconnectOptions reconnect;
  BlockedPolicy when_blocked = BlockedPolicy::wait;
  // Publisher confirms for requests: a request the broker refuses (nack) fails at once.
  bool confirm_requests = false;
  ReplyMode reply_mode = ReplyMode::direct_reply_to;
  std::chrono::milliseconds default_timeout{30'000};  // for calls that set none
  // Requests carry the AMQP user_id of this connection's login, which RabbitMQ validates: a
  // server sees it as the verified caller (Request::caller) and may restrict methods to some
  // callers (Service::allow). Off: requests carry none, and the caller is unknown.
  bool send_user_id = true;
  // Fail fast when nobody serves: a call to a queue that does not exist, or that no server
  // consumes, fails at once with unavailable instead of waiting for its deadline (gRPC's
  // fail-fast). The client learns how many servers consume each queue it calls from passive
  // declarations on a side channel, asked again in the background every this often while the
  // queue is in use (four times as often while nobody serves it), so calls cost no round trip;
  // the first call to a queue waits for the first answer. Calls marked wait_for_ready go to a
  // queue nobody consumes (it keeps them for a server, within their deadline) and wait for a
  // queue that does not exist yet. One-way calls (notify) are not checked: a queue keeps them.
  // Zero turns the check off: calls go out blind, as tutorial 6's do.
  std::chrono::milliseconds server_check_interval{1'000};
  // Run around every call, in order (amqprpc/interceptor.hpp). With a retry or hedging policy,
  // around every attempt.
  std::vector<std::shared_ptr<ClientInterceptor>> interceptors;
  Logger logger;
  // Defaults for the calls marked CallOptions::idempotent that set no policy of their own: retry
  // or hedging (at most one of them may have max_attempts > 1: Client::connect refuses both with
  // invalid_argument, as gRPC gives a method one or the other). Default: one attempt.
  RetryPolicy retry;
  HedgingPolicy hedging;
};

struct CallOptions {
  // The method of the queue's service to call (header x-rpc-method); empty: the service's
  // default handler, which is what tutorial-6 clients reach.
  std::string method;
  std::optional<std::chrono::milliseconds> timeout;  // default: ClientOptions::default_timeout
  // An absolute deadline (gRPC's set_deadline): the call ends at the earlier of this and
  // `timeout`; one already passed fails the call with deadline_exceeded, unsent.
  // Context::call_options sets it to the deadline of the request being served.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  Headers headers;
  std::string content_type;
  std::optional<std::uint8_t> priority;  // for queues declared with x-max-priority
  // Wait for the connection and for a server (gRPC's wait-for-ready): a call made while the
  // client is (re)connecting is held and sent once connected, and a call to a queue nobody
  // serves (ClientOptions::server_check_interval) is sent for a server to take when one comes,
  // all within its deadline, instead of failing at once with unavailable. Without it calls
  // fail fast.
  bool wait_for_ready = false;
  // Safe to send twice: if the connection drops after the call was sent and before its reply,
  // the call is sent again after reconnecting (within its deadline) instead of failing with
  // unavailable. Whether a call made while disconnected waits is wait_for_ready's business.
  // Only such calls are retried or hedged (retry, hedging below, and ClientOptions' defaults).
  bool idempotent = false;
  // This call's own policy, replacing both of ClientOptions' defaults (so `retry =
  // RetryPolicy{}` makes one attempt, whatever the client's hedging). Setting both refuses the
  // call with invalid_argument; so does a policy that is not valid (see RetryPolicy), even on a
  // call that is not idempotent, where a valid one is ignored.
  std::optional<RetryPolicy> retry;
  std::optional<HedgingPolicy> hedging;
  // Cancels the call when its source is asked to stop: the call completes at once with status
  // cancelled; a reply that still comes is dropped and counted as late. One source may cancel
  // many calls.
  std::stop_token cancel;
  // A streaming call (Client::stream): how many items the server may send ahead of the reader
  // (its credit; returned as the reader takes items). What the client, the broker and the
  // server may hold of this stream at once. 1 to 4096.
  std::uint32_t stream_window = 64;
  // The span this call is part of: its request's traceparent names a new span, child of this
  // one. Unset: the call starts a new trace. Context::call_options sets it to the span of the
  // request being served.
  std::optional<TraceContext> trace;
};

enum class QueueType { classic, quorum };

struct ServerOptions {
  ConnectionOptions connection;
  std::vector<ConnectionOptions> alternates;  // other brokers (cluster nodes), tried in turn
  ReconnectOptions reconnect;
  std::string queue = "rpc_queue";
  bool durable = false;  // the seed declares a plain, non-durable queue
  // quorum: durable and replicated across a cluster's nodes (implies durable).
  QueueType queue_type = QueueType::classic;
  // Publisher confirms for replies: a request is acked only once the broker confirmed its reply.
  bool confirm_replies = false;
  std::uint16_t prefetch = 16;  // unacked requests this server holds at once
  // Handler slots and threads: at most this many handlers run at once, on `workers` threads
  // and on the connection's I/O thread, which runs a request itself when a slot is free (no
  // thread hand-off: docs/WORKER_POOL.md); while a handler there runs longer than 5 ms, a
  // worker takes over the connection. 0 runs handlers on the I/O thread alone: for handlers
  // that never block (a slow one would stall this server's connection; no streams).
  std::size_t workers = 1;
  // Larger requests get a resource_exhausted error reply instead of reaching the handler.
  std::size_t max_request_size = 4u * 1024 * 1024;
  // A request delivered this many times without being answered (its server crashed or lost the
  // connection mid-handler each time) is moved to the dead-letter queue, and its caller gets an
  // internal error, instead of crashing servers forever. 0 turns this off.
  int max_attempts = 5;
  // default: "<queue>.dead-letter" (a name derived to fit when that is too long), declared at
  // start
  std::string dead_letter_queue;
  // How long stop() waits for running handlers, asynchronous ones included (gRPC's Shutdown
  // deadline). Past it, stop cancels their contexts (Context::cancellation), gives them a
  // moment to answer, then closes the connection, so the broker hands the requests still
  // unanswered to another server, and returns; such a handler's thread ends when the handler
  // returns, and its reply is dropped. (With workers = 0 a synchronous handler runs on the I/O
  // thread, and stop waits for it.)
  std::chrono::milliseconds stop_grace{30'000};
  // Run around every request served, in order (amqprpc/interceptor.hpp); not around the
  // reserved methods (describe, health), which the framework answers.
  std::vector<std::shared_ptr<ServerInterceptor>> interceptors;
  // Take part in gathers (one request to every server instance of a service; docs/PROTOCOL.md,
  // "Gather"): for each service, an instance queue of this server's own, bound to the
  // service's "<queue>.gather" exchange, and a consumer on "<queue>.roster" by which clients
  // count the instances. false: none of that; gathers neither count nor reach this server.
  bool gather = true;
  // Requests from the instance queue (gathers) held unacked at once, apart from `prefetch`:
  // a burst of gathers cannot crowd out normal requests, nor normal requests the gathers.
  std::uint16_t gather_prefetch = 16;
  // Who this server is in its replies to gathers (header x-rpc-instance): a name unique among
  // the servers of a service, at most 255 bytes. Empty: "<host name>:<pid>:<6 random hex
  // digits>" (Server::instance() says which).
  std::string instance;
  Logger logger;
};

}  // namespace amqprpc
