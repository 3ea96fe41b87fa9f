#include "amqprpc/server.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <future>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "amqp/connection.hpp"
#include "confirms.hpp"
#include "log.hpp"
#include "metrics_recorder.hpp"
#include "wire.hpp"
#include "worker_pool.hpp"

namespace amqprpc {

namespace {

// A request on its way to a handler.
struct Job {
  detail::Delivery delivery;
  std::size_t route = 0;
  std::uint64_t generation = 0;  // the connection it came on: tags die with their connection
};

// A finished request on its way back through the I/O thread: the reply (if any), then the ack.
struct Outgoing {
  std::uint64_t delivery_tag = 0;
  std::uint64_t generation = 0;
  bool has_reply = true;
  std::string reply_to;
  detail::Properties props;
  std::string body;
};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

class Server::Impl final : public detail::IoLoop::Hooks {
 public:
  Impl(ServerOptions options, std::vector<Route> routes)
      : options_(std::move(options)),
        routes_(std::move(routes)),
        loop_(endpoints(options_), options_.reconnect, *this, options_.logger),
        pool_(options_.workers == 0 ? nullptr
                                    : std::make_unique<detail::WorkerPool<Job>>(
                                          options_.workers, [this](Job& j) { handle(j); })) {
    if (options_.dead_letter_queue.empty() && !routes_.empty()) {
      options_.dead_letter_queue = routes_.front().queue + ".dead-letter";
    }
  }

  static std::vector<ConnectionOptions> endpoints(const ServerOptions& o) {
    std::vector<ConnectionOptions> all{o.connection};
    all.insert(all.end(), o.alternates.begin(), o.alternates.end());
    return all;
  }

  ~Impl() {
    stop();
    std::lock_guard lock(stopper_mutex_);
    if (stopper_.joinable()) stopper_.join();
  }

  Status start() {
    if (routes_.empty()) return {StatusCode::invalid_argument, "the server needs a queue to serve"};
    for (const auto& r : routes_) {
      if (!r.handler) {
        return {StatusCode::invalid_argument, "queue '" + r.queue + "' has no handler"};
      }
      if (r.queue.empty() || r.queue.size() > 255) {
        return {StatusCode::invalid_argument, "queue name must be 1 to 255 bytes"};
      }
    }
    if (options_.prefetch == 0) {
      return {StatusCode::invalid_argument,
              "prefetch must be at least 1 (0 would mean unbounded work in hand)"};
    }
    if (options_.max_attempts < 0) {
      return {StatusCode::invalid_argument, "max_attempts must be 0 (off) or more"};
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
      auto cancelled = consumers_cancelled_.get_future();
      {
        std::lock_guard lock(outbox_mutex_);
        cancel_requested_ = true;
      }
      loop_.wake();
      if (loop_.connected()) cancelled.wait_for(std::chrono::seconds(10));
      // 2. Let running handlers finish; what no handler started goes back to the broker.
      if (pool_) {
        auto unstarted = pool_->stop();
        std::lock_guard lock(outbox_mutex_);
        for (auto& job : unstarted)
          requeue_.emplace_back(job.delivery.delivery_tag, job.generation);
      }
      // 3. on_closing sends the last replies, acks and requeues, then the connection closes.
      loop_.stop();
      finish(Status{});
    });
  }

  Status wait() {
    std::unique_lock lock(done_mutex_);
    done_cv_.wait(lock, [this] { return done_; });
    return done_status_;
  }

  Stats stats() const {
    Stats s;
    s.received = received_.load(std::memory_order_relaxed);
    s.replied_ok = replied_ok_.load(std::memory_order_relaxed);
    s.replied_error = replied_error_.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    s.expired = expired_.load(std::memory_order_relaxed);
    s.oversized = oversized_.load(std::memory_order_relaxed);
    s.redelivered = redelivered_.load(std::memory_order_relaxed);
    s.dead_lettered = dead_lettered_.load(std::memory_order_relaxed);
    s.requeued = requeued_.load(std::memory_order_relaxed);
    s.reconnects = loop_.reconnects();
    s.errors = errors_.snapshot();
    s.handler_latency = handler_latency_.snapshot();
    return s;
  }

  // ---- worker threads (or the I/O thread when handlers run inline) ----

