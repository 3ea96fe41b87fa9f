#include "amqprpc/server.hpp"

#include <unistd.h>

#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "amqprpc/interceptor.hpp"
#include "framework/context_state.hpp"
#include "framework/reserved.hpp"
#include "io/confirm_tracker.hpp"
#include "io/io_loop.hpp"
#include "io/outbox.hpp"
#include "io/worker_pool.hpp"
#include "log.hpp"
#include "metrics_recorder.hpp"
#include "protocol/wire.hpp"
#include "server/in_hand.hpp"
#include "server/stream.hpp"
#include "server/triage.hpp"
#include "uuid.hpp"

namespace amqprpc {

namespace amqp = detail::amqp;

namespace {

// A request on its way to a handler.
struct Job {
  // On the heap: a job is moved from the read to the pool's queue to the thread that runs it,
  // and a Delivery (ten strings and a map) costs more to move than to allocate once.
  std::unique_ptr<amqp::Delivery> delivery;
  std::size_t route = 0;         // which service
  std::uint64_t generation = 0;  // the connection it came on: tags die with their connection
  std::int64_t attempt = 1;      // which delivery of the request this is
  std::string caller = {};       // verified (triage): the broker-validated user_id
  // Came through this server's instance queue (a gather): its reply names the instance, and it
  // is never handed to another server (see Core::not_started).
  bool gather = false;
  std::optional<std::int64_t> deadline_ms = {};  // the request's x-rpc-deadline, read by triage
};

// What a request's end asks of the I/O thread.
enum class Settle {
  reply_then_ack,  // publish the reply, then ack (once the reply is confirmed, if confirming)
  reply_only,      // publish the reply; the request is settled otherwise
  ack,             // done without a reply (expired)
  requeue,         // never started: back to the broker for another server
};

struct Outgoing {
  Settle settle = Settle::reply_then_ack;
  std::uint64_t delivery_tag = 0;
  std::uint64_t generation = 0;
  std::string reply_to;
  amqp::Properties props;  // the reply's; for a requeue, the request's
  std::string body;        // the reply's; for a requeue, the request's
  std::size_t route = 0;   // requeue: the request's service (its queue)
  std::int64_t attempt = 1;
  std::string caller = {};  // requeue: the request's verified caller, for its copy
  // A stream's item to a reply queue: the broker returns it when that queue is gone
  // (on_return).
  bool mandatory = false;
};

Outgoing requeue_of(Job&& job) {
  return Outgoing{Settle::requeue,
                  job.delivery->delivery_tag,
                  job.generation,
                  {},
                  std::move(job.delivery->props),
                  std::move(job.delivery->body),
                  job.route,
                  job.attempt,
                  std::move(job.caller)};
}

std::vector<std::string> users(const std::vector<ConnectionOptions>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints) out.push_back(e.user);
  return out;
}

// A name for this server among the instances of its services, when the application gave none:
// the host and the process say where to look, the random part tells apart two servers of one
// process (or a process that restarted with the same pid).
std::string default_instance() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
    std::snprintf(host, sizeof host, "%s", "localhost");
  }
  char random[7];
  std::snprintf(random, sizeof random, "%06x",
                static_cast<unsigned>(std::random_device{}() & 0xFFFFFFu));
  // A host name may be long (up to 64 bytes on Linux, more elsewhere): kept within 200 bytes, so
  // the whole name stays far inside the 255 a header value is checked against.
  std::string out(host, std::min<std::size_t>(std::strlen(host), 200));
  return out + ":" + std::to_string(::getpid()) + ":" + random;
}

ServerOptions with_instance(ServerOptions o) {
  if (o.instance.empty()) o.instance = default_instance();
  return o;
}

// What handlers touch, shared by the server, its worker threads and the requests in hand: a
// thread that a bounded stop leaves behind (its handler would not return), or an asynchronous
// handler answering late, keeps this alive, and finds the outbox closed when it answers.
struct Core : std::enable_shared_from_this<Core> {
  Core(std::vector<Service> s, std::function<void()> wake,
       std::vector<std::shared_ptr<ServerInterceptor>> chain, Logger log, std::string name)
      : services(std::move(s)),
        out(wake),
        in_hand(wake),
        interceptors(std::move(chain)),
        logger(std::move(log)),
        instance(std::move(name)) {}

  // On a worker thread, or on the I/O thread when handlers run inline.
  void handle(Job& job);
  // Once per request, from the thread that answered it (see detail::ServerCall::answer).
  void finish(detail::ServerCall& call, Reply&& reply);
  // What becomes of a request no handler started when the server stops. A normal one goes back
  // to its queue for another server. A gather cannot: its instance queue dies with this
  // connection, and a copy in the service's queue would have another server answer it as a
  // normal call. So it is answered unavailable, naming this instance: the gathering client
  // sees this instance answer (with an error) instead of waiting for it until its deadline.
  Outgoing not_started(Job&& job);
  // A streaming method's request: runs its handler with a writer whose items go to the
  // caller as replies, paced by the caller's credit, then answers with the handler's status.
  void run_stream(const std::shared_ptr<detail::ServerCall>& call, const StreamHandler& handler,
                  std::size_t route);
  // The stream a client's credit or cancel names (nullptr: over, or never here).
  std::shared_ptr<detail::ServerStream> stream(const std::string& correlation_id) {
    detail::MutexLock lock(streams_mutex);
    auto it = streams.find(correlation_id);
    return it == streams.end() ? nullptr : it->second.lock();
  }
  // The streams whose writer has waited for credit since `before` or longer, by correlation id.
  std::vector<std::pair<std::string, std::shared_ptr<detail::ServerStream>>> stalled_streams(
      std::chrono::steady_clock::time_point before) {
    std::vector<std::pair<std::string, std::shared_ptr<detail::ServerStream>>> stalled;
    detail::MutexLock lock(streams_mutex);
    for (const auto& [id, weak] : streams) {
      auto s = weak.lock();
      if (!s) continue;
      if (auto since = s->waiting_since(); since && *since <= before) stalled.emplace_back(id, s);
    }
    return stalled;
  }
  // The connection went: its streams' items can no longer be numbered for their callers (the
  // broker hands the requests to a server again), so their producers stop.
  void stop_streams() {
    detail::MutexLock lock(streams_mutex);
    for (auto& [id, weak] : streams) {
      if (auto s = weak.lock()) {
        s->stop({StatusCode::unavailable, "the stream broke: its server lost its connection"});
      }
    }
  }
  // Where the clients of service `route`'s streams send credit: its control queue on the
  // current connection ("" while there is none).
  void set_control_queue(std::size_t route, std::string queue) {
    detail::MutexLock lock(control_queues_mutex);
    if (control_queues.size() <= route) control_queues.resize(services.size());
    control_queues[route] = std::move(queue);
  }
  std::string control_queue(std::size_t route) {
    detail::MutexLock lock(control_queues_mutex);
    return route < control_queues.size() ? control_queues[route] : std::string();
  }

  // The error reply to a gather that this instance will not serve because it is stopping.
  Reply stopping_reply() const {
    return Reply::error(StatusCode::unavailable, "instance " + instance + " is stopping");
  }

  void count_reply(const Status& status) {
    if (!status.ok()) errors.count(status.code());
    (status.ok() ? replied_ok : replied_error).fetch_add(1, std::memory_order_relaxed);
  }

  static const Service::Method* method_for(const Service& service, std::string_view method) {
    if (method.empty()) return service.default_method() ? &service.default_method() : nullptr;
    return service.find(method);
  }

  static std::string unimplemented_message(const Service& service, std::string_view method) {
    if (method.empty()) {
      return "service '" + service.name() + "' on '" + service.queue() +
             "' has no default handler: name a method (header x-rpc-method)";
    }
    return "service '" + service.name() + "' on '" + service.queue() + "' has no method '" +
           std::string(method) + "'";
  }

  // The context of a request: the caller's deadline on this machine's clock, its trace (a
  // server span of the caller's trace, or a new trace), the verified caller.
  // `now_ms` and `now`: the time on both clocks, read once per request.
  std::shared_ptr<detail::ContextState> context_of(const Headers& headers,
                                                   std::optional<std::int64_t> deadline_ms,
                                                   std::string caller, std::int64_t now_ms,
                                                   std::chrono::steady_clock::time_point now) {
    auto state = std::make_shared<detail::ContextState>();
    if (deadline_ms) {
      // Clamped like a client's timeouts: a far-off (or forged) deadline must not overflow.
      const auto left = std::min<std::int64_t>(*deadline_ms - now_ms, kMaxDeadlineMs);
      state->deadline = now + std::chrono::milliseconds(left);
    }
    std::optional<TraceContext> parent = detail::wire::trace_of(headers);
    if (parent) state->parent_span_id = std::exchange(parent->span_id, {});
    {
      detail::MutexLock lock(ids_mutex);
      state->trace = detail::wire::new_span(std::move(parent), ids);
    }
    state->caller = std::move(caller);
    return state;
  }

