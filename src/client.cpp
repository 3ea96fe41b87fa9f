#include "amqprpc/client.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "amqp/connection.hpp"
#include "confirms.hpp"
#include "deadline_heap.hpp"
#include "log.hpp"
#include "metrics_recorder.hpp"
#include "uuid.hpp"
#include "wire.hpp"

namespace amqprpc {

using detail::Clock;

namespace {

// Where cancellations go: the client's I/O thread, through its outbox.
class CancelSink {
 public:
  virtual void request_cancel(const std::string& correlation_id) = 0;

 protected:
  ~CancelSink() = default;
};

class CancelRequest {
 public:
  CancelRequest(CancelSink& sink, std::string correlation_id)
      : sink_(&sink), correlation_id_(std::move(correlation_id)) {}
  void operator()() const { sink_->request_cancel(correlation_id_); }

 private:
  CancelSink* sink_;
  std::string correlation_id_;
};

struct PendingCall {
  std::string queue;
  std::string body;
  CallOptions options;
  std::chrono::milliseconds timeout{};
  Clock::time_point deadline;
  std::string correlation_id;
  std::variant<std::promise<Reply>, std::function<void(Reply)>> done;
  // Registered with options.cancel; unregistered when the call is destroyed.
  std::optional<std::stop_callback<CancelRequest>> on_cancel;
  std::size_t heap_index = detail::DeadlineHeap<PendingCall>::npos;
  bool sent = false;  // on the wire on the current connection
  Clock::time_point submitted;
  detail::LatencyRecorder* latency = nullptr;
  detail::ErrorCounter* errors = nullptr;
  std::uint64_t confirm_seq = 0;  // its publish number when confirming requests