  void handle(Job& job) {
    detail::Delivery& d = job.delivery;
    Outgoing out;
    out.delivery_tag = d.delivery_tag;
    out.generation = job.generation;
    if (expired(d.props.headers)) {
      // The caller has given up: computing the answer would only waste this worker.
      expired_.fetch_add(1, std::memory_order_relaxed);
      out.has_reply = false;
      push(std::move(out));
      return;
    }
    const Route& route = routes_[job.route];
    Request req;
    req.queue = route.queue;
    req.body = std::move(d.body);
    req.content_type = std::move(d.props.content_type);
    req.correlation_id = d.props.correlation_id;
    req.reply_to = d.props.reply_to;
    req.headers = std::move(d.props.headers);
    req.redelivered = d.redelivered;

    Reply reply;
    auto started = std::chrono::steady_clock::now();
    try {
      reply = route.handler(req);
    } catch (const std::exception& e) {
      reply = Reply::error(StatusCode::internal, e.what());
    } catch (...) {
      reply = Reply::error(StatusCode::internal, "the handler threw a non-standard exception");
    }
    handler_latency_.record(std::chrono::steady_clock::now() - started);
    if (!reply.status.ok()) errors_.count(reply.status.code());
    (reply.status.ok() ? replied_ok_ : replied_error_).fetch_add(1, std::memory_order_relaxed);
    out.reply_to = std::move(req.reply_to);
    detail::wire::encode_reply(std::move(reply), req.correlation_id, out.props, out.body);
    push(std::move(out));
  }

  // ---- I/O thread ----

  Status on_open(detail::Session& session) override {
    // A new connection: delivery tags and confirm numbers of the old one mean nothing here.
    generation_.fetch_add(1, std::memory_order_relaxed);
    route_of_tag_.clear();
    unconfirmed_.clear();
    session_for_confirms_ = nullptr;
    blocked_ = false;
    dead_letter_declared_ = false;
    if (Status st = session.qos(options_.prefetch); !st.ok()) return st;
    if (options_.confirm_replies) {
      if (Status st = session.confirm_select(); !st.ok()) return st;
    }
    for (std::size_t i = 0; i < routes_.size(); ++i) {
      auto declared = session.declare_queue(queue_spec(routes_[i].queue));
      if (!declared) return declared.status();
      auto tag = session.consume(routes_[i].queue, /*no_ack=*/false, /*exclusive=*/false);
      if (!tag) return tag.status();
      route_of_tag_[*tag] = i;
    }
    if (options_.max_attempts > 0) {
      // Declared now, so a dead-letter queue the broker refuses (declared differently, no
      // permission) is a start-up error, not a channel lost in the middle of serving.
      auto dlq = session.declare_queue(queue_spec(options_.dead_letter_queue));
      if (!dlq) return dlq.status();
      dead_letter_declared_ = true;
    }
    return {};
  }