  static constexpr std::int64_t kMaxDeadlineMs = 30LL * 24 * 3600 * 1000;  // 30 days

  const std::vector<Service> services;
  detail::Outbox<Outgoing> out;  // finished requests, to the I/O thread
  detail::InHand in_hand;        // requests given to handlers, not yet answered
  const std::vector<std::shared_ptr<ServerInterceptor>> interceptors;
  const Logger logger;
  const std::string instance;  // ServerOptions::instance, made up when empty
  detail::LatencyRecorder handler_latency;
  detail::ErrorCounter errors;
  std::atomic<std::uint64_t> replied_ok{0}, replied_error{0}, expired{0}, oneway{0},
      unimplemented{0}, denied{0};
  detail::Mutex ids_mutex;
  detail::UuidGenerator ids GUARDED_BY(ids_mutex);  // span and trace ids
  detail::Mutex streams_mutex;
  std::unordered_map<std::string, std::weak_ptr<detail::ServerStream>> streams
      GUARDED_BY(streams_mutex);  // by correlation id
  detail::Mutex control_queues_mutex;
  std::vector<std::string> control_queues GUARDED_BY(control_queues_mutex);  // by route
  std::atomic<std::uint64_t> stream_items{0};
  std::atomic<std::uint64_t> live_streams{0};  // streams whose handler runs now
  std::atomic<std::uint64_t> stream_probes{0}, streams_orphaned{0};
};

}  // namespace

namespace detail {

// One request from the moment a handler may see it until it is answered: what the handler sees
// (the request, its context), what answering needs (where the reply goes, the delivery to ack),
// and the interceptors' per-call state. Owned by the Responders of an asynchronous handler (and
// by the server while it runs the handler); the last owner answers a request nobody answered.
class ServerCall {
 public:
  // The request is decoded from its delivery right into the call (never moved on).
  ServerCall(std::shared_ptr<Core> core, amqp::Delivery&& delivery, const std::string& queue,
             std::string caller, std::shared_ptr<ContextState> context, std::uint64_t generation,
             bool gather, std::chrono::steady_clock::time_point started)
      : core_(std::move(core)),
        delivery_tag_(delivery.delivery_tag),
        request_(
            wire::decode_request(std::move(delivery), queue, std::move(caller), Context(context))),
        context_(std::move(context)),
        generation_(generation),
        gather_(gather),
        started_(started) {}

  ~ServerCall() {
    if (!answered()) {
      answer(Reply::error(StatusCode::internal,
                          "the handler dropped its Responder without answering"));
    }
  }
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  // The first answer wins; from any thread.
  bool answer(Reply reply) {
    if (answered_.exchange(true, std::memory_order_acq_rel)) return false;
    core_->finish(*this, std::move(reply));
    // Answered: a Responder a handler keeps (in state its own closure holds) no longer keeps the
    // server alive through this call.
    core_.reset();
    return true;
  }
  bool answered() const { return answered_.load(std::memory_order_acquire); }
  const Request& request() const { return request_; }

  // Core's to read and fill in (the handle() that made this call, then finish()).
  std::shared_ptr<Core> core_;  // until answered
  const std::uint64_t delivery_tag_;
  const Request request_;
  const std::shared_ptr<ContextState> context_;
  const std::uint64_t generation_;
  const bool gather_;  // through the instance queue: the reply names this instance
  const std::chrono::steady_clock::time_point started_;
  InHand::Handle in_hand_;
  std::vector<std::any> interceptor_state_;  // one slot per interceptor
  std::size_t interceptors_ran_ = 0;         // whose after-hooks run
  bool handler_started_ = false;
  bool streaming_ = false;  // the end of a stream: its reply says so
  std::atomic<bool> answered_{false};
};

}  // namespace detail

