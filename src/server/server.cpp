#include "amqprpc/server.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <future>
#include <mutex>
#include <set>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "framework/reserved.hpp"
#include "io/confirm_tracker.hpp"
#include "io/io_loop.hpp"
#include "io/outbox.hpp"
#include "io/worker_pool.hpp"
#include "log.hpp"
#include "metrics_recorder.hpp"
#include "protocol/wire.hpp"
#include "server/triage.hpp"

namespace amqprpc {

namespace amqp = detail::amqp;

namespace {

// A request on its way to a handler.
struct Job {
  amqp::Delivery delivery;
  std::size_t route = 0;         // which service
  std::uint64_t generation = 0;  // the connection it came on: tags die with their connection
  std::int64_t attempt = 1;      // which delivery of the request this is
  std::string caller = {};       // verified (triage): the broker-validated user_id
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
};

Outgoing requeue_of(Job&& job) {
  return Outgoing{Settle::requeue,
                  job.delivery.delivery_tag,
                  job.generation,
                  {},
                  std::move(job.delivery.props),
                  std::move(job.delivery.body),
                  job.route,
                  job.attempt,
                  std::move(job.caller)};
}

std::vector<std::string> users(const std::vector<ConnectionOptions>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints) out.push_back(e.user);
  return out;
}

// What handlers touch, shared by the server and its worker threads: a thread that a bounded
// stop leaves behind (its handler would not return) keeps this alive, and finds the outbox
// closed when its handler finally returns.
struct Core {
  Core(std::vector<Service> s, std::function<void()> wake, Logger log)
      : services(std::move(s)), out(std::move(wake)), logger(std::move(log)) {}

  // On a worker thread, or on the I/O thread when handlers run inline.
  void handle(Job& job) {
    amqp::Delivery& d = job.delivery;
    if (detail::wire::expired(d.props.headers, detail::wire::epoch_ms())) {
      // The caller has given up while this waited for a worker: computing the answer would
      // only waste it.
      expired.fetch_add(1, std::memory_order_relaxed);
      out.push(Outgoing{Settle::ack, d.delivery_tag, job.generation, {}, {}, {}});
      return;
    }
    Outgoing reply_out{Settle::reply_then_ack, d.delivery_tag, job.generation, {}, {}, {}};
    const Service& service = services[job.route];
    Request req = detail::wire::decode_request(std::move(d), service.queue());
    req.caller = std::move(job.caller);
    Reply reply;
    if (Status refused = service.authorize(req.method, req.caller); !refused.ok()) {
      denied.fetch_add(1, std::memory_order_relaxed);
      reply = Reply{std::move(refused), {}, {}, {}};
    } else if (const Handler* handler = handler_for(service, req.method)) {
      auto started = std::chrono::steady_clock::now();
      try {
        reply = (*handler)(req);
      } catch (const RpcError& e) {
        reply = Reply{e.status(), {}, {}, {}};
      } catch (const std::exception& e) {
        reply = Reply::error(StatusCode::internal, e.what());
      } catch (...) {
        reply = Reply::error(StatusCode::internal, "the handler threw a non-standard exception");
      }
      handler_latency.record(std::chrono::steady_clock::now() - started);
    } else {
      unimplemented.fetch_add(1, std::memory_order_relaxed);
      reply = Reply::error(StatusCode::unimplemented, unimplemented_message(service, req.method));
    }
    if (req.oneway) {
      // Nothing goes back: the caller asked for none. A failure is only logged.
      oneway.fetch_add(1, std::memory_order_relaxed);
      if (!reply.status.ok()) {
        errors.count(reply.status.code());
        detail::log(logger, LogLevel::warning,
                    "one-way call of '" + req.method + "' on '" + service.queue() +
                        "' failed: " + reply.status.to_string());
      }
      out.push(Outgoing{Settle::ack, reply_out.delivery_tag, job.generation, {}, {}, {}});
      return;
    }
    count_reply(reply.status);
    reply_out.reply_to = std::move(req.reply_to);
    detail::wire::encode_reply(std::move(reply), req.correlation_id, reply_out.props,
                               reply_out.body);
    out.push(std::move(reply_out));
  }

  void count_reply(const Status& status) {
    if (!status.ok()) errors.count(status.code());
    (status.ok() ? replied_ok : replied_error).fetch_add(1, std::memory_order_relaxed);
  }

  static const Handler* handler_for(const Service& service, std::string_view method) {
    if (method.empty()) return service.default_method().handler ? &service.default_method().handler : nullptr;
    const Service::Method* m = service.find(method);
    return m != nullptr ? &m->handler : nullptr;
  }

