// The wire contract of docs/PROTOCOL.md as code: how a request and a reply look as AMQP
// messages, in both directions. Client and server use these and nothing else to read or write
// the contract. Success replies are the body alone, as the seed expects; errors add headers.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "amqp/message.hpp"
#include "amqprpc/message.hpp"
#include "amqprpc/options.hpp"
#include "uuid.hpp"

namespace amqprpc::detail::wire {

inline constexpr std::string_view kDirectReplyTo = "amq.rabbitmq.reply-to";
// Error replies: the status code's wire name, and its message (also the body, as text).
inline constexpr std::string_view kStatusHeader = "x-rpc-status";
inline constexpr std::string_view kMessageHeader = "x-rpc-message";
// Requests: the caller's absolute deadline, milliseconds since the Unix epoch.
inline constexpr std::string_view kDeadlineHeader = "x-rpc-deadline";
// Requests: how many times a server has been handed this request (poison-message accounting).
inline constexpr std::string_view kAttemptsHeader = "x-rpc-attempts";
// Set by quorum queues on redelivered messages: how many times it was returned.
inline constexpr std::string_view kDeliveryCountHeader = "x-delivery-count";
// Requests: how many attempts of the same call a retry or hedging policy sent before this one
// (gRPC's grpc-previous-rpc-attempts); absent on a call's first attempt.
inline constexpr std::string_view kPreviousAttemptsHeader = "x-rpc-previous-attempts";
// Requests: the method of the queue's service to call; absent: the default handler.
inline constexpr std::string_view kMethodHeader = "x-rpc-method";
// Requests: "1" marks a one-way call (Client::notify): no reply_to, nothing sent back.
inline constexpr std::string_view kOnewayHeader = "x-rpc-oneway";
// Error replies carrying a detail: its type; the body is the detail, in the reply's content type.
inline constexpr std::string_view kDetailTypeHeader = "x-rpc-detail-type";
// A server's own copy of a request (see own_copy): the verified caller of the original, since
// the copy's user_id is the server's. Trusted only on a copy a server published.
inline constexpr std::string_view kCallerHeader = "x-rpc-caller";
// Requests and replies: W3C Trace Context (a request's names the caller's span, a reply's the
// server's span that answered).
inline constexpr std::string_view kTraceparentHeader = "traceparent";
inline constexpr std::string_view kTracestateHeader = "tracestate";
// Dead-lettered requests: why.
inline constexpr std::string_view kDeadReasonHeader = "x-rpc-dead-reason";
// Replies to a request that reached one server instance through its instance queue (a gather):
// which instance answered (ServerOptions::instance). Replies to normal calls do not carry it.
inline constexpr std::string_view kInstanceHeader = "x-rpc-instance";
// Streaming replies (docs/PROTOCOL.md, "Streaming replies"). A request that accepts a stream
// carries the items the server may send before it hears from the client again (its credit);
// each item carries "item" in x-rpc-stream, its number (1, 2, ...) in x-rpc-stream-seq and the
// queue that reaches the producing server in x-rpc-stream-to; the last message carries "end",
// and the stream's status like any reply. The client sends more credit (x-rpc-stream-control
// "credit", with x-rpc-stream-credit) or a cancel ("cancel") to that queue, with the stream's
// correlation_id.
inline constexpr std::string_view kStreamCreditHeader = "x-rpc-stream-credit";
inline constexpr std::string_view kStreamHeader = "x-rpc-stream";
inline constexpr std::string_view kStreamSeqHeader = "x-rpc-stream-seq";
inline constexpr std::string_view kStreamToHeader = "x-rpc-stream-to";
inline constexpr std::string_view kStreamControlHeader = "x-rpc-stream-control";
// The most credit a client grants at once, and a server honours: what either side may buffer.
inline constexpr std::uint32_t kMaxStreamCredit = 4096;
// The roster queue's x-expires: once no server has consumed it (nor declared it) for this long,
// the broker deletes it. Every server declares it with this same value (a different one is
// refused, 406): part of the contract.
inline constexpr std::int64_t kRosterExpiresMs = 600'000;

// Milliseconds since the Unix epoch, the unit of x-rpc-deadline.
std::int64_t epoch_ms(std::chrono::system_clock::time_point t = std::chrono::system_clock::now());

// A non-negative decimal integer header; nullopt when absent or not such a number.
std::optional<std::int64_t> int_header(const Headers& headers, std::string_view name);

// Which delivery of this request this is (1 = the first): the count a server wrote into its
// own copy (x-rpc-attempts, read only when `attempts_trusted`: the copy's broker-validated
// user_id is a server's), plus the deliveries since, from the quorum queue's x-delivery-count
// (when `quorum`: elsewhere a client could have set it) or the broker's redelivered flag.
std::int64_t attempt_of(const Headers& headers, bool redelivered, bool quorum,
                        bool attempts_trusted);

// The verified caller of a request: the user_id the broker validated, or, on a copy a server
// published (`from_server`: its user_id is a server's), the original's caller it carries in
// x-rpc-caller. Empty: unknown (the caller set no user_id).
std::string caller_of(const amqp::Properties& props, bool from_server);

// Whether the request's caller has given up (its x-rpc-deadline is before `now_ms`).
bool expired(const Headers& headers, std::int64_t now_ms);
// The same for a deadline read already (int_header of kDeadlineHeader); none never passes.
bool expired(std::optional<std::int64_t> deadline_ms, std::int64_t now_ms);

// What the broker takes on a connection.
struct Limits {
  int frame_max = 131072;
  std::size_t max_message_size = 16u * 1024 * 1024;
};

// Checks what rabbitmq-c and the broker would refuse only after part of the message is on the
// wire (which breaks the connection or closes the channel): short strings over 255 bytes, a
// header table too large for one frame, a body over the broker's max_message_size. `what`
// names the message in the error.
Status validate_outgoing(const amqp::PropertiesView& p, std::size_t body_size, const Limits& limits,
                         std::string_view what);

// A name derived from a service's queue name: "<queue><suffix>", or, when that would exceed
// AMQP's 255 bytes, the queue name cut (at a UTF-8 character boundary) and marked with a hash
// of the whole name: "<prefix>~<16 hex digits of FNV-1a 64><suffix>". Servers and clients in
// any language derive the same name, and two long queue names that share a prefix do not
// collide. `suffix` is short (a few bytes).
std::string derived_name(std::string_view queue, std::string_view suffix);

// The default dead-letter queue of a request queue: derived_name(queue, ".dead-letter").
std::string dead_letter_queue_for(std::string_view queue);

// Gather (docs/PROTOCOL.md): the fanout exchange every participating server instance of the
// service on `queue` binds its instance queue to, derived_name(queue, ".gather"); a gather
// request is published to it.
std::string gather_exchange_for(std::string_view queue);
// The roster queue of the service on `queue`, derived_name(queue, ".roster"): each
// participating server instance holds one consumer on it, so its consumer count (a passive
// queue.declare) is how many instances a gather reaches. No message is meant for it.
std::string roster_queue_for(std::string_view queue);
// The instance queue one server uses, on one connection, for the service on `queue`:
// derived_name(queue, ".instance." + id), `id` being random per connection (16 hex digits).
// Named by the server, not the broker: a user whose permissions cover the service's names
// ("^rpc_queue.*") may declare it, where a broker-named amq.gen-... queue would be refused.
std::string instance_queue_for(std::string_view queue, std::string_view id);
// Where the clients of one server's streams on the service on `queue` send credit and cancels
// (x-rpc-stream-to): derived_name(queue, ".control." + id), `id` random per connection.
std::string control_queue_for(std::string_view queue, std::string_view id);

// ---- requests ----

// The size of a version 00 traceparent, and that of `trace` (valid) written into `out`.
inline constexpr std::size_t kTraceparentSize = 55;
void write_traceparent(const TraceContext& trace, std::span<char, kTraceparentSize> out);

// The properties of a request: the caller's options (method, headers, ...), where to reply
// (empty for a one-way call, which is marked so), the deadline both as the message's
// expiration (`time_left`, at least 1 ms) and as x-rpc-deadline, and the call's span as
// traceparent (and tracestate) when `trace` is valid.
//
// Made for one publish: it views the call's strings and writes the headers it adds into
// buffers of its own, so that publishing a request copies and allocates nothing. It must not
// outlive `options`, `correlation_id`, `reply_to` and `trace`, and it stays where it is made.
class OutgoingRequest {
 public:
  OutgoingRequest(const CallOptions& options, std::string_view correlation_id,
                  std::string_view reply_to, std::chrono::milliseconds time_left,
                  bool oneway = false, const TraceContext& trace = {});
  // Options made for the call alone would be gone before the publish.
  OutgoingRequest(const CallOptions&& options, std::string_view, std::string_view,
                  std::chrono::milliseconds, bool = false, const TraceContext& = {}) = delete;
  OutgoingRequest(const OutgoingRequest&) = delete;
  OutgoingRequest& operator=(const OutgoingRequest&) = delete;