namespace {

void Core::handle(Job& job) {
  amqp::Delivery& d = *job.delivery;
  // Both clocks read side by side: the caller's deadline (epoch ms) becomes a steady time.
  const std::int64_t now_ms = detail::wire::epoch_ms();
  const auto now = std::chrono::steady_clock::now();
  if (detail::wire::expired(job.deadline_ms, now_ms)) {
    // The caller has given up while this waited for a worker: computing the answer would
    // only waste it.
    expired.fetch_add(1, std::memory_order_relaxed);
    out.push(Outgoing{Settle::ack, d.delivery_tag, job.generation, {}, {}, {}});
    return;
  }
  const Service& service = services[job.route];
  auto context = context_of(d.props.headers, job.deadline_ms, job.caller, now_ms, now);
  auto call = std::make_shared<detail::ServerCall>(shared_from_this(), std::move(d),
                                                   service.queue(), std::move(job.caller), context,
                                                   job.generation, job.gather, now);
  call->in_hand_ = in_hand.add(context->deadline, context->stop);
  const Request& request = call->request();

  if (!interceptors.empty()) {
    call->interceptor_state_.resize(interceptors.size());
    for (std::size_t i = 0; i < interceptors.size(); ++i) {
      call->interceptors_ran_ = i + 1;
      Status refused;
      if (auto threw = detail::thrown_by(
              [&] {
                refused = interceptors[i]->before_handler(request, call->interceptor_state_[i]);
              },
              "a server interceptor threw")) {
        refused = Status{StatusCode::internal, std::move(*threw)};
      }
      if (!refused.ok()) {
        call->answer(Reply{std::move(refused), {}, {}, {}});
        return;
      }
    }
  }
  if (Status refused = service.authorize(request.method, request.caller); !refused.ok()) {
    denied.fetch_add(1, std::memory_order_relaxed);
    call->answer(Reply{std::move(refused), {}, {}, {}});
    return;
  }
  const Service::Method* method = method_for(service, request.method);
  if (method == nullptr) {
    unimplemented.fetch_add(1, std::memory_order_relaxed);
    call->answer(
        Reply::error(StatusCode::unimplemented, unimplemented_message(service, request.method)));
    return;
  }
  call->handler_started_ = true;
  // An exception answers the request, unless the handler answered it already.
  try {
    if (method->handler) {
      call->answer(method->handler(request));
    } else if (method->stream_handler) {
      run_stream(call, method->stream_handler, job.route);
    } else {
      method->async_handler(request, Responder(call));
    }
  } catch (const RpcError& e) {
    call->answer(Reply{e.status(), {}, {}, {}});
  } catch (const std::exception& e) {
    call->answer(Reply::error(StatusCode::internal, e.what()));
  } catch (...) {
    call->answer(Reply::error(StatusCode::internal, "the handler threw a non-standard exception"));
  }
}

void Core::finish(detail::ServerCall& call, Reply&& reply) {
  const auto latency = std::chrono::steady_clock::now() - call.started_;
  if (call.handler_started_) handler_latency.record(latency);
  const Request& req = call.request_;
  const detail::ContextState& context = *call.context_;
  // The reply leg carries the server span (always a valid one: context_of made it): the
  // caller sees which span answered it.
  detail::wire::put_trace(reply.headers, context.trace);
  for (std::size_t i = call.interceptors_ran_; i-- > 0;) {
    if (auto threw = detail::thrown_by(
            [&] {
              interceptors[i]->after_handler(req, reply, latency, call.interceptor_state_[i]);
            },
            "a server interceptor's after_handler threw")) {
      detail::log(logger, LogLevel::error, *threw);
    }
  }
  if (req.oneway) {
    // Nothing goes back: the caller asked for none. A failure is only logged.
    oneway.fetch_add(1, std::memory_order_relaxed);
    if (!reply.status.ok()) {
      errors.count(reply.status.code());
      detail::log(logger, LogLevel::warning,
                  "one-way call of '" + req.method + "' on '" + req.queue +
                      "' failed: " + reply.status.to_string());
    }
    out.push(Outgoing{Settle::ack, call.delivery_tag_, call.generation_, {}, {}, {}});
  } else {
    count_reply(reply.status);
    Outgoing reply_out{
        Settle::reply_then_ack, call.delivery_tag_, call.generation_, req.reply_to, {}, {}};
    if (call.streaming_)
      reply.headers.insert_or_assign(std::string(detail::wire::kStreamHeader), "end");
    detail::wire::encode_reply(std::move(reply), req.correlation_id, reply_out.props,
                               reply_out.body);
    if (call.gather_) {
      // The framework's to set: a handler's own x-rpc-instance cannot pass for another instance.
      reply_out.props.headers.insert_or_assign(std::string(detail::wire::kInstanceHeader),
                                               instance);
    }
    out.push(std::move(reply_out));
  }
  // Out of hand only once its reply is in the outbox: a stop that sees nothing in hand may
  // close the outbox at once.
  in_hand.remove(call.in_hand_);
}

Outgoing Core::not_started(Job&& job) {
  if (!job.gather) return requeue_of(std::move(job));
  amqp::Delivery& d = *job.delivery;
  Outgoing out{Settle::ack, d.delivery_tag, job.generation, {}, {}, {}};
  if (detail::wire::expired(job.deadline_ms, detail::wire::epoch_ms())) {
    expired.fetch_add(1, std::memory_order_relaxed);
    return out;
  }
  if (detail::wire::is_oneway(d.props.headers)) return out;  // nobody to tell
  Reply reply = stopping_reply();
  count_reply(reply.status);
  out.settle = Settle::reply_then_ack;
  out.reply_to = std::move(d.props.reply_to);
  detail::wire::encode_reply(std::move(reply), d.props.correlation_id, out.props, out.body);
  out.props.headers.insert_or_assign(std::string(detail::wire::kInstanceHeader), instance);
  return out;
}

void Core::run_stream(const std::shared_ptr<detail::ServerCall>& call, const StreamHandler& handler,
                      std::size_t route) {
  const Request& request = call->request();
  const Service& service = services[route];
  const auto credit = detail::wire::int_header(request.headers, detail::wire::kStreamCreditHeader);
  if (!credit || *credit <= 0 || request.reply_to.empty() || request.oneway) {
    call->answer(Reply::error(StatusCode::failed_precondition,
                              "method '" + request.method + "' of '" + service.name() +
                                  "' streams its reply: call it with Client::stream (the request "
                                  "carries no x-rpc-stream-credit)"));
    return;
  }
  std::string stream_to = control_queue(route);
  if (stream_to.empty()) {
    call->answer(Reply::error(StatusCode::unavailable,
                              "this server has no queue to take the stream's credit on now"));
    return;
  }
  const auto max_credit = detail::wire::kMaxStreamCredit;
  auto stream = std::make_shared<detail::ServerStream>(
      request.caller, request.reply_to,
      static_cast<std::uint32_t>(std::min<std::int64_t>(*credit, max_credit)), max_credit);
  stream->stop_token = call->context_->stop.get_token();
  // An item: a reply to the caller, numbered, naming the queue its credit goes to. It is not
  // acked (the request is, with the end of the stream).
  stream->send = [this, call, stream_to = std::move(stream_to)](Reply&& item, std::uint64_t seq) {
    const Request& req = call->request();
    Outgoing sent{Settle::reply_only, call->delivery_tag_, call->generation_, req.reply_to, {}, {}};
    // Not to a direct reply-to address: RabbitMQ returns a mandatory message published there
    // even while its caller is alive (and drops one whose caller is gone).
    sent.mandatory = !req.reply_to.starts_with(detail::wire::kDirectReplyTo);
    item.status = Status{};
    item.headers.insert_or_assign(std::string(detail::wire::kStreamHeader), "item");
    item.headers.insert_or_assign(std::string(detail::wire::kStreamSeqHeader), std::to_string(seq));
    item.headers.insert_or_assign(std::string(detail::wire::kStreamToHeader), stream_to);
    detail::wire::encode_reply(std::move(item), req.correlation_id, sent.props, sent.body);
    if (!out.push(sent)) return false;
    stream_items.fetch_add(1, std::memory_order_relaxed);
    return true;
  };
  {
    detail::MutexLock lock(streams_mutex);
    streams[request.correlation_id] = stream;
  }
  live_streams.fetch_add(1, std::memory_order_relaxed);
  call->streaming_ = true;
  struct Unregister {
    Core& core;
    const std::string& id;
    const detail::ServerStream* mine;
    ~Unregister() {
      // Only its own entry: a copy of the request delivered again (after a lost connection)
      // may have registered its stream under the same id meanwhile.
      detail::MutexLock lock(core.streams_mutex);
      auto it = core.streams.find(id);
      if (it != core.streams.end() && it->second.lock().get() == mine) core.streams.erase(it);
      core.live_streams.fetch_sub(1, std::memory_order_relaxed);
    }
  } unregister{*this, request.correlation_id, stream.get()};
  StreamWriter writer(stream);
  Status end = handler(request, writer);
  const auto& deadline = call->context_->deadline;
  const bool late = deadline && std::chrono::steady_clock::now() >= *deadline;
  if (auto why = stream->cut_short(
          late
              ? Status{StatusCode::deadline_exceeded, "the stream's deadline passed"}
              : Status{StatusCode::unavailable, "the server stopped the stream: it is stopping"})) {
    end = std::move(*why);
  }
  call->answer(Reply{std::move(end), {}, {}, {}});
}

}  // namespace

StreamWriter::StreamWriter(std::shared_ptr<detail::ServerStream> stream)
    : stream_(std::move(stream)) {}

bool StreamWriter::write(Reply item) {
  auto seq = stream_->take(stream_->stop_token);
  return seq && stream_->send(std::move(item), *seq);
}

std::uint64_t StreamWriter::written() const {
  return stream_->written();
}

Responder::Responder(std::shared_ptr<detail::ServerCall> call) : call_(std::move(call)) {}
bool Responder::reply(Reply reply) {
  return call_ && call_->answer(std::move(reply));
}
bool Responder::answered() const {
  return !call_ || call_->answered();
}
const Request& Responder::request() const {
  return call_->request();
}

// Thread safety: start/stop/wait/stats from any thread (stop also from a handler); handle()
// on worker threads (or the I/O thread when handlers run inline); the hooks on the I/O thread.
// Workers hand finished requests to the I/O thread through the outbox.
class Server::Impl final : public detail::IoLoop::Hooks {
 public:
  Impl(ServerOptions options, std::vector<Service> services)
      : options_(with_instance(std::move(options))),
        core_(std::make_shared<Core>(
            std::move(services), [this] { loop_.wake(); }, options_.interceptors, options_.logger,
            options_.instance)),
        policy_{options_.max_attempts, options_.queue_type == QueueType::quorum,
                options_.max_request_size, users(detail::endpoints_of(options_))},
        // A gather cannot be redelivered to another server (its queue is this server's alone,
        // and dies with the connection): no attempts to count, nothing to dead-letter.
        gather_policy_{0, false, options_.max_request_size, policy_.server_users},
        loop_(detail::endpoints_of(options_), options_.reconnect, *this, options_.logger) {
    if (options_.dead_letter_queue.empty() && !core_->services.empty()) {
      options_.dead_letter_queue =
          detail::wire::dead_letter_queue_for(core_->services.front().queue());
    }
    for (const auto& service : core_->services) {
      describe_bodies_.push_back(detail::describe_json(service));
      streams_ = streams_ || service.streams();
    }
  }

  ~Impl() {
    stop();
    std::lock_guard lock(stopper_mutex_);
    if (stopper_.joinable()) stopper_.join();
  }

  Status start() {
    if (core_->services.empty()) {
      return {StatusCode::invalid_argument, "the server needs a service to serve"};
    }
    for (std::size_t i = 0; i < core_->services.size(); ++i) {
      const Service& service = core_->services[i];
      if (Status st = service.check(); !st.ok()) return st;
      for (std::size_t j = 0; j < i; ++j) {
        if (core_->services[j].queue() == service.queue()) {
          return {StatusCode::invalid_argument,
                  "two services on queue '" + service.queue() + "': one queue, one service"};
        }
      }
    }
    if (options_.prefetch == 0) {
      return {StatusCode::invalid_argument,
              "prefetch must be at least 1 (0 would mean unbounded work in hand)"};
    }
    if (options_.max_attempts < 0) {
      return {StatusCode::invalid_argument, "max_attempts must be 0 (off) or more"};
    }
    if (options_.stop_grace.count() < 0) {
      return {StatusCode::invalid_argument, "stop_grace must not be negative"};
    }
    if (options_.dead_letter_queue.size() > 255) {
      return {StatusCode::invalid_argument, "dead_letter_queue name must be at most 255 bytes"};
    }
    if (streams_ && options_.workers == 0) {
      return {StatusCode::invalid_argument,
              "streaming methods need worker threads (workers >= 1): a stream's writer waits for "
              "its client's credit, which the I/O thread brings"};
    }
    if (options_.instance.size() > 255) {
      return {StatusCode::invalid_argument, "instance must be at most 255 bytes (it is " +
                                                std::to_string(options_.instance.size()) + ")"};
    }
    if (options_.gather && options_.gather_prefetch == 0) {
      return {StatusCode::invalid_argument,
              "gather_prefetch must be at least 1 (0 would mean unbounded work in hand)"};
    }
    if (options_.workers > 0) {
      try {
        // A request is run by the I/O thread that read it when a slot is free (take_work); a
        // worker stands in for that thread while the handler runs long.
        pool_ = std::make_unique<detail::WorkerPool<Job>>(
            options_.workers, [core = core_](Job& j) { core->handle(j); },
            [this] { loop_.rescue(); }, [this] { loop_.end_rescue(); });
      } catch (const std::system_error& e) {
        return {StatusCode::resource_exhausted, "cannot start " + std::to_string(options_.workers) +
                                                    " worker threads: " + e.what()};
      }
    }
    return loop_.start();
  }

