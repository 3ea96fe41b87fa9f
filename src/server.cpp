#include "amqprpc/server.hpp"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <vector>

#include "amqp/connection.hpp"
#include "log.hpp"
#include "wire.hpp"
#include "worker_pool.hpp"

namespace amqprpc {

namespace {

// A finished request on its way back through the I/O thread.
struct Outgoing {
  std::uint64_t delivery_tag = 0;
  std::string reply_to;
  detail::Properties props;
  std::string body;
};

}  // namespace

class Server::Impl final : public detail::IoLoop::Hooks {
 public:
  Impl(ServerOptions options, Handler handler)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        loop_(options_.connection, *this, options_.logger),
        pool_(options_.workers == 0
                  ? nullptr
                  : std::make_unique<detail::WorkerPool<detail::Delivery>>(
                        options_.workers, [this](detail::Delivery& d) { handle(d); })) {}

  ~Impl() {
    stop();
    std::lock_guard lock(stopper_mutex_);
    if (stopper_.joinable()) stopper_.join();
  }

  Status start() {
    if (!handler_) return {StatusCode::invalid_argument, "the server needs a handler"};
    if (options_.queue.empty() || options_.queue.size() > 255) {
      return {StatusCode::invalid_argument, "queue name must be 1 to 255 bytes"};
    }
    if (options_.prefetch == 0) {
      return {StatusCode::invalid_argument,
              "prefetch must be at least 1 (0 would mean unbounded work in hand)"};
    }
    return loop_.start();
  }

  void stop() {
    if (loop_.in_io_thread() || (pool_ && pool_->is_worker())) {
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
      // Requests queued in the pool but never started are not acked: closing the channel hands
      // them back to the broker for other servers. Work in hand finishes and is flushed by
      // on_closing before the connection closes.
      if (pool_) pool_->stop();
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
    return s;
  }

  // ---- worker threads ----

  void handle(detail::Delivery& d) {
    Request req;
    req.queue = options_.queue;
    req.body = std::move(d.body);
    req.content_type = std::move(d.props.content_type);
    req.correlation_id = d.props.correlation_id;
    req.reply_to = d.props.reply_to;
    req.headers = std::move(d.props.headers);
    req.redelivered = d.redelivered;

    Reply reply;
    try {
      reply = handler_(req);
    } catch (const std::exception& e) {
      reply = Reply::error(StatusCode::internal, e.what());
    } catch (...) {
      reply = Reply::error(StatusCode::internal, "the handler threw a non-standard exception");
    }
    (reply.status.ok() ? replied_ok_ : replied_error_).fetch_add(1, std::memory_order_relaxed);

    Outgoing out;
    out.delivery_tag = d.delivery_tag;
    out.reply_to = std::move(req.reply_to);
    detail::wire::encode_reply(std::move(reply), req.correlation_id, out.props, out.body);
    bool was_empty;
    {
      std::lock_guard lock(outbox_mutex_);
      was_empty = outbox_.empty();
      outbox_.push_back(std::move(out));
    }
    if (was_empty) loop_.wake();
  }

  // ---- I/O thread ----

  Status on_open(detail::Session& session) override {
    if (Status st = session.qos(options_.prefetch); !st.ok()) return st;
    auto declared = session.declare_queue({options_.queue, options_.durable, false, false});
    if (!declared) return declared.status();
    auto tag = session.consume(options_.queue, /*no_ack=*/false, /*exclusive=*/false);
    if (!tag) return tag.status();
    consumer_tag_ = *tag;
    return {};
  }

  void on_wake(detail::Session* session) override {
    {
      std::lock_guard lock(outbox_mutex_);
      batch_.swap(outbox_);
    }
    if (session != nullptr) {
      detail::Session::Cork cork(*session, batch_.size() > 1);
      for (auto& out : batch_) send(*session, out);
    }  // else: not acked, the broker requeues them
    batch_.clear();
  }

  void send(detail::Session& session, Outgoing& out) {
    if (Status bad = detail::wire::validate_outgoing(out.props, out.body.size(),
                                                     session.frame_max(), "the handler's reply");
        !bad.ok()) {
      // Sending it would break the connection; the caller learns why instead.
      detail::log(options_.logger, LogLevel::error, bad.message());
      std::string correlation_id = std::move(out.props.correlation_id);
      out.props = {};
      detail::wire::encode_reply(Reply::error(StatusCode::internal, bad.message()), correlation_id,
                                 out.props, out.body);
    }
    // Reply first, then ack: a crash in between leads to a redelivery, never a lost request.
    if (session.publish("", out.reply_to, /*mandatory=*/false, out.props, out.body).ok()) {
      session.ack(out.delivery_tag);
    }
  }

  void on_delivery(detail::Session& session, detail::Delivery&& d) override {
    received_.fetch_add(1, std::memory_order_relaxed);
    if (d.props.reply_to.empty()) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      if (!warned_no_reply_to_) {
        warned_no_reply_to_ = true;
        detail::log(options_.logger, LogLevel::warning,
                    "rejected a request on '" + options_.queue +
                        "' without reply_to (nowhere to answer); further ones are rejected "
                        "silently");
      }
      session.reject(d.delivery_tag, /*requeue=*/false);
      return;
    }
    if (pool_) {
      incoming_.push_back(std::move(d));  // handed to the pool in one go by on_pumped
    } else {
      handle(d);  // inline: the reply goes out on this loop's next turn
    }
  }

  void on_pumped(detail::Session&) override {
    if (incoming_.empty()) return;
    // The pool refuses only while stopping: those requests stay unacked and go back to the queue.
    pool_->submit_all(incoming_);
    incoming_.clear();
  }

  void on_consumer_cancelled(const std::string&) override {
    detail::log(options_.logger, LogLevel::error,
                "the broker cancelled the consumer of '" + options_.queue +
                    "' (queue deleted?); this server no longer receives requests");
    finish(Status{StatusCode::unavailable, "queue '" + options_.queue + "' was deleted"});
  }

  void on_lost(const Status& why) override { finish(why); }

  void on_closing(detail::Session& session) override { on_wake(&session); }

 private:
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
  Handler handler_;
  detail::IoLoop loop_;

  std::mutex outbox_mutex_;
  std::vector<Outgoing> outbox_;

  // I/O thread only.
  std::vector<Outgoing> batch_;
  std::vector<detail::Delivery> incoming_;
  std::string consumer_tag_;
  bool warned_no_reply_to_ = false;

  std::once_flag stop_once_;
  std::mutex stopper_mutex_;
  std::thread stopper_;
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  Status done_status_;

  std::atomic<std::uint64_t> received_{0}, replied_ok_{0}, replied_error_{0}, rejected_{0};

  // Null when handlers run inline on the I/O thread. Last: its threads use the members above.
  std::unique_ptr<detail::WorkerPool<detail::Delivery>> pool_;
};

Result<std::unique_ptr<Server>> Server::start(ServerOptions options, Handler handler) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(handler));
  if (Status st = impl->start(); !st.ok()) return st;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() {
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