  static std::string unimplemented_message(const Service& service, std::string_view method) {
    if (method.empty()) {
      return "service '" + service.name() + "' on '" + service.queue() +
             "' has no default handler: name a method (header x-rpc-method)";
    }
    return "service '" + service.name() + "' on '" + service.queue() + "' has no method '" +
           std::string(method) + "'";
  }

  const std::vector<Service> services;
  detail::Outbox<Outgoing> out;  // finished requests, to the I/O thread
  const Logger logger;
  detail::LatencyRecorder handler_latency;
  detail::ErrorCounter errors;
  std::atomic<std::uint64_t> replied_ok{0}, replied_error{0}, expired{0}, oneway{0},
      unimplemented{0}, denied{0};
};

}  // namespace

// Thread safety: start/stop/wait/stats from any thread (stop also from a handler); handle()
// on worker threads (or the I/O thread when handlers run inline); the hooks on the I/O thread.
// Workers hand finished requests to the I/O thread through the outbox.
class Server::Impl final : public detail::IoLoop::Hooks {
 public:
  Impl(ServerOptions options, std::vector<Service> services)
      : options_(std::move(options)),
        core_(std::make_shared<Core>(
            std::move(services), [this] { loop_.wake(); }, options_.logger)),
        policy_{options_.max_attempts, options_.queue_type == QueueType::quorum,
                options_.max_request_size, users(detail::endpoints_of(options_))},
        loop_(detail::endpoints_of(options_), options_.reconnect, *this, options_.logger) {
    if (options_.dead_letter_queue.empty() && !core_->services.empty()) {
      options_.dead_letter_queue =
          detail::wire::dead_letter_queue_for(core_->services.front().queue());
    }
    for (const auto& service : core_->services) {
      describe_bodies_.push_back(detail::describe_json(service));
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
    if (options_.workers > 0) {
      try {
        pool_ = std::make_unique<detail::WorkerPool<Job>>(
            options_.workers, [core = core_](Job& j) { core->handle(j); });
      } catch (const std::system_error& e) {
        return {StatusCode::resource_exhausted, "cannot start " + std::to_string(options_.workers) +
                                                    " worker threads: " + e.what()};
      }
    }
    return loop_.start();
  }

  bool in_own_thread() const { return loop_.in_io_thread() || (pool_ && pool_->is_worker()); }

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
      if (pool_) {
        auto stopped = pool_->stop(std::chrono::steady_clock::now() + options_.stop_grace);
        for (auto& job : stopped.unstarted) core_->out.push(requeue_of(std::move(job)));
        if (stopped.left_behind > 0) {
          detail::log(options_.logger, LogLevel::warning,
                      std::to_string(stopped.left_behind) +
                          " handler(s) still running after the stop grace of " +
                          std::to_string(options_.stop_grace.count()) +
                          " ms: their requests go back to the broker when the connection "
                          "closes, and their replies will be dropped");
        }
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
    s.reconnects = loop_.reconnects();
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
      link_.route_of_tag[*tag] = i;
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
    if (cancel_requested_.load(std::memory_order_acquire) && !cancel_sent_) {
      cancel_sent_ = true;
      if (channel != nullptr) {
        for (const auto& [tag, route] : link_.route_of_tag) {
          if (channel->cancel(tag).ok()) link_.cancels_pending.insert(tag);
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
    received_.fetch_add(1, std::memory_order_relaxed);
    auto route = link_.route_of_tag.find(d.consumer_tag);
    if (route == link_.route_of_tag.end()) {  // not ours: cannot happen on our own channel
      channel.reject(d.delivery_tag, /*requeue=*/true);
      return;
    }
    const std::string& queue = core_->services[route->second].queue();
    if (d.redelivered) redelivered_.fetch_add(1, std::memory_order_relaxed);
    if (options_.max_attempts > 0 && !policy_.quorum) {
      // Only quorum queues count deliveries; on a classic queue this header came from a client.
      d.props.headers.erase(std::string(detail::wire::kDeliveryCountHeader));
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
        reply_error_now(channel, d,
                        Status{StatusCode::resource_exhausted,
                               "request body is " + std::to_string(d.body.size()) +
                                   " bytes; this server takes at most " +
                                   std::to_string(options_.max_request_size)});
        return;
      case detail::Verdict::serve:
        break;
    }
    if (auto m = d.props.headers.find(detail::wire::kMethodHeader);
        m != d.props.headers.end() && m->second.starts_with(kReservedMethodPrefix)) {
      answer_reserved(channel, d, route->second, m->second);
      return;
    }
    Job job{std::move(d), route->second, generation_.load(std::memory_order_relaxed), t.attempt,
            t.caller};
    if (pool_) {
      link_.incoming.push_back(std::move(job));  // handed to the pool in one go after the read
    } else {
      core_->handle(job);  // inline: the reply goes out on this loop's next turn
    }
  }

  void on_read_batch(amqp::Channel&) override {
    loop_.io_thread.assert_held();
    if (link_.incoming.empty()) return;
    if (!pool_->submit_all(link_.incoming)) {
      // Stopping: these were never started, so they go back to the broker at once.
      // Through the outbox, like every publish: it waits while the connection may not publish.
      for (auto& job : link_.incoming) core_->out.push(requeue_of(std::move(job)));
    }
    link_.incoming.clear();
  }

  void on_consumer_cancelled(amqp::Channel&, const std::string& tag) override {
    loop_.io_thread.assert_held();
    auto route = link_.route_of_tag.find(tag);
    std::string queue =
        route == link_.route_of_tag.end() ? tag : core_->services[route->second].queue();
    detail::log(options_.logger, LogLevel::error,
                "the broker cancelled the consumer of '" + queue +
                    "' (queue deleted?); this server no longer receives its requests");
    finish(Status{StatusCode::unavailable, "queue '" + queue + "' was deleted"});
  }

  void on_lost(const Status& why) override {
    loop_.io_thread.assert_held();
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
  // What lives and dies with one connection.
  struct Link {
    std::unordered_map<std::string, std::size_t> route_of_tag;  // consumer tag -> route
    detail::ConfirmTracker<std::uint64_t> unconfirmed;  // reply's publish number -> request tag
    std::vector<Job> incoming;                          // read in this batch, for the worker pool
    std::set<std::string> cancels_pending;  // consumers cancelled, the broker's answer awaited
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
      auto seq = channel.publish("", out.reply_to, /*mandatory=*/false, out.props, out.body);
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
  // (unless the caller settles it otherwise).
  void reply_error_now(amqp::Channel& channel, const amqp::Delivery& d, Status error,
                       bool ack = true) REQUIRES(loop_.io_thread) {
    core_->count_reply(error);
    Outgoing out{ack ? Settle::reply_then_ack : Settle::reply_only,
                 d.delivery_tag,
                 generation_.load(std::memory_order_relaxed),
                 d.props.reply_to,
                 {},
                 {}};
    detail::wire::encode_reply(Reply{std::move(error), {}, {}, {}}, d.props.correlation_id,
                               out.props, out.body);
    settle(channel, out);
  }

  // The framework's own methods, answered here on the I/O thread so that a probe gets its
  // answer even while every worker is busy. Health says not_serving once a stop has begun.
  void answer_reserved(amqp::Channel& channel, const amqp::Delivery& d, std::size_t service,
                       const std::string& method) REQUIRES(loop_.io_thread) {
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
    settle(channel, out);
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
  detail::IoLoop loop_;

  std::atomic<bool> cancel_requested_{false};  // a stop has begun
  std::atomic<bool> serving_{true};            // set_serving
  std::vector<std::string> describe_bodies_;   // by service, computed once
  std::promise<void> cancel_sent_signal_;      // the I/O thread has sent the cancels
  std::promise<void> consumers_cancelled_;     // and the broker has answered them
  static constexpr std::chrono::seconds kCancelAnswerTimeout{2};
  std::atomic<std::uint64_t> generation_{0};  // of the connection; read by workers

  // I/O thread only.
  Link link_ GUARDED_BY(loop_.io_thread);
  std::vector<Outgoing> batch_ GUARDED_BY(loop_.io_thread);
  bool cancel_sent_ GUARDED_BY(loop_.io_thread) = false;
  bool cancel_signalled_ GUARDED_BY(loop_.io_thread) = false;
  bool warned_no_reply_to_ GUARDED_BY(loop_.io_thread) = false;

  std::once_flag stop_once_;
  std::mutex stopper_mutex_;
  std::thread stopper_;
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Status done_status_;

  std::atomic<std::uint64_t> received_{0}, rejected_{0}, oversized_{0}, redelivered_{0},
      dead_lettered_{0}, requeued_{0}, reserved_{0};

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
Status Server::wait() {
  return impl_->wait();
}
Server::Stats Server::stats() const {
  return impl_->stats();
}

}  // namespace amqprpc