  // The publishing user (the broker checks it against the connection's login).
  void set_user_id(std::string_view user) { props_.user_id = user; }
  void set_user_id(std::string&&) = delete;  // a string made for the call would be gone
  // One more header, replacing the caller's of that name; `value` must outlive this.
  void add_header(std::string_view key, std::string_view value);
  void add_header(std::string_view key, std::string&& value) = delete;
  const amqp::PropertiesView& props() const { return props_; }

 private:
  // x-rpc-deadline, x-rpc-method, x-rpc-oneway, traceparent, tracestate, and a stream's credit.
  static constexpr std::size_t kAdded = 6;
  std::array<amqp::HeaderView, kAdded> added_{};
  std::size_t count_ = 0;
  std::array<char, 20> expiration_{};  // the decimal digits of an int64
  std::array<char, 20> deadline_{};
  std::array<char, kTraceparentSize> traceparent_{};
  amqp::PropertiesView props_;
};

// Whether a request is a one-way call.
bool is_oneway(const Headers& headers);

// What a handler sees of a request that arrived on `queue` (moved out of the delivery), from
// the verified `caller`, in `context`.
Request decode_request(amqp::Delivery&& delivery, const std::string& queue, std::string caller = {},
                       Context context = {});

// ---- trace context (requests and replies) ----

// The W3C trace context a message carries (traceparent, with its tracestate); nullopt when it
// carries none, or one that is not well-formed (TraceContext::parse).
std::optional<TraceContext> trace_of(const Headers& headers);
// Writes `trace` as traceparent (and tracestate, when it has one).
void put_trace(Headers& headers, const TraceContext& trace);
// A new span: a child of `parent` (its trace id, sampled flag and tracestate) with a span id of
// its own, or, without a parent, the root span of a new trace.
TraceContext new_span(const TraceContext* parent, UuidGenerator& ids);
// The same from a parent given up (its strings are moved, not copied). Its span id is the
// caller's to keep first, if wanted.
TraceContext new_span(std::optional<TraceContext>&& parent, UuidGenerator& ids);

// ---- replies ----

// The properties and body of the reply a server sends for `reply` to a request.
void encode_reply(Reply&& reply, std::string_view correlation_id, amqp::Properties& props,
                  std::string& body);

// What a client makes of a reply message.
Reply decode_reply(amqp::Properties&& props, std::string&& body);

}  // namespace amqprpc::detail::wire