  bool in_own_thread() const {
    return loop_.in_io_thread() || loop_.on_own_thread() || (pool_ && pool_->is_worker());
  }

  const std::string& instance() const { return options_.instance; }

  void stop() {
    if (in_own_thread()) {
      // From a handler (a "shutdown" request) or the I/O thread: stopping joins these very
      // threads, so it happens on a thread of its own; wait() tells when it is done.
      std::lock_guard lock(stopper_mutex_);
      if (!stopper_.joinable()) stopper_ = std::thread([this] { stop_now(); });
      return;
    }
    stop_now();
  }

  void stop_now() {
    std::call_once(stop_once_, [this] {
      // 1. No new requests: cancel the consumers (bounded wait; moot if the connection is gone).
      auto sent = cancel_sent_signal_.get_future();
      auto cancelled = consumers_cancelled_.get_future();
      cancel_requested_.store(true, std::memory_order_release);
      loop_.wake();
      // The I/O thread sends the cancels once free (an inline handler may hold it), then the
      // broker answers; a broker that does not is not waited for long.
      if (loop_.connected() &&
          sent.wait_for(std::chrono::seconds(10)) == std::future_status::ready) {
        cancelled.wait_for(kCancelAnswerTimeout);
      }
      // 2. Let running handlers finish, for stop_grace at most; what no handler started goes
      //    back to the broker.
      const auto grace_end = std::chrono::steady_clock::now() + options_.stop_grace;
      if (pool_) {
        auto stopped = pool_->stop(grace_end);
        for (auto& job : stopped.unstarted) core_->out.push(core_->not_started(std::move(job)));
        if (stopped.left_behind > 0) {
          detail::log(options_.logger, LogLevel::warning,
                      std::to_string(stopped.left_behind) +
                          " handler(s) still running after the stop grace of " +
                          std::to_string(options_.stop_grace.count()) +
                          " ms: their requests go back to the broker when the connection "
                          "closes, and their replies will be dropped");
        }
      }
      // 2b. Asynchronous handlers (and synchronous ones left behind) answer in their own time,
      //     until the grace ends; then their contexts are cancelled, and those that answer
      //     promptly still have their replies sent. (When the handler left behind is on the
      //     I/O thread, no worker stands in for it any more: those replies wait for step 3.)
      if (!core_->in_hand.wait_empty(grace_end)) {
        detail::log(options_.logger, LogLevel::warning,
                    std::to_string(core_->in_hand.size()) +
                        " request(s) still unanswered after the stop grace: cancelling them");
        core_->in_hand.cancel_all();
        core_->in_hand.wait_empty(std::chrono::steady_clock::now() + kCancelledAnswerTimeout);
      }
      // 3. on_closing sends the last replies, acks and requeues, then the connection closes.
      loop_.stop();
      // 4. A handler left behind may still finish: its reply has nowhere to go.
      core_->out.close();
      finish(Status{});
    });
  }

  void set_serving(bool serving) { serving_.store(serving, std::memory_order_relaxed); }
  bool serving() const {
    return serving_.load(std::memory_order_relaxed) &&
           !cancel_requested_.load(std::memory_order_acquire);
  }

  Status wait() {
    std::unique_lock lock(done_mutex_);
    done_cv_.wait(lock, [this] { return done_; });
    return done_status_;
  }

  Stats stats() const {
    Stats s;
    s.received = received_.load(std::memory_order_relaxed);
    s.replied_ok = core_->replied_ok.load(std::memory_order_relaxed);
    s.replied_error = core_->replied_error.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    s.expired = core_->expired.load(std::memory_order_relaxed);
    s.oversized = oversized_.load(std::memory_order_relaxed);
    s.redelivered = redelivered_.load(std::memory_order_relaxed);
    s.dead_lettered = dead_lettered_.load(std::memory_order_relaxed);
    s.requeued = requeued_.load(std::memory_order_relaxed);
    s.oneway = core_->oneway.load(std::memory_order_relaxed);
    s.unimplemented = core_->unimplemented.load(std::memory_order_relaxed);
    s.denied = core_->denied.load(std::memory_order_relaxed);
    s.reserved = reserved_.load(std::memory_order_relaxed);
    s.gathers = gathers_.load(std::memory_order_relaxed);
    s.stream_items = core_->stream_items.load(std::memory_order_relaxed);
    s.stream_probes = core_->stream_probes.load(std::memory_order_relaxed);
    s.streams_orphaned = core_->streams_orphaned.load(std::memory_order_relaxed);
    s.reconnects = loop_.reconnects();
    s.in_hand = core_->in_hand.size();
    s.errors = core_->errors.snapshot();
    s.handler_latency = core_->handler_latency.snapshot();
    return s;
  }

  // ---- I/O thread ----

  Status on_open(amqp::Channel& channel) override {
    loop_.io_thread.assert_held();
    // A new connection: delivery tags and confirm numbers of the old one mean nothing here.
    link_ = Link{};
    generation_.fetch_add(1, std::memory_order_relaxed);
    channel.keep_wire_headers(true);  // re-published copies keep what arrived
    if (Status st = channel.qos(options_.prefetch); !st.ok()) return st;
    if (options_.confirm_replies) {
      if (Status st = channel.confirm_select(); !st.ok()) return st;
    }
    for (std::size_t i = 0; i < core_->services.size(); ++i) {
      const std::string& queue = core_->services[i].queue();
      auto declared = channel.declare_queue(queue_spec(queue));
      if (!declared) return declared.status();
      // A stop that began while disconnected: the new connection takes no more requests.
      if (cancel_requested_.load(std::memory_order_acquire)) continue;
      auto tag = channel.consume(queue, /*no_ack=*/false, /*exclusive=*/false);
      if (!tag) return tag.status();
      link_.route_of_tag[*tag] = Consumer{i, Role::service};
    }
    if (options_.gather && !cancel_requested_.load(std::memory_order_acquire)) {
      // RabbitMQ applies a (non-global) prefetch to the consumers started after it: the
      // instance queues get a budget of their own.
      if (Status st = channel.qos(options_.gather_prefetch); !st.ok()) return st;
      for (std::size_t i = 0; i < core_->services.size(); ++i) {
        if (Status st = join_gather(channel, i); !st.ok()) return st;
      }
    }
    for (std::size_t i = 0; i < core_->services.size(); ++i) {
      if (!core_->services[i].streams()) continue;
      if (Status st = consume_control_queue(channel, i); !st.ok()) return st;
    }
    if (options_.max_attempts > 0) {
      // Declared now, so a dead-letter queue the broker refuses (declared differently, no
      // permission) is a start-up error, not a channel lost in the middle of serving.
      auto dlq = channel.declare_queue(queue_spec(options_.dead_letter_queue));
      if (!dlq) return dlq.status();
    }
    return {};
  }

  void on_wake(amqp::Channel* channel) override {
    loop_.io_thread.assert_held();
    // Blocked, or silent for a heartbeat interval: replies wait in the outbox. Disconnected:
    // nothing can be acked any more (the broker requeues it all), so what waits is dropped.
    if (channel == nullptr || loop_.can_publish()) core_->out.take(batch_);
    if (channel != nullptr) {
      amqp::Channel::Cork cork(*channel, batch_.size() > 1);
      for (auto& out : batch_) settle(*channel, out);
    }
    batch_.clear();
    if (next_stream_probe_ && detail::Clock::now() >= *next_stream_probe_) {
      next_stream_probe_.reset();  // next_deadline() sets the next one while streams run
      if (channel != nullptr) probe_stalled_callers(*channel);
    }
    if (cancel_requested_.load(std::memory_order_acquire) && !cancel_sent_) {
      cancel_sent_ = true;
      if (channel != nullptr) {
        // The rosters first: clients stop counting this instance before anything else changes.
        // The instance queues stay consumed until the connection closes: a gather from a client
        // that counted this instance just before is answered (unavailable: stopping), not left
        // to its deadline in a queue nobody reads.
        for (Role role : {Role::roster, Role::service}) {
          for (const auto& [tag, consumer] : link_.route_of_tag) {
            if (consumer.role == role && channel->cancel(tag).ok()) {
              link_.cancels_pending.insert(tag);
            }
          }
        }
      }
      // Stopping waits for the broker's answers: the deliveries it sent before them are still
      // handled (served or handed back), none is left in the socket when the channel closes.
      cancel_sent_signal_.set_value();
      if (link_.cancels_pending.empty()) consumers_are_cancelled();
    }
  }