  void on_wake(detail::Session* session) override {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> requeue;
    bool cancel = false;
    {
      std::lock_guard lock(outbox_mutex_);
      // Blocked, or silent for a heartbeat interval: replies wait in the outbox.
      if ((!blocked_ && !loop_.suspect()) || session == nullptr) {
        batch_.swap(outbox_);
        requeue.swap(requeue_);
      }
      cancel = cancel_requested_ && !cancel_done_;
      if (cancel) cancel_done_ = true;
    }
    if (session != nullptr) {
      detail::Session::Cork cork(*session, batch_.size() + requeue.size() > 1);
      for (auto& out : batch_) send(*session, out);
      for (auto [tag, generation] : requeue) {
        // Tags of an earlier connection are dead: the broker requeued those itself.
        if (generation != generation_.load(std::memory_order_relaxed)) continue;
        if (session->reject(tag, /*requeue=*/true).ok()) {
          requeued_.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }  // else: nothing can be acked any more; the broker requeues it all
    batch_.clear();
    if (cancel) {
      if (session != nullptr) {
        for (const auto& [tag, route] : route_of_tag_) session->cancel(tag);
      }
      consumers_cancelled_.set_value();
    }
  }

  void on_delivery(detail::Session& session, detail::Delivery&& d) override {
    received_.fetch_add(1, std::memory_order_relaxed);
    auto route = route_of_tag_.find(d.consumer_tag);
    if (route == route_of_tag_.end()) {  // not ours: cannot happen on our own channel
      session.reject(d.delivery_tag, /*requeue=*/true);
      return;
    }
    const std::string& queue = routes_[route->second].queue;
    if (d.props.reply_to.empty()) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      if (!warned_no_reply_to_) {
        warned_no_reply_to_ = true;
        detail::log(options_.logger, LogLevel::warning,
                    "rejected a request on '" + queue +
                        "' without reply_to (nowhere to answer); further ones are rejected "
                        "silently");
      }
      session.reject(d.delivery_tag, /*requeue=*/false);
      return;
    }
    if (d.redelivered) redelivered_.fetch_add(1, std::memory_order_relaxed);
    if (options_.max_attempts > 0) {
      if (options_.queue_type != QueueType::quorum) {
        // Only quorum queues count deliveries; on a classic queue this header came from a client.
        d.props.headers.erase(std::string(detail::wire::kDeliveryCountHeader));
      }
      std::int64_t attempt = detail::wire::attempt_of(d.props.headers, d.redelivered);
      if (attempt > options_.max_attempts) {
        dead_letter(session, std::move(d), queue, attempt);
        return;
      }
      if (d.redelivered && !d.props.headers.count(detail::wire::kDeliveryCountHeader)) {
        // Classic queues do not count deliveries: carry the count in the message itself.
        recount(session, std::move(d), queue, attempt);
        return;
      }
    }
    if (expired(d.props.headers)) {
      expired_.fetch_add(1, std::memory_order_relaxed);
      session.ack(d.delivery_tag);
      return;
    }
    if (d.body.size() > options_.max_request_size) {
      oversized_.fetch_add(1, std::memory_order_relaxed);
      reply_error_now(session, d,
                      Status{StatusCode::resource_exhausted,
                             "request body is " + std::to_string(d.body.size()) +
                                 " bytes; this server takes at most " +
                                 std::to_string(options_.max_request_size)});
      return;
    }
    Job job{std::move(d), route->second, generation_.load(std::memory_order_relaxed)};
    if (pool_) {
      incoming_.push_back(std::move(job));  // handed to the pool in one go by on_pumped
    } else {
      handle(job);  // inline: the reply goes out on this loop's next turn
    }
  }

  void on_pumped(detail::Session& session) override {
    if (incoming_.empty()) return;
    if (!pool_->submit_all(incoming_)) {
      // Stopping: these were never started, so they go back to the broker at once.
      for (auto& job : incoming_) {
        if (session.reject(job.delivery.delivery_tag, /*requeue=*/true).ok()) {
          requeued_.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
    incoming_.clear();
  }

  void on_consumer_cancelled(const std::string& tag) override {
    auto route = route_of_tag_.find(tag);
    std::string queue = route == route_of_tag_.end() ? tag : routes_[route->second].queue;
    detail::log(options_.logger, LogLevel::error,
                "the broker cancelled the consumer of '" + queue +
                    "' (queue deleted?); this server no longer receives its requests");
    finish(Status{StatusCode::unavailable, "queue '" + queue + "' was deleted"});
  }

  void on_lost(const Status& why) override {
    unconfirmed_.clear();
    session_for_confirms_ = nullptr;
    blocked_ = false;
    incoming_.clear();  // unacked on a dead connection: the broker has requeued them
    if (!options_.reconnect.enabled) finish(why);
  }

  void on_blocked(bool blocked, const std::string&) override {
    blocked_ = blocked;
    if (!blocked) loop_.wake();
  }

  void on_confirm(std::uint64_t seq, bool multiple, bool ack) override {
    auto tags = detail::take_confirmed(unconfirmed_, seq, multiple);
    if (!session_for_confirms_) return;
    for (auto tag : tags) {
      // Confirmed: the request is done. Refused: hand it back to be tried again.
      if (ack) {
        session_for_confirms_->ack(tag);
      } else {
        session_for_confirms_->reject(tag, /*requeue=*/true);
      }
    }
  }

  void on_closing(detail::Session& session) override { on_wake(&session); }

  // Replies sent but not yet confirmed: their requests are acked when the confirms arrive.
  bool closing_needs_more() override { return !unconfirmed_.empty(); }

 private:
  detail::QueueSpec queue_spec(const std::string& name) const {
    detail::QueueSpec spec{name, options_.durable, false, false, {}};
    if (options_.queue_type == QueueType::quorum) {
      spec.durable = true;
      spec.arguments["x-queue-type"] = "quorum";
    }
    return spec;
  }

  static bool expired(const Headers& headers) {
    auto deadline = detail::wire::int_header(headers, detail::wire::kDeadlineHeader);
    return deadline && *deadline < now_ms();
  }

  void push(Outgoing&& out) {
    bool was_empty;
    {
      std::lock_guard lock(outbox_mutex_);
      was_empty = outbox_.empty();
      outbox_.push_back(std::move(out));
    }
    if (was_empty) loop_.wake();
  }

  void send(detail::Session& session, Outgoing& out) {
    const bool same_connection = out.generation == generation_.load(std::memory_order_relaxed);
    if (out.has_reply) {
      if (Status bad = detail::wire::validate_outgoing(out.props, out.body.size(),
                                                       session.frame_max(), "the handler's reply");
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
      if (!session.publish("", out.reply_to, /*mandatory=*/false, out.props, out.body).ok()) {
        return;
      }
      if (same_connection && options_.confirm_replies) {
        session_for_confirms_ = &session;
        unconfirmed_.emplace(session.last_publish_seq(), out.delivery_tag);
        return;  // acked when the broker confirms the reply
      }
    }
    if (same_connection) session.ack(out.delivery_tag);
  }

  // Puts a redelivered request back at the end of its queue with its delivery count, so the
  // next crash is counted too; the original is acked once the copy is published.
  void recount(detail::Session& session, detail::Delivery&& d, const std::string& queue,
               std::int64_t attempt) {
    if (expired(d.props.headers)) {
      expired_.fetch_add(1, std::memory_order_relaxed);
      session.ack(d.delivery_tag);
      return;
    }
    d.props.headers.insert_or_assign(std::string(detail::wire::kAttemptsHeader),
                                     std::to_string(attempt));
    if (session.publish("", queue, /*mandatory=*/false, d.props, d.body).ok()) {
      session.ack(d.delivery_tag);
    }
  }

  void dead_letter(detail::Session& session, detail::Delivery&& d, const std::string& queue,
                   std::int64_t attempt) {
    const std::string& dlq = options_.dead_letter_queue;
    if (!dead_letter_declared_) {
      auto declared = session.declare_queue(queue_spec(dlq));
      if (!declared) {
        detail::log(
            options_.logger, LogLevel::error,
            "cannot declare dead-letter queue '" + dlq + "': " + declared.status().message());
        return;  // the session is unusable now; the request stays unacked and is requeued
      }
      dead_letter_declared_ = true;
    }
    const std::string why = "the request on '" + queue + "' was delivered " +
                            std::to_string(attempt) +
                            " times and its server crashed or lost its connection each time; "
                            "moved to dead-letter queue '" +
                            dlq + "'";
    detail::log(options_.logger, LogLevel::error, why);
    detail::Properties dead = d.props;
    dead.expiration.clear();  // kept for inspection, whatever the caller's deadline was
    dead.headers.insert_or_assign(std::string(detail::wire::kAttemptsHeader),
                                  std::to_string(attempt));
    dead.headers.insert_or_assign(std::string(detail::wire::kDeadReasonHeader), why);
    if (!session.publish("", dlq, /*mandatory=*/false, dead, d.body).ok()) return;
    dead_lettered_.fetch_add(1, std::memory_order_relaxed);
    reply_error_now(session, d, Status{StatusCode::internal, why});
  }

  // Answers a request with an error from the I/O thread (no handler involved), then acks it.
  void reply_error_now(detail::Session& session, const detail::Delivery& d, Status error) {
    replied_error_.fetch_add(1, std::memory_order_relaxed);
    errors_.count(error.code());
    Outgoing out;
    out.delivery_tag = d.delivery_tag;
    out.generation = generation_.load(std::memory_order_relaxed);
    out.reply_to = d.props.reply_to;
    detail::wire::encode_reply(Reply{std::move(error), {}, {}, {}}, d.props.correlation_id,
                               out.props, out.body);
    send(session, out);
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
  std::vector<Route> routes_;
  detail::IoLoop loop_;

  std::mutex outbox_mutex_;
  std::vector<Outgoing> outbox_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> requeue_;  // delivery tag, generation
  bool cancel_requested_ = false;
  bool cancel_done_ = false;
  std::promise<void> consumers_cancelled_;
  std::atomic<std::uint64_t> generation_{0};
  detail::LatencyRecorder handler_latency_;
  detail::ErrorCounter errors_;

  // I/O thread only.
  std::vector<Outgoing> batch_;
  std::vector<Job> incoming_;
  std::unordered_map<std::string, std::size_t> route_of_tag_;
  std::map<std::uint64_t, std::uint64_t> unconfirmed_;  // reply's publish number -> request tag
  detail::Session* session_for_confirms_ = nullptr;
  bool blocked_ = false;
  bool warned_no_reply_to_ = false;
  bool dead_letter_declared_ = false;

  std::once_flag stop_once_;
  std::mutex stopper_mutex_;
  std::thread stopper_;
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Status done_status_;

  std::atomic<std::uint64_t> received_{0}, replied_ok_{0}, replied_error_{0}, rejected_{0},
      expired_{0}, oversized_{0}, redelivered_{0}, dead_lettered_{0}, requeued_{0};

  // Null when handlers run inline on the I/O thread. Last: its threads use the members above.
  std::unique_ptr<detail::WorkerPool<Job>> pool_;
};

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Handler handler) {
  std::string queue = options.queue;
  return start(std::move(options), std::vector<Route>{{std::move(queue), std::move(handler)}});
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, std::vector<Route> routes) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(routes));
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
Status Server::wait() {
  return impl_->wait();
}
Server::Stats Server::stats() const {
  return impl_->stats();
}

}  // namespace amqprpc