  // Runs the caller's continuation. An exception from a callback must not unwind through the
  // I/O loop: it is logged and dropped.
  void complete(Reply reply, const Logger& logger) {
    if (latency != nullptr) latency->record(Clock::now() - submitted);
    if (errors != nullptr && !reply.status.ok()) errors->count(reply.status.code());
    if (auto* p = std::get_if<std::promise<Reply>>(&done)) {
      p->set_value(std::move(reply));
      return;
    }
    auto& fn = std::get<std::function<void(Reply)>>(done);
    if (!fn) return;
    try {
      fn(std::move(reply));
    } catch (const std::exception& e) {
      detail::log(logger, LogLevel::error,
                  std::string("a call's completion callback threw: ") + e.what());
    } catch (...) {
      detail::log(logger, LogLevel::error, "a call's completion callback threw");
    }
  }
};

// Longer timeouts are clamped: time_point arithmetic must not overflow.
constexpr std::chrono::milliseconds kMaxTimeout = std::chrono::hours(24 * 30);

}  // namespace

class Client::Impl final : public detail::IoLoop::Hooks, private CancelSink {
 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)),
        loop_(endpoints(options_), options_.reconnect, *this, options_.logger) {}

  static std::vector<ConnectionOptions> endpoints(const ClientOptions& o) {
    std::vector<ConnectionOptions> all{o.connection};
    all.insert(all.end(), o.alternates.begin(), o.alternates.end());
    return all;
  }

  ~Impl() {
    loop_.stop();  // on_closing cancelled what was in flight, if connected
    // Held calls (disconnected or blocked) never saw on_closing; the loop is joined now.
    fail_all(StatusCode::cancelled, "the client was closed before the reply came");
    // Calls submitted after the loop's last turn.
    std::vector<std::unique_ptr<PendingCall>> left;
    {
      std::lock_guard lock(outbox_mutex_);
      left.swap(outbox_);
      closed_ = true;
    }
    for (auto& c : left)
      c->complete(Reply::error(StatusCode::cancelled, "the client was closed"), options_.logger);
  }

  Status start() { return loop_.start(); }

  void submit(std::unique_ptr<PendingCall> call) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    if (call->timeout <= std::chrono::milliseconds::zero()) {
      call->complete(Reply::error(StatusCode::invalid_argument,
                                  "timeout must be positive, got " +
                                      std::to_string(call->timeout.count()) + " ms"),
                     options_.logger);
      return;
    }
    call->timeout = std::min(call->timeout, kMaxTimeout);
    if (call->queue.size() > 255) {
      call->complete(Reply::error(StatusCode::invalid_argument, "queue name longer than 255 bytes"),
                     options_.logger);
      return;
    }
    call->deadline = Clock::now() + call->timeout;
    {
      std::lock_guard lock(outbox_mutex_);
      call->correlation_id = uuids_.next();
    }
    if (call->options.cancel.stop_possible()) {
      // May run at once, or on any thread later; the I/O thread also checks the token before
      // publishing, so a cancel that overtakes its call still counts.
      call->on_cancel.emplace(call->options.cancel, CancelRequest(*this, call->correlation_id));
    }
    bool was_empty = false;
    {
      std::lock_guard lock(outbox_mutex_);
      if (!closed_) {
        was_empty = outbox_.empty();
        outbox_.push_back(std::move(call));
        call = nullptr;
      }
    }
    if (call) {
      call->complete(Reply::error(StatusCode::cancelled, "the client was closed"), options_.logger);
      return;
    }
    if (was_empty) loop_.wake();
  }

  void request_cancel(const std::string& correlation_id) override {
    {
      std::lock_guard lock(outbox_mutex_);
      cancels_.push_back(correlation_id);
    }
    loop_.wake();
  }

  std::unique_ptr<PendingCall> make_call(const std::string& queue, std::string body,
                                         const CallOptions& options) {
    auto call = std::make_unique<PendingCall>();
    call->queue = queue;
    call->body = std::move(body);
    call->options = options;
    call->timeout = options.timeout.value_or(options_.default_timeout);
    call->submitted = Clock::now();
    call->latency = &latency_;
    call->errors = &errors_;
    return call;
  }

  bool in_io_thread() const { return loop_.in_io_thread(); }
  std::string reply_queue() const {
    std::lock_guard lock(reply_queue_mutex_);
    return reply_queue_;
  }

  Stats stats() const {
    Stats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.replies = replies_.load(std::memory_order_relaxed);
    s.timeouts = timeouts_.load(std::memory_order_relaxed);
    s.unroutable = unroutable_.load(std::memory_order_relaxed);
    s.late_replies = late_replies_.load(std::memory_order_relaxed);
    s.cancelled = cancelled_.load(std::memory_order_relaxed);
    s.duplicate_replies = duplicate_replies_.load(std::memory_order_relaxed);
    s.reconnects = loop_.reconnects();
    s.errors = errors_.snapshot();
    s.latency = latency_.snapshot();
    return s;
  }

  // ---- I/O thread ----

  Status on_open(detail::Session& session) override {
    std::string queue;
    if (options_.reply_mode == ReplyMode::direct_reply_to) {
      queue = std::string(detail::wire::kDirectReplyTo);
    } else {
      auto declared = session.declare_queue({"", false, true, true, {}});
      if (!declared) return declared.status();
      queue = *declared;
    }
    auto tag = session.consume(queue, /*no_ack=*/true, /*exclusive=*/true);
    if (!tag) return tag.status();
    if (options_.confirm_requests) {
      if (Status st = session.confirm_select(); !st.ok()) return st;
    }
    unconfirmed_.clear();
    blocked_ = false;
    broken_ = Status{};
    std::lock_guard lock(reply_queue_mutex_);
    reply_queue_ = queue;
    return {};
  }

  void on_wake(detail::Session* session) override {
    {
      std::lock_guard lock(outbox_mutex_);
      batch_.swap(outbox_);
      cancel_batch_.swap(cancels_);
    }
    if (held_.size() > 2 * pending_.size() + 64) {
      // Held calls that timed out or were cancelled leave stale ids behind: drop them.
      std::erase_if(held_, [this](const std::string& id) { return !pending_.count(id); });
    }
    const bool can_send = session != nullptr && broken_.ok() && !blocked_ && !loop_.suspect();
    std::optional<detail::Session::Cork> cork;
    if (can_send && batch_.size() + held_.size() > 1) cork.emplace(*session, true);
    if (can_send && !held_.empty()) {
      // Calls set aside while disconnected or blocked go first, in their order.
      auto held = std::move(held_);
      held_.clear();
      for (const auto& id : held) {
        auto it = pending_.find(id);
        if (it != pending_.end() && !it->second->sent) send(*session, *it->second);
      }
    }
    for (auto& call : batch_) {
      if (call->options.cancel.stop_requested()) {
        call->complete(Reply::error(StatusCode::cancelled, "cancelled before it was sent"),
                       options_.logger);
      } else if (can_send) {
        PendingCall& accepted = accept(std::move(call));
        send(*session, accepted);
      } else if (session != nullptr && !broken_.ok()) {
        call->complete(Reply{broken_, {}, {}, {}}, options_.logger);
      } else if (blocked_ && options_.when_blocked == BlockedPolicy::fail) {
        call->complete(
            Reply::error(StatusCode::resource_exhausted,
                         "the broker blocks publishing (" + blocked_reason_ + "); not sent"),
            options_.logger);
      } else if (session == nullptr && (!call->options.idempotent || !loop_.reconnecting())) {
        call->complete(Reply::error(StatusCode::unavailable, not_connected()), options_.logger);
      } else {
        // Blocked (policy wait), a silent connection, or idempotent while reconnecting: hold.
        held_.push_back(call->correlation_id);
        accept(std::move(call));
      }
    }
    batch_.clear();
    cork.reset();
    for (const auto& id : cancel_batch_) {
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;  // already completed
      auto call = take(it);
      cancelled_.fetch_add(1, std::memory_order_relaxed);
      call->complete(Reply::error(StatusCode::cancelled, "cancelled by the caller"),
                     options_.logger);
    }
    cancel_batch_.clear();
  }

  std::string not_connected() const {
    std::string why = loop_.lost_reason().message();
    return loop_.reconnecting() ? "not connected (reconnecting after: " + why + ")"
                                : "not connected: " + why;
  }

  // Takes a call into the table and the deadline heap: from now on the I/O thread owns it.
  PendingCall& accept(std::unique_ptr<PendingCall> call) {
    PendingCall& ref = *call;
    deadlines_.push(call.get());
    std::string key = call->correlation_id;
    pending_.emplace(std::move(key), std::move(call));
    return ref;
  }

  // Publishes an accepted call; a call that cannot be published completes here.
  void send(detail::Session& session, PendingCall& call) {
    Status st = publish(session, call);
    if (!st.ok() && st.code() == StatusCode::unavailable && call.options.idempotent &&
        options_.reconnect.enabled) {
      // The connection broke under this publish: an idempotent call waits for the next one.
      call.sent = false;
      held_.push_back(call.correlation_id);
      return;
    }
    if (!st.ok()) {
      auto owned = take(pending_.find(call.correlation_id));
      owned->complete(Reply{st, {}, {}, {}}, options_.logger);
    }
  }

  Status publish(detail::Session& session, PendingCall& call) {
    detail::Properties props;
    props.correlation_id = call.correlation_id;
    props.reply_to = reply_queue_;
    props.content_type = call.options.content_type;
    props.priority = call.options.priority;
    props.headers = call.options.headers;
    // The broker drops a request nobody waits for any more; servers can skip expired work.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(call.deadline - Clock::now());
    if (left.count() < 1) left = std::chrono::milliseconds(1);
    props.expiration = std::to_string(left.count());
    auto deadline_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           (std::chrono::system_clock::now() + left).time_since_epoch())
                           .count();
    props.headers.insert_or_assign(std::string(detail::wire::kDeadlineHeader),
                                   std::to_string(deadline_ms));
    if (Status bad = detail::wire::validate_outgoing(props, call.body.size(), session.frame_max(),
                                                     "request");
        !bad.ok()) {
      return bad;
    }
    Status st = session.publish("", call.queue, /*mandatory=*/true, props, call.body);
    if (!st.ok()) return Status{StatusCode::unavailable, st.message()};
    call.sent = true;
    if (options_.confirm_requests) {
      call.confirm_seq = session.last_publish_seq();
      unconfirmed_.emplace(call.confirm_seq, call.correlation_id);
    }
    // Keep the body only while it may have to be sent again.
    if (!call.options.idempotent) {
      call.body.clear();
      call.body.shrink_to_fit();
    }
    return {};
  }

  void on_delivery(detail::Session&, detail::Delivery&& d) override {
    auto it = pending_.find(d.props.correlation_id);
    if (it == pending_.end()) {
      late_replies_.fetch_add(1, std::memory_order_relaxed);
      if (recent_.count(d.props.correlation_id)) {
        duplicate_replies_.fetch_add(1, std::memory_order_relaxed);
      }
      detail::log(options_.logger, LogLevel::debug,
                  "dropped a reply with unknown correlation id '" + d.props.correlation_id + "'");
      return;
    }
    auto call = take(it);
    replies_.fetch_add(1, std::memory_order_relaxed);
    call->complete(detail::wire::decode_reply(std::move(d.props), std::move(d.body)),
                   options_.logger);
  }

  void on_return(detail::Returned&& r) override {
    auto it = pending_.find(r.props.correlation_id);
    if (it == pending_.end()) return;
    auto call = take(it);
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    call->complete(
        Reply::error(StatusCode::unavailable, "no route to queue '" + call->queue +
                                                  "': the broker has no such queue (" +
                                                  std::to_string(r.reply_code) + " " +
                                                  r.reply_text + "); is a server running?"),
        options_.logger);
  }

  std::optional<Clock::time_point> next_deadline() override {
    if (deadlines_.empty()) return std::nullopt;
    return deadlines_.top()->deadline;
  }

  void on_timer(Clock::time_point now) override {
    while (!deadlines_.empty() && deadlines_.top()->deadline <= now) {
      auto it = pending_.find(deadlines_.top()->correlation_id);
      auto call = take(it);
      timeouts_.fetch_add(1, std::memory_order_relaxed);
      call->complete(Reply::error(StatusCode::deadline_exceeded,
                                  "no reply from queue '" + call->queue + "' within " +
                                      std::to_string(call->timeout.count()) + " ms"),
                     options_.logger);
    }
  }

  void on_consumer_cancelled(const std::string&) override {
    // The reply queue is gone (deleted, or its node left the cluster): no reply can come back.
    broken_ = Status{StatusCode::unavailable,
                     "the broker cancelled this client's reply consumer on '" + reply_queue_ +
                         "' (queue deleted?); no replies can arrive"};
    detail::log(options_.logger, LogLevel::error, broken_.message());
    fail_all(StatusCode::unavailable, broken_.message());
    // A new connection brings a new reply queue.
    if (options_.reconnect.enabled) loop_.drop(broken_);
  }

  void on_lost(const Status& why) override {
    const std::string message = "connection lost before the reply came: " + why.message();
    // The broker closing us for lack of permission is not a network problem: say so.
    const StatusCode code = why.code() == StatusCode::permission_denied
                                ? StatusCode::permission_denied
                                : StatusCode::unavailable;
    unconfirmed_.clear();
    blocked_ = false;
    held_.clear();
    std::vector<std::unique_ptr<PendingCall>> failed;
    for (auto it = pending_.begin(); it != pending_.end();) {
      PendingCall& call = *it->second;
      if (call.options.idempotent && loop_.reconnecting()) {
        // Safe to send again once reconnected, within its deadline.
        call.sent = false;
        held_.push_back(call.correlation_id);
        ++it;
      } else {
        deadlines_.remove(&call);
        remember(call.correlation_id);
        failed.push_back(std::move(it->second));
        it = pending_.erase(it);
      }
    }
    for (auto& call : failed) call->complete(Reply::error(code, message), options_.logger);
  }

  void on_blocked(bool blocked, const std::string& reason) override {
    blocked_ = blocked;
    blocked_reason_ = reason;
    if (blocked && options_.when_blocked == BlockedPolicy::fail) {
      // Held calls would wait for an unblock that may never come within their deadlines.
      for (const auto& id : held_) {
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;
        auto call = take(it);
        call->complete(Reply::error(StatusCode::resource_exhausted,
                                    "the broker blocks publishing (" + reason + "); not sent"),
                       options_.logger);
      }
      held_.clear();
    }
    if (!blocked) loop_.wake();  // send what was held
  }

  void on_confirm(std::uint64_t seq, bool multiple, bool ack) override {
    auto settled = detail::take_confirmed(unconfirmed_, seq, multiple);
    if (ack) return;  // taken: the call goes on waiting for its reply
    for (const auto& id : settled) {
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      auto call = take(it);
      call->complete(
          Reply::error(StatusCode::unavailable, "the broker refused the request to '" +
                                                    call->queue + "' (publisher confirm: nack)"),
          options_.logger);
    }
  }

  void on_closing(detail::Session&) override {
    fail_all(StatusCode::cancelled, "the client was closed before the reply came");
  }

 private:
  // Takes a call out of the table and the deadline heap.
  std::unique_ptr<PendingCall> take(
      std::unordered_map<std::string, std::unique_ptr<PendingCall>>::iterator it) {
    auto call = std::move(it->second);
    pending_.erase(it);
    deadlines_.remove(call.get());
    remember(call->correlation_id);
    return call;
  }

  // The last few thousand finished calls: a reply for one of them is a duplicate (a request
  // processed twice after a redelivery), not a stray.
  void remember(const std::string& id) {
    if (recent_order_.size() >= kRecent) {
      recent_.erase(recent_order_.front());
      recent_order_.pop_front();
    }
    if (recent_.insert(id).second) recent_order_.push_back(id);
  }
  static constexpr std::size_t kRecent = 4096;

  void fail_all(StatusCode code, const std::string& message) {
    auto pending = std::move(pending_);
    pending_.clear();
    deadlines_.clear();
    held_.clear();
    for (auto& [id, call] : pending) call->complete(Reply::error(code, message), options_.logger);
  }

  ClientOptions options_;
  detail::IoLoop loop_;

  std::mutex outbox_mutex_;
  std::vector<std::unique_ptr<PendingCall>> outbox_;
  std::vector<std::string> cancels_;
  detail::UuidGenerator uuids_;
  bool closed_ = false;

  // I/O thread only.
  std::vector<std::unique_ptr<PendingCall>> batch_;
  std::vector<std::string> cancel_batch_;
  std::unordered_map<std::string, std::unique_ptr<PendingCall>> pending_;
  detail::DeadlineHeap<PendingCall> deadlines_;
  Status broken_;                  // set when replies can no longer arrive on this connection
  std::vector<std::string> held_;  // accepted, not sent: disconnected (idempotent) or blocked
  bool blocked_ = false;
  std::string blocked_reason_;
  std::map<std::uint64_t, std::string> unconfirmed_;  // publish number -> correlation id
  std::unordered_set<std::string> recent_;
  detail::LatencyRecorder latency_;
  detail::ErrorCounter errors_;
  std::deque<std::string> recent_order_;

  mutable std::mutex reply_queue_mutex_;
  std::string reply_queue_;

  std::atomic<std::uint64_t> calls_{0}, replies_{0}, timeouts_{0}, unroutable_{0}, late_replies_{0},
      cancelled_{0}, duplicate_replies_{0};
};