  void on_cancel_ok(amqp::Channel&, const std::string& tag) override {
    loop_.io_thread.assert_held();
    if (link_.cancels_pending.erase(tag) != 0 && link_.cancels_pending.empty()) {
      consumers_are_cancelled();
    }
  }

  void consumers_are_cancelled() REQUIRES(loop_.io_thread) {
    if (cancel_signalled_) return;
    cancel_signalled_ = true;
    consumers_cancelled_.set_value();
  }

  void on_delivery(amqp::Channel& channel, amqp::Delivery&& d) override {
    loop_.io_thread.assert_held();
    auto route = link_.route_of_tag.find(d.consumer_tag);
    if (route == link_.route_of_tag.end()) {  // not ours: cannot happen on our own channel
      received_.fetch_add(1, std::memory_order_relaxed);
      channel.reject(d.delivery_tag, /*requeue=*/true);
      return;
    }
    if (route->second.role != Role::service) {
      on_instance_delivery(channel, std::move(d), route->second);
      return;
    }
    received_.fetch_add(1, std::memory_order_relaxed);
    const std::size_t service = route->second.service;
    const std::string& queue = core_->services[service].queue();
    if (d.redelivered) redelivered_.fetch_add(1, std::memory_order_relaxed);
    if (options_.max_attempts > 0 && !policy_.quorum) {
      // Only quorum queues count deliveries; on a classic queue this header came from a client.
      if (auto it = d.props.headers.find(detail::wire::kDeliveryCountHeader);
          it != d.props.headers.end()) {
        d.props.headers.erase(it);
      }
    }
    const detail::Triage t = detail::triage(d, policy_, detail::wire::epoch_ms());
    switch (t.verdict) {
      case detail::Verdict::reject:
        reject_no_reply_to(channel, d, queue);
        return;
      case detail::Verdict::dead_letter:
        dead_letter(channel, std::move(d), queue, t.attempt, t.caller);
        return;
      case detail::Verdict::expired:
        core_->expired.fetch_add(1, std::memory_order_relaxed);
        channel.ack(d.delivery_tag);
        return;
      case detail::Verdict::recount:
        if (recount(channel, d, queue, t.attempt, t.caller)) return;
        break;
      case detail::Verdict::oversized:
        oversized_.fetch_add(1, std::memory_order_relaxed);
        reply_error_now(channel, d, too_large(d));
        return;
      case detail::Verdict::serve:
        break;
    }
    if (auto m = d.props.headers.find(detail::wire::kMethodHeader);
        m != d.props.headers.end() && m->second.starts_with(kReservedMethodPrefix)) {
      answer_reserved(channel, d, service, m->second);
      return;
    }
    Job job{std::make_unique<amqp::Delivery>(std::move(d)),
            service,
            generation_.load(std::memory_order_relaxed),
            t.attempt,
            t.caller,
            /*gather=*/false,
            t.deadline_ms};
    if (pool_) {
      link_.incoming.push_back(std::move(job));  // handed to the pool in one go after the read
    } else {
      core_->handle(job);  // inline: the reply goes out on this loop's next turn
    }
  }

  void on_read_batch(amqp::Channel& channel) override {
    loop_.io_thread.assert_held();
    if (!link_.rejoin.empty()) rejoin_gathers(channel);
    if (link_.incoming.empty()) return;
    // The loop's own thread runs one of them itself when this turn ends (take_work), unless a
    // worker stands in for it now.
    if (!pool_->submit_all(link_.incoming, /*one_is_mine=*/loop_.on_own_thread())) {
      // Stopping: these were never started, so they go back to the broker at once.
      // Through the outbox, like every publish: it waits while the connection may not publish.
      for (auto& job : link_.incoming) core_->out.push(core_->not_started(std::move(job)));
    }
    link_.incoming.clear();
  }

  // A request to run on the I/O thread, between its turns: the oldest waiting one, when a
  // worker slot is free. It costs no thread wake-up; the worker standing by takes over the
  // loop while it runs long.
  std::function<void()> take_work() override {
    loop_.io_thread.assert_held();  // and on the loop's own thread: IoLoop::run asks
    if (!pool_) return {};
    return pool_->take_here();
  }

  // Only a stream's items to a reply queue are published mandatory: one comes back when that
  // queue is gone (its caller crashed, or its connection did), and nobody else would tell the
  // producer, which would wait for credit until the stream's deadline. (Not one on direct
  // reply-to: RabbitMQ drops what is published to it; probe_stalled_callers finds that one.)
  void on_return(amqp::Channel&, amqp::Returned&& r) override {
    loop_.io_thread.assert_held();
    orphaned(r.props.correlation_id, "its item came back (" + r.reply_text + ")");
  }