Result<std::unique_ptr<Client>> Client::connect(ClientOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (Status st = impl->start(); !st.ok()) return st;
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() {
  if (impl_ && impl_->in_io_thread()) {
    // Destroyed from one of its own callbacks: the I/O thread is still inside Impl. Finish the
    // teardown on another thread once this callback has returned.
    std::thread([impl = std::move(impl_)]() mutable { impl.reset(); }).detach();
  }
}

std::future<Reply> Client::async_call(const std::string& queue, std::string body,
                                      const CallOptions& options) {
  auto call = impl_->make_call(queue, std::move(body), options);
  auto& promise = call->done.emplace<std::promise<Reply>>();
  auto future = promise.get_future();
  impl_->submit(std::move(call));
  return future;
}

void Client::async_call(const std::string& queue, std::string body, const CallOptions& options,
                        std::function<void(Reply)> on_done) {
  auto call = impl_->make_call(queue, std::move(body), options);
  call->done = std::move(on_done);
  impl_->submit(std::move(call));
}

Reply Client::try_call(const std::string& queue, std::string body, const CallOptions& options) {
  if (impl_->in_io_thread()) {
    return Reply::error(StatusCode::failed_precondition,
                        "a blocking call from the client's own callback would deadlock");
  }
  return async_call(queue, std::move(body), options).get();
}

std::string Client::call(const std::string& queue, std::string body, const CallOptions& options) {
  Reply reply = try_call(queue, std::move(body), options);
  if (!reply.status.ok()) throw RpcError(reply.status);
  return std::move(reply.body);
}

std::string Client::reply_queue() const {
  return impl_->reply_queue();
}
Client::Stats Client::stats() const {
  return impl_->stats();
}

}  // namespace amqprpc