  // A caller that vanished on direct reply-to is heard of neither way: its items are dropped,
  // and it sends no more credit. So the writer of a stream that has waited for credit for
  // kStalledStream has its caller checked, and again each kStalledStream while it waits: a
  // passive declaration of the stream's reply address on the side channel. RabbitMQ answers
  // it for a direct reply-to address whose channel is alive, and refuses it (404) once that
  // channel is gone; likewise for a reply queue. Anything else (another connection's
  // exclusive queue: 405) leaves the stream alone.
  void probe_stalled_callers(amqp::Channel& channel) REQUIRES(loop_.io_thread) {
    for (auto& [id, stream] : core_->stalled_streams(detail::Clock::now() - kStalledStream)) {
      if (std::find(link_.stream_probes.begin(), link_.stream_probes.end(), id) !=
          link_.stream_probes.end()) {
        continue;  // asked already, not answered yet
      }
      if (!channel.probe({amqp::Probe::Kind::queue, stream->reply_to()}).ok()) return;
      link_.stream_probes.push_back(id);
      core_->stream_probes.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void on_probe(amqp::Channel&, amqp::ProbeResult&& result) override {
    loop_.io_thread.assert_held();
    if (link_.stream_probes.empty()) return;
    const std::string id = std::move(link_.stream_probes.front());
    link_.stream_probes.pop_front();
    if (result.status.code() != StatusCode::not_found) return;  // there, or the broker won't say
    orphaned(id, "its reply address '" + result.probe.name + "' no longer exists");
  }

  // The caller of stream `id` is gone: its producer stops.
  void orphaned(const std::string& id, const std::string& how) REQUIRES(loop_.io_thread) {
    auto stream = core_->stream(id);
    if (stream && stream->stop({StatusCode::cancelled, "the stream's caller is gone: " + how})) {
      core_->streams_orphaned.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void on_consumer_cancelled(amqp::Channel&, const std::string& tag) override {
    loop_.io_thread.assert_held();
    auto route = link_.route_of_tag.find(tag);
    if (route != link_.route_of_tag.end() && route->second.role == Role::control) {
      // Its streams' clients can no longer reach this server: a new connection starts afresh
      // (its streams end, their requests are delivered again).
      loop_.drop({StatusCode::unavailable, "the broker cancelled a stream control consumer"});
      return;
    }
    if (route != link_.route_of_tag.end() && route->second.role != Role::service) {
      gather_consumer_cancelled(tag, route->second);
      return;
    }
    std::string queue =
        route == link_.route_of_tag.end() ? tag : core_->services[route->second.service].queue();
    detail::log(options_.logger, LogLevel::error,
                "the broker cancelled the consumer of '" + queue +
                    "' (queue deleted?); this server no longer receives its requests");
    finish(Status{StatusCode::unavailable, "queue '" + queue + "' was deleted"});
  }

  void on_lost(const Status& why) override {
    loop_.io_thread.assert_held();
    for (std::size_t i = 0; i < core_->services.size(); ++i) core_->set_control_queue(i, {});
    core_->stop_streams();
    // Nothing more arrives on this connection; the next one does not consume once stopping.
    if (cancel_sent_) consumers_are_cancelled();
    if (!options_.reconnect.enabled) finish(why);
  }

  void on_confirm(amqp::Channel& channel, std::uint64_t seq, bool multiple, bool ack) override {
    loop_.io_thread.assert_held();
    for (auto tag : link_.unconfirmed.settle(seq, multiple)) {
      // Confirmed: the request is done. Refused: hand it back to be tried again.
      if (ack) {
        channel.ack(tag);
      } else {
        channel.reject(tag, /*requeue=*/true);
      }
    }
  }

  // The earliest deadline of a request in hand: its context is cancelled then. While streams
  // run, their callers' next check too (probe_stalled_callers).
  std::optional<detail::Clock::time_point> next_deadline() override {
    loop_.io_thread.assert_held();
    auto next = core_->in_hand.next_deadline();
    if (core_->live_streams.load(std::memory_order_relaxed) == 0) return next;
    if (!next_stream_probe_) next_stream_probe_ = detail::Clock::now() + kStalledStream;
    return next && *next < *next_stream_probe_ ? next : next_stream_probe_;
  }

  void on_timer(detail::Clock::time_point now) override {
    loop_.io_thread.assert_held();
    core_->in_hand.cancel_expired(now);
  }

  void on_closing(amqp::Channel& channel) override {
    loop_.io_thread.assert_held();
    on_wake(&channel);
  }

  // Replies sent but not yet confirmed: their requests are acked when the confirms arrive.
  bool closing_needs_more() override {
    loop_.io_thread.assert_held();
    return !link_.unconfirmed.empty();
  }

 private:
  // What a consumer of this server's consumes: a service's queue, the instance queue of a
  // service (gathers), or a service's roster (only there to be counted).
  enum class Role { service, instance, roster, control };
  struct Consumer {
    std::size_t service = 0;
    Role role = Role::service;
  };

  // What lives and dies with one connection.
  struct Link {
    std::unordered_map<std::string, Consumer> route_of_tag;  // consumer tag -> what it consumes
    detail::ConfirmTracker<std::uint64_t> unconfirmed;  // reply's publish number -> request tag
    std::vector<Job> incoming;                          // read in this batch, for the worker pool
    std::set<std::string> cancels_pending;  // consumers cancelled, the broker's answer awaited
    // Gather consumers the broker cancelled, joined again after the read (see rejoin_gathers).
    std::vector<Consumer> rejoin;
    // The streams whose callers were probed (Channel::probe), by correlation id, in order.
    std::deque<std::string> stream_probes;
  };

  amqp::QueueSpec queue_spec(const std::string& name) const {
    amqp::QueueSpec spec{name, options_.durable, false, false, {}};
    if (options_.queue_type == QueueType::quorum) {
      spec.durable = true;
      spec.arguments["x-queue-type"] = "quorum";
    }
    return spec;
  }

  void reject_no_reply_to(amqp::Channel& channel, const amqp::Delivery& d, const std::string& queue)
      REQUIRES(loop_.io_thread) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    if (!warned_no_reply_to_) {
      warned_no_reply_to_ = true;
      detail::log(options_.logger, LogLevel::warning,
                  "rejected a request on '" + queue +
                      "' without reply_to (nowhere to answer); further ones are rejected "
                      "silently");
    }
    channel.reject(d.delivery_tag, /*requeue=*/false);
  }

  // Carries out what a finished request asks: reply then ack, ack alone, or requeue.
  void settle(amqp::Channel& channel, Outgoing& out) REQUIRES(loop_.io_thread) {
    // Tags of an earlier connection are dead: the broker requeued those requests itself.
    const bool same_connection = out.generation == generation_.load(std::memory_order_relaxed);
    if (out.settle == Settle::requeue) {
      if (same_connection) requeue(channel, out);
      return;
    }
    if (out.reply_to.empty() && out.settle == Settle::reply_only) return;  // one-way: no reply
    if (out.reply_to.empty() && out.settle == Settle::reply_then_ack) out.settle = Settle::ack;
    if (out.settle == Settle::reply_then_ack || out.settle == Settle::reply_only) {
      if (Status bad = detail::wire::validate_outgoing(
              out.props, out.body.size(), {channel.frame_max(), channel.max_message_size()},
              "the handler's reply");
          !bad.ok()) {
        // Sending it would break the connection; the caller learns why instead.
        detail::log(options_.logger, LogLevel::error, bad.message());
        std::string correlation_id = std::move(out.props.correlation_id);
        out.props = {};
        detail::wire::encode_reply(Reply::error(StatusCode::internal, bad.message()),
                                   correlation_id, out.props, out.body);
      }
      // Reply first, then ack: a crash in between leads to a redelivery, never a lost request.
      // A reply to a request from a previous connection still goes out (its caller may wait),
      // but that request cannot be acked: it was requeued, and its duplicate reply is dropped.
      auto seq = channel.publish("", out.reply_to, out.mandatory, out.props, out.body);
      if (!seq || out.settle == Settle::reply_only) return;
      if (same_connection && options_.confirm_replies) {
        link_.unconfirmed.track(*seq, out.delivery_tag);
        return;  // acked when the broker confirms the reply
      }
    }
    if (same_connection) channel.ack(out.delivery_tag);
  }

  // A server's own copy of a request, for its queue or the dead-letter queue: what arrived, its
  // header table as it came (never re-encoded, so never larger), marked with the attempt count
  // and with this connection's user, which the broker validates: a client cannot forge a count.
  amqp::Properties own_copy(const amqp::Properties& original, std::int64_t attempt,
                            const std::string& caller) const REQUIRES(loop_.io_thread) {
    amqp::Properties p = original;
    p.headers.clear();  // they are in wire_headers, as they arrived
    p.headers.emplace(detail::wire::kAttemptsHeader, std::to_string(attempt));
    // The copy's user_id is this server's: the original's verified caller travels in a header
    // (always set, so that one a client wrote into the original never passes for the server's).
    p.headers.emplace(detail::wire::kCallerHeader, caller);
    // The copy has not been returned yet: its attempts are all in x-rpc-attempts (a quorum
    // queue writes its own count when it returns the copy).
    p.headers.emplace(detail::wire::kDeliveryCountHeader, "0");
    p.user_id = loop_.user();
    return p;
  }

  // Publishes a copy made by own_copy and returns its publish number; fails alone (nothing
  // sent) when it cannot be published without breaking the connection.
  Result<std::uint64_t> publish_copy(amqp::Channel& channel, const std::string& queue,
                                     const amqp::Properties& props, const std::string& body) {
    if (Status bad = detail::wire::validate_outgoing(
            props, body.size(), {channel.frame_max(), channel.max_message_size()},
            "copy of a request for '" + queue + "'");
        !bad.ok()) {
      return bad;
    }
    return channel.publish("", queue, /*mandatory=*/false, props, body);
  }

  // The original of a copy just published: acked now, or, with publisher confirms, once the
  // broker confirms the copy (a refused copy sends the original back instead).
  void ack_after_copy(amqp::Channel& channel, std::uint64_t copy_seq, std::uint64_t tag)
      REQUIRES(loop_.io_thread) {
    if (options_.confirm_replies) {
      link_.unconfirmed.track(copy_seq, tag);
    } else {
      channel.ack(tag);
    }
  }

  // Puts a redelivered request back at the end of its queue with its delivery count, so the
  // next crash is counted too; the original is acked once the copy is published. False: it
  // could not be copied, and is served uncounted instead.
  bool recount(amqp::Channel& channel, const amqp::Delivery& d, const std::string& queue,
               std::int64_t attempt, const std::string& caller) REQUIRES(loop_.io_thread) {
    auto copy = publish_copy(channel, queue, own_copy(d.props, attempt, caller), d.body);
    if (!copy) {
      detail::log(options_.logger, LogLevel::warning,
                  "cannot re-publish a redelivered request to count its attempts (" +
                      copy.status().message() + "); serving it uncounted");
      return false;
    }
    ack_after_copy(channel, *copy, d.delivery_tag);
    return true;
  }

  // A request a graceful stop did not start goes back as the server's own copy with its attempt
  // unchanged: a stop is not a crash, and a requeue would count as one (redelivered flag,
  // x-delivery-count). A request that cannot be copied is requeued the plain way.
  void requeue(amqp::Channel& channel, Outgoing& out) REQUIRES(loop_.io_thread) {
    if (detail::wire::expired(out.props.headers, detail::wire::epoch_ms())) {
      core_->expired.fetch_add(1, std::memory_order_relaxed);
      channel.ack(out.delivery_tag);
      return;
    }
    const std::string& queue = core_->services[out.route].queue();
    if (auto copy =
            publish_copy(channel, queue, own_copy(out.props, out.attempt, out.caller), out.body)) {
      ack_after_copy(channel, *copy, out.delivery_tag);
    } else {
      channel.reject(out.delivery_tag, /*requeue=*/true);
    }
    requeued_.fetch_add(1, std::memory_order_relaxed);
  }

  void dead_letter(amqp::Channel& channel, amqp::Delivery&& d, const std::string& queue,
                   std::int64_t attempt, const std::string& caller) REQUIRES(loop_.io_thread) {
    const std::string& dlq = options_.dead_letter_queue;
    const std::string why = "the request on '" + queue + "' was delivered " +
                            std::to_string(attempt) +
                            " times and its server crashed or lost its connection each time; "
                            "moved to dead-letter queue '" +
                            dlq + "'";
    detail::log(options_.logger, LogLevel::error, why);
    amqp::Properties dead = own_copy(d.props, attempt, caller);
    dead.expiration.clear();  // kept for inspection, whatever the caller's deadline was
    dead.headers.emplace(detail::wire::kDeadReasonHeader, why);
    auto copy = publish_copy(channel, dlq, dead, d.body);
    if (!copy) {
      // It cannot be kept: the caller is told, and the broker drops it (or dead-letters it, if
      // the queue has a dead-letter exchange of its own).
      detail::log(
          options_.logger, LogLevel::error,
          "cannot move the request to '" + dlq + "' (" + copy.status().message() + "); dropped");
      reply_error_now(channel, d, Status{StatusCode::internal, why + " failed: dropped"},
                      /*ack=*/false);
      channel.reject(d.delivery_tag, /*requeue=*/false);
      return;
    }
    dead_lettered_.fetch_add(1, std::memory_order_relaxed);
    reply_error_now(channel, d, Status{StatusCode::internal, why}, /*ack=*/false);
    ack_after_copy(channel, *copy, d.delivery_tag);
  }

  // Answers a request with an error from the I/O thread (no handler involved), then acks it
  // (unless the caller settles it otherwise). `gather`: it came through the instance queue, and
  // the reply names this instance.
  void reply_error_now(amqp::Channel& channel, const amqp::Delivery& d, Status error,
                       bool ack = true, bool gather = false) REQUIRES(loop_.io_thread) {
    core_->count_reply(error);
    Outgoing out{ack ? Settle::reply_then_ack : Settle::reply_only,
                 d.delivery_tag,
                 generation_.load(std::memory_order_relaxed),
                 d.props.reply_to,
                 {},
                 {}};
    detail::wire::encode_reply(Reply{std::move(error), {}, {}, {}}, d.props.correlation_id,
                               out.props, out.body);
    if (gather)
      out.props.headers.insert_or_assign(std::string(detail::wire::kInstanceHeader),
                                         options_.instance);
    settle(channel, out);
  }

  // The framework's own methods, answered here on the I/O thread so that a probe gets its
  // answer even while every worker is busy. Health says not_serving once a stop has begun.
  void answer_reserved(amqp::Channel& channel, const amqp::Delivery& d, std::size_t service,
                       const std::string& method, bool gather = false) REQUIRES(loop_.io_thread) {
    reserved_.fetch_add(1, std::memory_order_relaxed);
    Reply reply;
    if (method == kHealthMethod) {
      reply = detail::health_reply(serving());
    } else if (method == kDescribeMethod) {
      reply = Reply::ok(describe_bodies_[service]);
      reply.content_type = std::string(kJsonContentType);
    } else {
      reply = Reply::error(StatusCode::unimplemented, "no reserved method '" + method +
                                                          "' (there are '" +
                                                          std::string(kDescribeMethod) + "' and '" +
                                                          std::string(kHealthMethod) + "')");
    }
    Outgoing out{Settle::reply_then_ack,
                 d.delivery_tag,
                 generation_.load(std::memory_order_relaxed),
                 d.props.reply_to,
                 {},
                 {}};
    detail::wire::encode_reply(std::move(reply), d.props.correlation_id, out.props, out.body);
    // Through a gather ("health of every server"), the caller must know whose health this is.
    if (gather)
      out.props.headers.insert_or_assign(std::string(detail::wire::kInstanceHeader),
                                         options_.instance);
    settle(channel, out);
  }

  // ---- gather (docs/PROTOCOL.md, "Gather") ----

  // Makes this server one of the instances that a gather of service `i` reaches, in an order
  // that never counts it before a gather can reach it: its instance queue bound and consumed
  // first, and only then its consumer on the roster.
  Status join_gather(amqp::Channel& channel, std::size_t i) REQUIRES(loop_.io_thread) {
    if (Status st = consume_instance_queue(channel, i); !st.ok()) return st;
    return consume_roster(channel, i);
  }

  Status consume_instance_queue(amqp::Channel& channel, std::size_t i) REQUIRES(loop_.io_thread) {
    const std::string& service_queue = core_->services[i].queue();
    const std::string exchange = detail::wire::gather_exchange_for(service_queue);
    // Not auto-delete: a client publishes to it once it has counted instances, and an exchange
    // gone by then (its last server left) would close the client's channel (404). Declaring it
    // again is harmless; non-durable, like the service's queue by default.
    if (Status st = channel.declare_exchange(exchange, "fanout", /*durable=*/false,
                                             /*auto_delete=*/false);
        !st.ok()) {
      return st;
    }
    // Exclusive, auto-delete: it reaches this instance alone, and goes with this connection
    // (nothing in it could be served by anyone else). A new name on each connection: the queue
    // of a connection lost a moment ago may linger until the broker notices.
    auto queue = channel.declare_queue(amqp::QueueSpec::of_this_connection(
        detail::wire::instance_queue_for(service_queue, queue_ids_.span_id())));
    if (!queue) return queue.status();
    if (Status st = channel.bind_queue(*queue, exchange, ""); !st.ok()) return st;
    auto tag = channel.consume(*queue, /*no_ack=*/false, /*exclusive=*/true);
    if (!tag) return tag.status();
    link_.route_of_tag[*tag] = Consumer{i, Role::instance};
    detail::log(options_.logger, LogLevel::debug,
                "instance " + options_.instance + " of '" + service_queue +
                    "' takes gathers on its queue '" + *queue + "'");
    return {};
  }

  // The queue a streaming service's clients send credit and cancels to (x-rpc-stream-to):
  // exclusive, auto-delete, named anew on each connection, consumed without acks, so that no
  // prefetch limit, and no request waiting for a worker, ever holds a credit back: the stream
  // it would unblock may be what that worker is running.
  Status consume_control_queue(amqp::Channel& channel, std::size_t i) REQUIRES(loop_.io_thread) {
    const std::string& service_queue = core_->services[i].queue();
    auto queue = channel.declare_queue(amqp::QueueSpec::of_this_connection(
        detail::wire::control_queue_for(service_queue, queue_ids_.span_id())));
    if (!queue) return queue.status();
    auto tag = channel.consume(*queue, /*no_ack=*/true, /*exclusive=*/true);
    if (!tag) return tag.status();
    link_.route_of_tag[*tag] = Consumer{i, Role::control};
    core_->set_control_queue(i, *queue);
    return {};
  }

  Status consume_roster(amqp::Channel& channel, std::size_t i) REQUIRES(loop_.io_thread) {
    const std::string roster = detail::wire::roster_queue_for(core_->services[i].queue());
    // Neither auto-delete (a server declaring it while the last other one leaves would consume
    // a queue just deleted: 404) nor kept forever: the broker deletes it once no server has
    // consumed or declared it for kRosterExpiresMs, far longer than a declare takes to be
    // followed by its consume.
    auto declared =
        channel.declare_expiring_queue(amqp::QueueSpec{roster, false, false, false, {}},
                                       std::chrono::milliseconds(detail::wire::kRosterExpiresMs));
    if (!declared) return declared.status();
    // No acks: nothing is meant for it; the consumer is there to be counted.
    auto tag = channel.consume(roster, /*no_ack=*/true, /*exclusive=*/false);
    if (!tag) return tag.status();
    link_.route_of_tag[*tag] = Consumer{i, Role::roster};
    return {};
  }

  // A request through a service's instance queue (a gather), or a message on its roster.
  // Served like a request on the service's queue, except: no poison-message accounting (it
  // cannot go to another server), the reply names this instance, and once a stop has begun it
  // is answered unavailable instead of served (this instance has left the roster).
  void on_instance_delivery(amqp::Channel& channel, amqp::Delivery&& d, Consumer consumer)
      REQUIRES(loop_.io_thread) {
    if (consumer.role == Role::roster) return;  // meant for no one (and not acked: no_ack)
    if (consumer.role == Role::control) {       // no_ack too
      auto control = d.props.headers.find(detail::wire::kStreamControlHeader);
      if (control != d.props.headers.end()) stream_control(d, control->second);
      return;
    }
    received_.fetch_add(1, std::memory_order_relaxed);
    gathers_.fetch_add(1, std::memory_order_relaxed);
    const std::string& queue = core_->services[consumer.service].queue();
    if (d.redelivered) redelivered_.fetch_add(1, std::memory_order_relaxed);
    detail::Triage t = detail::triage(d, gather_policy_, detail::wire::epoch_ms());
    switch (t.verdict) {
      case detail::Verdict::reject:
        reject_no_reply_to(channel, d, queue);
        return;
      case detail::Verdict::expired:
        core_->expired.fetch_add(1, std::memory_order_relaxed);
        channel.ack(d.delivery_tag);
        return;
      case detail::Verdict::oversized:
        oversized_.fetch_add(1, std::memory_order_relaxed);
        reply_error_now(channel, d, too_large(d), /*ack=*/true, /*gather=*/true);
        return;
      case detail::Verdict::dead_letter:  // not without attempt counting
      case detail::Verdict::recount:
      case detail::Verdict::serve:
        break;
    }
    if (auto m = d.props.headers.find(detail::wire::kMethodHeader);
        m != d.props.headers.end() && m->second.starts_with(kReservedMethodPrefix)) {
      answer_reserved(channel, d, consumer.service, m->second, /*gather=*/true);
      return;
    }
    if (cancel_requested_.load(std::memory_order_acquire)) {
      reply_error_now(channel, d, core_->stopping_reply().status, /*ack=*/true, /*gather=*/true);
      return;
    }
    Job job{std::make_unique<amqp::Delivery>(std::move(d)),
            consumer.service,
            generation_.load(std::memory_order_relaxed),
            1,
            std::move(t.caller),
            /*gather=*/true,
            t.deadline_ms};
    if (pool_) {
      link_.incoming.push_back(std::move(job));
    } else {
      core_->handle(job);
    }
  }

  // A stream's client makes room for more items, or stops the stream. Only the stream's own
  // caller may (when the broker verified who it is); anything else is dropped.
  void stream_control(const amqp::Delivery& d, const std::string& what) REQUIRES(loop_.io_thread) {
    auto stream = core_->stream(d.props.correlation_id);
    if (!stream) return;  // over already
    if (!stream->caller().empty() && d.props.user_id != stream->caller()) {
      detail::log(options_.logger, LogLevel::warning,
                  "dropped a stream " + what + " from '" + d.props.user_id +
                      "', who is not the stream's caller '" + stream->caller() + "'");
      return;
    }
    if (what == "cancel") {
      stream->stop({StatusCode::cancelled, "the client cancelled the stream"});
    } else if (what == "credit") {
      auto n = detail::wire::int_header(d.props.headers, detail::wire::kStreamCreditHeader);
      if (n && *n > 0) {
        stream->grant(
            static_cast<std::uint32_t>(std::min<std::int64_t>(*n, detail::wire::kMaxStreamCredit)));
      }
    }
  }

  // The broker cancelled a roster or instance consumer: its queue was deleted (by an operator),
  // or its node is gone. The service's own requests still flow, so the server stays and joins
  // again at once: without its roster consumer clients would no longer count this instance;
  // without its instance queue they would count an instance no gather reaches, and wait for it
  // until their deadline. What fails here drops the connection: the next one joins afresh.
  void gather_consumer_cancelled(const std::string& tag, Consumer consumer)
      REQUIRES(loop_.io_thread) {
    link_.route_of_tag.erase(tag);
    if (cancel_requested_.load(std::memory_order_acquire)) {
      // Stopping: nothing to join again. A cancel of ours that crossed the broker's is answered.
      if (link_.cancels_pending.erase(tag) != 0 && link_.cancels_pending.empty()) {
        consumers_are_cancelled();
      }
      return;
    }
    const bool roster = consumer.role == Role::roster;
    const std::string& queue = core_->services[consumer.service].queue();
    detail::log(options_.logger, LogLevel::warning,
                "the broker cancelled the " + std::string(roster ? "roster" : "instance queue") +
                    " consumer of '" + queue + "' (queue deleted?); joining gathers again");
    // Joining takes synchronous calls, which wait for the broker's answers on the socket: not
    // in the middle of the batch being read, whose other frames come first.
    link_.rejoin.push_back(consumer);
  }

  void rejoin_gathers(amqp::Channel& channel) REQUIRES(loop_.io_thread) {
    for (const Consumer& consumer : std::exchange(link_.rejoin, {})) {
      if (cancel_requested_.load(std::memory_order_acquire)) return;
      const std::string& queue = core_->services[consumer.service].queue();
      Status st;
      if (consumer.role == Role::roster) {
        st = consume_roster(channel, consumer.service);
      } else {
        st = channel.qos(options_.gather_prefetch);
        if (st.ok()) st = consume_instance_queue(channel, consumer.service);
      }
      if (!st.ok()) {
        loop_.drop(Status{StatusCode::unavailable,
                          "cannot join gathers of '" + queue + "' again: " + st.message()});
        return;
      }
    }
  }

  Status too_large(const amqp::Delivery& d) const {
    return Status{StatusCode::resource_exhausted, "request body is " +
                                                      std::to_string(d.body.size()) +
                                                      " bytes; this server takes at most " +
                                                      std::to_string(options_.max_request_size)};
  }

  void finish(Status why) {
    {
      std::lock_guard lock(done_mutex_);
      if (done_) return;
      done_ = true;
      done_status_ = std::move(why);
    }
    done_cv_.notify_all();
  }

  ServerOptions options_;
  std::shared_ptr<Core> core_;
  const detail::TriagePolicy policy_;
  const detail::TriagePolicy gather_policy_;  // for requests from the instance queues
  detail::IoLoop loop_;

  std::atomic<bool> cancel_requested_{false};  // a stop has begun
  std::atomic<bool> serving_{true};            // set_serving
  std::vector<std::string> describe_bodies_;   // by service, computed once
  bool streams_ = false;                       // a service has streaming methods
  std::promise<void> cancel_sent_signal_;      // the I/O thread has sent the cancels
  std::promise<void> consumers_cancelled_;     // and the broker has answered them
  static constexpr std::chrono::seconds kCancelAnswerTimeout{2};
  // How long cancelled handlers have to answer once the stop grace ended.
  static constexpr std::chrono::seconds kCancelledAnswerTimeout{1};
  std::atomic<std::uint64_t> generation_{0};  // of the connection; read by workers

  // I/O thread only.
  Link link_ GUARDED_BY(loop_.io_thread);
  // When probe_stalled_callers runs next (nullopt: when next_deadline() sees a stream).
  std::optional<detail::Clock::time_point> next_stream_probe_ GUARDED_BY(loop_.io_thread);
  static constexpr auto kStalledStream = std::chrono::seconds(1);
  std::vector<Outgoing> batch_ GUARDED_BY(loop_.io_thread);
  bool cancel_sent_ GUARDED_BY(loop_.io_thread) = false;
  bool cancel_signalled_ GUARDED_BY(loop_.io_thread) = false;
  bool warned_no_reply_to_ GUARDED_BY(loop_.io_thread) = false;
  detail::UuidGenerator queue_ids_ GUARDED_BY(loop_.io_thread);  // instance queue names

  std::once_flag stop_once_;
  std::mutex stopper_mutex_;
  std::thread stopper_;
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Status done_status_;

  std::atomic<std::uint64_t> received_{0}, rejected_{0}, oversized_{0}, redelivered_{0},
      dead_lettered_{0}, requeued_{0}, reserved_{0}, gathers_{0};

  // Null when handlers run inline on the I/O thread. Last: its threads use the members above.
  std::unique_ptr<detail::WorkerPool<Job>> pool_;
};

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Handler handler) {
  if (!handler) return Status{StatusCode::invalid_argument, "the server needs a handler"};
  Service service(options.queue);
  service.default_handler(std::move(handler));
  return start(std::move(options), std::move(service));
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Service service) {
  std::vector<Service> services;
  services.push_back(std::move(service));
  return start(std::move(options), std::move(services));
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options,
                                              std::vector<Service> services) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(services));
  if (Status st = impl->start(); !st.ok()) return st;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() {
  if (impl_ && impl_->in_own_thread()) {
    // Destroyed from a handler or the I/O thread: stopping joins those very threads, so the
    // teardown finishes on a thread of its own.
    std::thread([impl = std::move(impl_)]() mutable { impl.reset(); }).detach();
    return;
  }
  stop();
}
void Server::stop() {
  impl_->stop();
}
void Server::set_serving(bool serving) {
  impl_->set_serving(serving);
}
bool Server::serving() const {
  return impl_->serving();
}
const std::string& Server::instance() const {
  return impl_->instance();
}
Status Server::wait() {
  return impl_->wait();
}
Server::Stats Server::stats() const {
  return impl_->stats();
}

}  // namespace amqprpc
