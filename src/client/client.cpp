#include "amqprpc/client.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "client/call_table.hpp"
#include "client/gather.hpp"
#include "client/retry.hpp"
#include "client/server_watch.hpp"
#include "io/confirm_tracker.hpp"
#include "io/io_loop.hpp"
#include "io/outbox.hpp"
#include "log.hpp"
#include "metrics_recorder.hpp"
#include "protocol/wire.hpp"
#include "uuid.hpp"

namespace amqprpc {

using detail::Clock;
using detail::PendingCall;
namespace amqp = detail::amqp;

namespace {

// Longer timeouts are clamped: time_point arithmetic must not overflow.
constexpr std::chrono::milliseconds kMaxTimeout = std::chrono::hours(24 * 30);

}  // namespace

// Thread safety: the public entry points (submit, request_cancel, stats, reply_queue) are safe
// from any thread; they hand work to the I/O thread through the outboxes. Everything under
// "I/O thread" runs there alone.
class Client::Impl final : public detail::IoLoop::Hooks,
                           private detail::CancelSink,
                           private detail::AttemptHost {
  // A call ended on a lent turn (send_lent), completed once the turn is over.
  struct Completion {
    std::unique_ptr<PendingCall> call;
    Reply reply;
  };

 public:
  explicit Impl(ClientOptions options)
      : options_(std::move(options)),
        loop_(detail::endpoints_of(options_), options_.reconnect, *this, options_.logger),
        calls_out_([this] { loop_.wake(); }),
        cancels_out_([this] { loop_.wake(); }),
        gathers_out_([this] { loop_.wake(); }),
        controls_out_(std::make_shared<detail::ControlOutbox>([this] { loop_.wake(); })),
        watch_(options_.server_check_interval),
        retries_(*this, loop_, options_, kMaxTimeout) {}

  ~Impl() {
    loop_.stop();                   // on_closing cancelled what was in flight, if connected
    loop_.io_thread.assert_held();  // the loop is joined: its state is this thread's now
    retries_.close();  // before the rest: no attempt may start another one from here on
    complete_ended();  // ended on the loop's last lent turn
    // The loop is joined: what it left is ours. Held calls (disconnected or blocked) never saw
    // on_closing; calls submitted after its last turn are still in the outbox.
    for (auto& call : table_.take_all()) {
      call->complete(
          Reply::error(StatusCode::cancelled, "the client was closed before the reply came"),
          options_.logger);
    }
    for (; batch_pos_ < batch_.size(); ++batch_pos_) {  // the unsent rest of a burst
      batch_[batch_pos_]->complete(Reply::error(StatusCode::cancelled, "the client was closed"),
                                   options_.logger);
    }
    for (auto& call : calls_out_.close()) {
      call->complete(Reply::error(StatusCode::cancelled, "the client was closed"), options_.logger);
    }
    for (auto& gather : gathers_.take_all()) {
      gather->finish({StatusCode::cancelled, "the client was closed"}, options_.logger);
    }
    for (auto& gather : gathers_out_.close()) {
      gather->finish({StatusCode::cancelled, "the client was closed"}, options_.logger);
    }
    cancels_out_.close();
    controls_out_->close();  // readers that outlive the client find it closed
  }

  Status start() {
    if (options_.server_check_interval < std::chrono::milliseconds::zero()) {
      return {StatusCode::invalid_argument, "server_check_interval must not be negative"};
    }
    return loop_.start();
  }

  void submit(std::unique_ptr<PendingCall> call) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    {
      detail::MutexLock lock(uuid_mutex_);
      call->correlation_id = uuids_.next();
      if (call->stream) call->stream->bind(call->correlation_id);
      // The call's span: a child of the caller's (a handler's context) or a new trace.
      const TraceContext* parent =
          call->options.trace && call->options.trace->valid() ? &*call->options.trace : nullptr;
      call->trace = detail::wire::new_span(parent, uuids_);
      if (parent != nullptr) call->parent_span_id = parent->span_id;
    }
    // A retry or hedging policy sends the call as attempts, each through launch(), from the I/O
    // thread (client/retry.hpp).
    if (retries_.take(call)) return;
    launch(std::move(call));
  }

  // Sends a call, or an attempt of one: interceptors, checks, its deadline, then the I/O thread.
  void launch(std::unique_ptr<PendingCall> call) {
    // Interceptors see every call, also those refused below.
    if (Status refused = call->intercept(options_.logger); !refused.ok()) {
      call->complete(Reply{std::move(refused), {}, {}, {}}, options_.logger);
      return;
    }
    call->timeout = call->options.timeout.value_or(options_.default_timeout);
    if (call->timeout <= std::chrono::milliseconds::zero()) {
      call->complete(Reply::error(StatusCode::invalid_argument,
                                  "timeout must be positive, got " +
                                      std::to_string(call->timeout.count()) + " ms"),
                     options_.logger);
      return;
    }
    call->timeout = std::min(call->timeout, kMaxTimeout);
    if (call->stream && (call->options.stream_window == 0 ||
                         call->options.stream_window > detail::wire::kMaxStreamCredit)) {
      call->complete(Reply::error(StatusCode::invalid_argument,
                                  "stream_window must be 1 to " +
                                      std::to_string(detail::wire::kMaxStreamCredit) + ", got " +
                                      std::to_string(call->options.stream_window)),
                     options_.logger);
      return;
    }
    if (Status bad = reserved_headers(call->options); !bad.ok()) {
      call->complete(Reply{std::move(bad), {}, {}, {}}, options_.logger);
      return;
    }
    if (call->queue.size() > 255) {
      call->complete(Reply::error(StatusCode::invalid_argument, "queue name longer than 255 bytes"),
                     options_.logger);
      return;
    }
    const auto now = Clock::now();
    call->deadline = now + call->timeout;
    if (call->options.deadline && *call->options.deadline < call->deadline) {
      // An absolute deadline, such as the one a handler's context passes on.
      if (*call->options.deadline <= now) {
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        call->complete(Reply::error(StatusCode::deadline_exceeded,
                                    "the call's deadline passed before it was sent"),
                       options_.logger);
        return;
      }
      call->deadline = *call->options.deadline;
      call->timeout = std::chrono::ceil<std::chrono::milliseconds>(call->deadline - now);
    }
    if (call->options.cancel.stop_possible()) {
      // May run at once, or on any thread later; the I/O thread also checks the token before
      // publishing, so a cancel that overtakes its call still counts.
      call->on_cancel.emplace(call->options.cancel,
                              detail::CancelRequest(*this, call->correlation_id));
    }
    using Pushed = detail::Outbox<std::unique_ptr<PendingCall>>::Pushed;
    switch (calls_out_.push_quietly(call)) {
      case Pushed::closed:
        call->complete(Reply::error(StatusCode::cancelled, "the client was closed"),
                       options_.logger);
        return;
      case Pushed::joined:
        return;  // the first call's submitter sends it or wakes the loop
      case Pushed::first:
        break;
    }
    PendingCall* const mine = call.get();  // moved into the outbox: only compared below
    std::optional<Completion> done;
    if (!send_lent(mine, done)) calls_out_.wake();
    if (done) {
      // Last, with a logger of its own: the callback may destroy the client.
      const Logger logger = options_.logger;
      done->call->complete(std::move(done->reply), logger);
    }
  }

  void submit_gather(std::unique_ptr<detail::GatherCall> gather) {
    gathers_started_.fetch_add(1, std::memory_order_relaxed);
    {
      detail::MutexLock lock(uuid_mutex_);
      gather->correlation_id = uuids_.next();
      const TraceContext* parent = gather->options.trace && gather->options.trace->valid()
                                       ? &*gather->options.trace
                                       : nullptr;
      gather->trace = detail::wire::new_span(parent, uuids_);
    }
    auto refuse = [&](std::string why) {
      gather->finish({StatusCode::invalid_argument, std::move(why)}, options_.logger);
    };
    gather->timeout = gather->options.timeout.value_or(options_.default_timeout);
    if (gather->timeout <= std::chrono::milliseconds::zero()) {
      return refuse("timeout must be positive, got " + std::to_string(gather->timeout.count()) +
                    " ms");
    }
    if (gather->queue.empty() || gather->queue.size() > 255) {
      return refuse("queue name must be 1 to 255 bytes");
    }
    if (Status bad = reserved_headers(gather->options); !bad.ok()) return refuse(bad.message());
    const auto now = Clock::now();
    gather->deadline = now + std::min(gather->timeout, kMaxTimeout);
    if (gather->options.deadline && *gather->options.deadline < gather->deadline) {
      if (*gather->options.deadline <= now) {
        gather->finish({StatusCode::deadline_exceeded,
                        "the gather's deadline passed before it "
                        "was sent"},
                       options_.logger);
        return;
      }
      gather->deadline = *gather->options.deadline;
    }
    gather->timeout = std::chrono::ceil<std::chrono::milliseconds>(gather->deadline - now);
    if (gather->options.cancel.stop_possible()) {
      gather->on_cancel.emplace(gather->options.cancel, std::function<void()>(detail::CancelRequest(
                                                            *this, gather->correlation_id)));
    }
    if (!gathers_out_.push(gather)) {
      gather->finish({StatusCode::cancelled, "the client was closed"}, options_.logger);
    }
  }

  std::unique_ptr<detail::GatherCall> make_gather(const std::string& queue,
                                                  const std::string& method, std::string body,
                                                  const CallOptions& options) {
    auto gather = std::make_unique<detail::GatherCall>();
    gather->queue = queue;
    gather->body = std::move(body);
    gather->options = options;
    gather->options.method = method;
    gather->submitted = Clock::now();
    return gather;
  }

  // Headers a caller may not set: servers trust x-rpc-attempts and x-rpc-caller only in their
  // own copies, by their user_id, which this client shares when it logs in as a server's user
  // (it must not be the tool that forges them); the stream headers are Client::stream's.
  static Status reserved_headers(const CallOptions& options) {
    for (std::string_view reserved :
         {detail::wire::kAttemptsHeader, detail::wire::kCallerHeader,
          detail::wire::kStreamCreditHeader, detail::wire::kStreamControlHeader}) {
      if (options.headers.count(reserved) != 0) {
        return {StatusCode::invalid_argument,
                "header '" + std::string(reserved) +
                    "' is written by servers or by Client::stream only (docs/PROTOCOL.md)"};
      }
    }
    return {};
  }

  void request_cancel(const std::string& correlation_id) override {
    cancels_out_.push(std::string(correlation_id));
  }

  std::unique_ptr<PendingCall> make_call(const std::string& queue, std::string body,
                                         const CallOptions& options) {
    auto call = std::make_unique<PendingCall>();
    call->queue = queue;
    call->body = std::move(body);
    call->options = options;
    call->submitted = Clock::now();
    // Only interceptors (spans) want the wall-clock start: a clock read saved per call.
    if (!options_.interceptors.empty()) call->start = std::chrono::system_clock::now();
    call->latency = &latency_;
    call->errors = &errors_;
    call->interceptors = &options_.interceptors;
    return call;
  }

  // A streaming call: a call whose completion is its stream's end.
  std::shared_ptr<detail::StreamState> submit_stream(const std::string& queue,
                                                     const std::string& method, std::string body,
                                                     const CallOptions& options,
                                                     std::function<void(Reply)> on_item,
                                                     std::function<void(Status)> on_done) {
    CallOptions o = options;
    o.method = method;
    // A stream is never sent twice: its items came from the first producer.
    o.retry = RetryPolicy{};
    o.hedging.reset();
    auto call = make_call(queue, std::move(body), o);
    streams_started_.fetch_add(1, std::memory_order_relaxed);
    auto state =
        std::make_shared<detail::StreamState>(std::string(), o.stream_window, controls_out_);
    if (on_item) state->use_callbacks(std::move(on_item), std::move(on_done));
    call->options.cancel = state->stop_token(options.cancel);
    call->stream = state;
    call->done = [state, logger = options_.logger](Reply last) {
      // The end of the stream; or a method that answered with one plain reply: a stream of
      // one item.
      const bool ended = last.headers.count(std::string(detail::wire::kStreamHeader)) != 0;
      if (!ended && last.status.ok()) {
        Status ok;
        state->deliver(std::move(last), logger);
        state->end(std::move(ok), logger);
        return;
      }
      state->end(last.status, logger);
    };
    submit(std::move(call));
    return state;
  }

  bool in_io_thread() const { return loop_.in_io_thread(); }
  std::string reply_queue() const {
    detail::MutexLock lock(reply_queue_mutex_);
    return reply_queue_;
  }

  Stats stats() const {
    Stats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.replies = replies_.load(std::memory_order_relaxed);
    s.timeouts = timeouts_.load(std::memory_order_relaxed);
    s.unroutable = unroutable_.load(std::memory_order_relaxed);
    s.no_server = no_server_.load(std::memory_order_relaxed);
    s.late_replies = late_replies_.load(std::memory_order_relaxed);
    s.cancelled = cancelled_.load(std::memory_order_relaxed);
    s.duplicate_replies = duplicate_replies_.load(std::memory_order_relaxed);
    s.reconnects = loop_.reconnects();
    const auto retry = retries_.counters();
    s.retries = retry.retries;
    s.hedges = retry.hedges;
    s.hedge_losses = retry.hedge_losses;
    s.cancelled += retry.cancelled;
    s.gathers = gathers_started_.load(std::memory_order_relaxed);
    s.streams = streams_started_.load(std::memory_order_relaxed);
    s.stream_items = stream_items_.load(std::memory_order_relaxed);
    s.errors = errors_.snapshot();
    s.latency = latency_.snapshot();
    return s;
  }

  // ---- I/O thread ----

  Status on_open(amqp::Channel& channel) override {
    loop_.io_thread.assert_held();
    link_ = Link{};
    watch_.reset();  // what was asked on the last connection will not be answered
    probe_owners_.clear();
    std::string queue;
    if (options_.reply_mode == ReplyMode::direct_reply_to) {
      queue = std::string(detail::wire::kDirectReplyTo);
    } else {
      auto declared = channel.declare_queue(amqp::QueueSpec::of_this_connection(""));
      if (!declared) return declared.status();
      queue = *declared;
    }
    auto tag = channel.consume(queue, /*no_ack=*/true, /*exclusive=*/true);
    if (!tag) return tag.status();
    if (options_.confirm_requests) {
      if (Status st = channel.confirm_select(); !st.ok()) return st;
    }
    link_.reply_queue = queue;
    detail::MutexLock lock(reply_queue_mutex_);
    reply_queue_ = queue;
    return {};
  }

  // Calls submitted while the I/O thread sleeps: sent right here, on the submitting thread, in
  // the loop's lent turn, without waiting for the loop to wake. If the submitter's own call
  // (`mine`) ends at once (a one-way call sent, a publish that failed), it is left in `done` for
  // the submitter to complete once the turn is over; other calls that end there (another thread's,
  // an attempt of a retry policy) are completed by the loop (ended_). False: the loop sends
  // them (it is awake or busy, or cannot send now).
  bool send_lent(const PendingCall* mine, std::optional<Completion>& done) {
    return loop_.lend([&](amqp::Channel& channel) {
      loop_.io_thread.assert_held();  // lent: this thread holds the loop's turn
      // Only with nothing else in flight: a lone caller's request leaves at once, while the
      // loop batches the requests of busy clients (one send a turn) more cheaply.
      if (!table_.empty() || !link_.replies_lost.ok() || !loop_.can_publish()) return false;
      lent_ = Lent{mine, &done};
      try {
        send_calls(&channel, true);
      } catch (...) {
        lent_.reset();
        throw;
      }
      lent_.reset();
      return true;
    });
  }

  // The calls of other threads that ended on a lent turn (end_call), completed on this one.
  void complete_ended() REQUIRES(loop_.io_thread) {
    for (auto& ended : std::exchange(ended_, {})) {
      ended.call->complete(std::move(ended.reply), options_.logger);
    }
  }

  // Ends a call: now, or, on a lent turn, once the turn is over (send_lent).
  void end_call(std::unique_ptr<PendingCall> call, Reply reply) REQUIRES(loop_.io_thread) {
    if (!lent_) {
      call->complete(std::move(reply), options_.logger);
    } else if (call.get() == lent_->mine) {
      lent_->done->emplace(Completion{std::move(call), std::move(reply)});
    } else {
      ended_.push_back({std::move(call), std::move(reply)});
      loop_.wake();  // on_wake completes it, on the I/O thread
    }
  }

  // The calls handed over (and those set aside, first), a slice per turn.
  void send_calls(amqp::Channel* channel, bool can_send) REQUIRES(loop_.io_thread) {
    calls_out_.take(batch_);
    std::vector<PendingCall*> held;
    if (can_send) held = table_.take_held();
    // A burst is sent a slice per turn: between slices the loop reads what the broker sent
    // (replies, returns, heartbeats) and rabbitmq-c sends heartbeats, so publishing hard never
    // looks like silence on either side.
    const std::size_t end = std::min(batch_.size(), batch_pos_ + kSendsPerTurn);
    std::optional<amqp::Channel::Cork> cork;
    if (can_send && end - batch_pos_ + held.size() > 1) cork.emplace(*channel, true);
    // Calls set aside while disconnected or blocked go first, in their order.
    for (PendingCall* call : held) route(*channel, *call);
    for (; batch_pos_ < end; ++batch_pos_) {
      auto& call = batch_[batch_pos_];
      if (call->options.cancel.stop_requested()) {
        end_call(std::move(call),
                 Reply::error(StatusCode::cancelled, "cancelled before it was sent"));
      } else if (can_send) {
        route(*channel, table_.accept(std::move(call)));
      } else if (Status refused = refuse_unsent(channel != nullptr, *call); !refused.ok()) {
        call->complete(Reply{std::move(refused), {}, {}, {}}, options_.logger);
      } else {
        table_.hold(table_.accept(std::move(call)));
      }
    }
    if (batch_pos_ == batch_.size()) {
      batch_.clear();
      batch_pos_ = 0;
    } else {
      loop_.wake();  // the rest on the next turn
    }
    cork.reset();
  }

  void on_wake(amqp::Channel* channel) override {
    loop_.io_thread.assert_held();
    complete_ended();
    cancels_out_.take(cancel_batch_);
    const bool can_send = channel != nullptr && link_.replies_lost.ok() && loop_.can_publish();
    send_calls(channel, can_send);
    if (can_send && watching()) {
      for (std::string& queue : watch_.due(Clock::now())) {
        if (!channel->probe({amqp::Probe::Kind::queue, std::move(queue)}).ok()) break;
        probe_owners_.push_back({ProbeOwner::Kind::watch, {}});
      }
    }
    if (channel != nullptr && next_stream_check_ && Clock::now() >= *next_stream_check_) {
      check_streams(*channel, Clock::now());
    }
    controls_out_->take(control_batch_);
    for (auto& control : control_batch_) stream_control(channel, control);
    control_batch_.clear();
    if (channel != nullptr) pay_credit(*channel);
    gathers_out_.take(gather_batch_);
    for (auto& gather : gather_batch_) start_gather(channel, can_send, std::move(gather));
    gather_batch_.clear();
    for (const auto& id : cancel_batch_) {
      if (auto gather = gathers_.take(id)) {
        gather->finish({StatusCode::cancelled, "cancelled by the caller"}, options_.logger);
        continue;
      }
      auto call = table_.take(id);
      if (!call) continue;  // already completed
      if (call->stream && channel != nullptr) tell_stream(*channel, *call, /*cancel=*/true, 0);
      cancelled_.fetch_add(1, std::memory_order_relaxed);
      call->complete(Reply::error(StatusCode::cancelled, "cancelled by the caller"),
                     options_.logger);
    }
    cancel_batch_.clear();
  }

  void on_delivery(amqp::Channel& channel, amqp::Delivery&& d) override {
    loop_.io_thread.assert_held();
    // An item of a stream, also one that ended here (its server is told to stop).
    if (auto kind = d.props.headers.find(detail::wire::kStreamHeader);
        kind != d.props.headers.end() && kind->second == "item") {
      return stream_item(channel, std::move(d));
    }
    auto call = table_.take_answered(d.props.correlation_id);
    if (!call && !gathers_.empty()) {
      if (detail::GatherCall* gather = gathers_.find(d.props.correlation_id)) {
        return gathered(*gather, std::move(d));
      }
    }
    if (!call) {
      if (retries_.take_hedge_loser(d.props.correlation_id)) return;  // counted there
      // Late (its call ended without it: deadline, cancel, lost connection) or, when its call
      // was answered already, a duplicate (the request was processed twice).
      if (table_.answered_recently(d.props.correlation_id)) {
        duplicate_replies_.fetch_add(1, std::memory_order_relaxed);
      }
      late_replies_.fetch_add(1, std::memory_order_relaxed);
      detail::log(options_.logger, LogLevel::debug,
                  "dropped a reply with unknown correlation id '" + d.props.correlation_id + "'");
      return;
    }
    replies_.fetch_add(1, std::memory_order_relaxed);
    call->complete(detail::wire::decode_reply(std::move(d.props), std::move(d.body)),
                   options_.logger);
  }

  void on_return(amqp::Channel&, amqp::Returned&& r) override {
    loop_.io_thread.assert_held();
    if (auto gather = gathers_.take(r.props.correlation_id)) {
      // Bound to no queue: every instance left between the count and the publish.
      Status why{StatusCode::unavailable, "no server instance of '" + gather->queue +
                                              "' took the gather (" + std::to_string(r.reply_code) +
                                              " " + r.reply_text + ")"};
      finish_gather(std::move(gather), std::move(why));
      return;
    }
    if (r.props.headers.count(detail::wire::kStreamControlHeader) != 0) {
      // The queue of the stream's server is gone: so is its producer.
      if (auto call = table_.take(r.props.correlation_id)) {
        call->complete(Reply::error(StatusCode::unavailable,
                                    "the stream broke: the server instance producing it is gone "
                                    "(its queue '" +
                                        call->stream_to + "' no longer exists)"),
                       options_.logger);
      }
      return;
    }
    auto call = table_.take(r.props.correlation_id);
    if (!call) {
      if (detail::wire::is_oneway(r.props.headers)) {
        // A one-way call sent without confirms is done already: only the log can tell.
        detail::log(options_.logger, LogLevel::warning,
                    "a one-way call came back from the broker (" + std::to_string(r.reply_code) +
                        " " + r.reply_text + "): no queue took it");
      }
      return;
    }
    unroutable_.fetch_add(1, std::memory_order_relaxed);
    call->complete(
        Reply::error(StatusCode::unavailable, "no route to queue '" + call->queue +
                                                  "': the broker has no such queue (" +
                                                  std::to_string(r.reply_code) + " " +
                                                  r.reply_text + "); is a server running?"),
        options_.logger);
  }

  std::optional<Clock::time_point> next_deadline() override {
    loop_.io_thread.assert_held();
    auto next = table_.next_deadline();
    if (auto retries = retries_.next_deadline(); retries && (!next || *retries < *next)) {
      next = retries;
    }
    // Probes go out from on_wake, and only when publishing is possible: a due one must not
    // spin the loop while it is not.
    if (watching() && loop_.can_publish() && link_.replies_lost.ok()) {
      if (auto probe = watch_.next_due(); probe && (!next || *probe < *next)) next = probe;
    }
    if (auto gather = gathers_.next_deadline(); gather && (!next || *gather < *next)) {
      next = gather;
    }
    if (next_stream_check_ && loop_.can_publish() && (!next || *next_stream_check_ < *next)) {
      next = next_stream_check_;
    }
    return next;
  }

  void on_probe(amqp::Channel& channel, amqp::ProbeResult&& result) override {
    loop_.io_thread.assert_held();
    // Answers come in the order the questions went out: the oldest owner's.
    if (probe_owners_.empty()) return;
    ProbeOwner owner = std::move(probe_owners_.front());
    probe_owners_.pop_front();
    if (owner.kind == ProbeOwner::Kind::gather) return gather_probed(channel, owner.id, result);
    const bool can_send = link_.replies_lost.ok() && loop_.can_publish();
    for (const std::string& id : watch_.answer(result, Clock::now())) {
      PendingCall* call = table_.find(id);
      if (call == nullptr) continue;  // ended meanwhile (deadline, cancel)
      if (can_send) {
        route(channel, *call, /*confirmed=*/true);
      } else {
        table_.hold(*call);  // the next turn that can send sends it
      }
    }
  }

  void on_timer(Clock::time_point now) override {
    loop_.io_thread.assert_held();
    while (auto gather = gathers_.take_expired(now)) {
      const std::size_t got = gather->result.replies.size();
      std::string why = gather->published
                            ? std::to_string(got) + " of " +
                                  std::to_string(gather->result.expected) +
                                  " server instances of '" + gather->queue + "' answered within " +
                                  std::to_string(gather->timeout.count()) + " ms"
                            : "the gather on '" + gather->queue + "' was not sent within " +
                                  std::to_string(gather->timeout.count()) + " ms";
      finish_gather(std::move(gather), {StatusCode::deadline_exceeded, std::move(why)});
    }
    while (auto call = table_.take_expired(now)) {
      timeouts_.fetch_add(1, std::memory_order_relaxed);
      call->complete(Reply::error(StatusCode::deadline_exceeded,
                                  "no reply from queue '" + call->queue + "' within " +
                                      std::to_string(call->timeout.count()) + " ms"),
                     options_.logger);
    }
    retries_.on_timer(now);  // after the expiries above: they may end calls under a policy
  }

  void on_consumer_cancelled(amqp::Channel&, const std::string&) override {
    loop_.io_thread.assert_held();
    // The reply queue is gone (deleted, or its node left the cluster): no reply can come back.
    link_.replies_lost =
        Status{StatusCode::unavailable, "the broker cancelled this client's reply consumer on '" +
                                            link_.reply_queue +
                                            "' (queue deleted?); no replies can arrive"};
    detail::log(options_.logger, LogLevel::error, link_.replies_lost.message());
    fail_all(StatusCode::unavailable, link_.replies_lost.message());
    for (auto& gather : gathers_.take_all()) {
      finish_gather(std::move(gather), link_.replies_lost);
    }
    // A new connection brings a new reply queue.
    if (options_.reconnect.enabled) loop_.drop(link_.replies_lost);
  }

  void on_lost(const Status& why) override {
    loop_.io_thread.assert_held();
    const std::string message = "connection lost before the reply came: " + why.message();
    // The broker closing us for lack of permission is not a network problem: say so.
    const StatusCode code = why.code() == StatusCode::permission_denied
                                ? StatusCode::permission_denied
                                : StatusCode::unavailable;
    table_.take_held();  // what may wait for the next connection is held again below
    watch_.reset();
    auto failed = table_.take_unless([this](PendingCall& call) {
      loop_.io_thread.assert_held();  // called right here, on this thread
      if (!may_wait_for_reconnect(call)) return false;
      // Sent once already: its server was there; after the drop it may come back after us.
      if (call.sent) call.resend = true;
      table_.hold(call);
      return true;
    });
    for (auto& call : failed) call->complete(Reply::error(code, message), options_.logger);
    probe_owners_.clear();
    for (auto& gather : gathers_.take_all()) {
      finish_gather(std::move(gather),
                    {code, "connection lost before every instance answered: " + why.message()});
    }
  }

  void on_blocked(amqp::Channel&, bool blocked) override {
    loop_.io_thread.assert_held();
    if (!blocked || options_.when_blocked != BlockedPolicy::fail) return;
    // Held calls would wait for an unblock that may never come within their deadlines.
    for (PendingCall* held : table_.take_held()) {
      auto call = table_.take(held->correlation_id);
      call->complete(Reply{blocked_status(), {}, {}, {}}, options_.logger);
    }
  }

  void on_confirm(amqp::Channel&, std::uint64_t seq, bool multiple, bool ack) override {
    loop_.io_thread.assert_held();
    auto settled = link_.unconfirmed.settle(seq, multiple);
    if (ack) {
      // Taken: a call goes on waiting for its reply; a one-way call is done.
      for (const auto& id : settled) {
        PendingCall* call = table_.find(id);
        if (call != nullptr && call->oneway) table_.take(id)->complete(Reply{}, options_.logger);
      }
      return;
    }
    for (const auto& id : settled) {
      auto call = table_.take(id);
      if (!call) continue;
      call->complete(
          Reply::error(StatusCode::unavailable, "the broker refused the request to '" +
                                                    call->queue + "' (publisher confirm: nack)"),
          options_.logger);
    }
  }

  void on_closing(amqp::Channel& channel) override {
    loop_.io_thread.assert_held();
    cancel_open_streams(channel);
    fail_all(StatusCode::cancelled, "the client was closed before the reply came");
    for (auto& gather : gathers_.take_all()) {
      finish_gather(std::move(gather), {StatusCode::cancelled,
                                        "the client was closed before every instance answered"});
    }
  }

 private:
  // What lives and dies with one connection.
  struct Link {
    detail::ConfirmTracker<std::string> unconfirmed;  // request's publish number -> its id
    Status replies_lost;  // set when replies can no longer arrive on this connection
    std::string reply_queue;
  };

  // Whether a call that cannot be sent on this connection may wait for the next one: an
  // idempotent call may be sent again; a wait_for_ready call that never left may be sent late.
  bool may_wait_for_reconnect(const PendingCall& call) const REQUIRES(loop_.io_thread) {
    if (!loop_.reconnecting()) return false;
    // A stream that was sent has items behind it, from a producer the drop ended.
    if (call.stream && call.sent) return false;
    return call.options.idempotent || (call.options.wait_for_ready && !call.sent);
  }

  // Why a call that cannot be sent now fails at once instead of being held (ok: hold it).
  Status refuse_unsent(bool have_channel, const PendingCall& call) const REQUIRES(loop_.io_thread) {
    if (have_channel && !link_.replies_lost.ok()) return link_.replies_lost;
    if (have_channel && loop_.blocked() && options_.when_blocked == BlockedPolicy::fail) {
      return blocked_status();
    }
    if (!have_channel && !(call.options.wait_for_ready && loop_.reconnecting())) {
      return {StatusCode::unavailable, not_connected()};
    }
    return {};  // blocked (policy wait), a quiet connection, or waiting for ready
  }

  Status blocked_status() const REQUIRES(loop_.io_thread) {
    return {StatusCode::resource_exhausted,
            "the broker blocks publishing (" + loop_.blocked_reason() + "); not sent"};
  }

  std::string not_connected() const {
    std::string why = loop_.lost_reason().message();
    return loop_.reconnecting() ? "not connected (reconnecting after: " + why + ")"
                                : "not connected: " + why;
  }

  bool watching() const { return options_.server_check_interval.count() > 0; }

  // Sends an accepted call, unless the watch says nobody serves its queue: then the call fails,
  // once an answer asked since it was made confirms it (`confirmed`: this is that answer), or
  // with wait_for_ready waits for a server. A call to a queue not known yet waits for the
  // first answer.
  void route(amqp::Channel& channel, PendingCall& call, bool confirmed = false)
      REQUIRES(loop_.io_thread) {
    using Verdict = detail::ServerWatch::Verdict;
    using Wait = detail::ServerWatch::Wait;
    if (call.oneway || !watching()) return send(channel, call);
    const auto now = Clock::now();
    const Verdict verdict = watch_.check(call.queue, now);
    if (verdict == Verdict::send) return send(channel, call);
    // An idempotent call sent again after a drop was made while a server served: it waits for
    // the servers to come back, as a wait_for_ready call does (within its deadline).
    const bool waits = call.options.wait_for_ready || call.resend;
    if (verdict == Verdict::no_server && waits) {
      return send(channel, call);  // the queue keeps it for the server it waits for
    }
    if (verdict == Verdict::no_queue && waits) {
      return watch_.wait(call.queue, call.correlation_id, Wait::appear, now);
    }
    if (verdict == Verdict::unknown || !confirmed) {
      return watch_.wait(call.queue, call.correlation_id, Wait::answer, now);
    }
    std::string why;
    if (verdict == Verdict::no_server) {
      no_server_.fetch_add(1, std::memory_order_relaxed);
      why = "no server is consuming queue '" + call.queue +
            "'; not sent. Start one, or set wait_for_ready to wait for one";
    } else {
      unroutable_.fetch_add(1, std::memory_order_relaxed);
      why = "no route to queue '" + call.queue +
            "': the broker has no such queue; not sent. Is a server running?";
    }
    end_call(table_.take(call.correlation_id),
             Reply::error(StatusCode::unavailable, std::move(why)));
  }

  // Publishes an accepted call; a call that cannot be published completes here, or waits for
  // the next connection when it may.
  void send(amqp::Channel& channel, PendingCall& call) REQUIRES(loop_.io_thread) {
    Status st = publish(channel, call);
    if (st.ok()) {
      // Without confirms a one-way call is done once it is on its way.
      if (call.oneway && !options_.confirm_requests) {
        end_call(table_.take(call.correlation_id), Reply{});
      }
      return;
    }
    if (st.code() == StatusCode::unavailable && options_.reconnect.enabled &&
        (call.options.idempotent || call.options.wait_for_ready)) {
      // The connection broke under this publish: the call waits for the next one.
      table_.hold(call);
      return;
    }
    end_call(table_.take(call.correlation_id), Reply{st, {}, {}, {}});
  }

  Status publish(amqp::Channel& channel, PendingCall& call) REQUIRES(loop_.io_thread) {
    detail::wire::OutgoingRequest request(
        call.options, call.correlation_id,
        call.oneway ? std::string_view() : std::string_view(link_.reply_queue),
        std::chrono::ceil<std::chrono::milliseconds>(call.deadline - Clock::now()), call.oneway,
        call.trace);
    // The broker checks it against this connection's login: the server can trust it.
    if (options_.send_user_id) request.set_user_id(loop_.user());
    std::string window;
    if (call.stream) {
      window = std::to_string(call.options.stream_window);
      request.add_header(detail::wire::kStreamCreditHeader, window);
    }
    if (Status bad = detail::wire::validate_outgoing(
            request.props(), call.body.size(), {channel.frame_max(), channel.max_message_size()},
            "request");
        !bad.ok()) {
      return bad;
    }
    auto seq = channel.publish("", call.queue, /*mandatory=*/true, request.props(), call.body);
    if (!seq) return Status{StatusCode::unavailable, seq.status().message()};
    call.sent = true;
    if (options_.confirm_requests) link_.unconfirmed.track(*seq, call.correlation_id);
    if (call.stream) {
      open_streams_.push_back(call.correlation_id);
      if (!next_stream_check_) next_stream_check_ = Clock::now() + kStreamCheckInterval;
    }
    // Keep the body only while it may have to be sent again.
    if (!call.options.idempotent) {
      call.body.clear();
      call.body.shrink_to_fit();
    }
    return {};
  }

  // ---- attempts of calls under a retry or hedging policy (detail::AttemptHost) ----

  void identify_attempt(PendingCall& attempt, const TraceContext& first) override {
    detail::MutexLock lock(uuid_mutex_);
    attempt.correlation_id = uuids_.next();
    attempt.trace = detail::wire::new_span(&first, uuids_);
    attempt.parent_span_id = first.span_id;
  }

  void launch_attempt(std::unique_ptr<PendingCall> attempt) override { launch(std::move(attempt)); }

  bool end_sent_attempt(const std::string& correlation_id, const Status& why) override {
    loop_.io_thread.assert_held();
    PendingCall* attempt = table_.find(correlation_id);
    if (attempt == nullptr || !attempt->sent) return false;
    table_.take(correlation_id)->complete(Reply{why, {}, {}, {}}, options_.logger);
    return true;
  }

  void end_attempt(const std::string& correlation_id, const Status& why) override {
    loop_.io_thread.assert_held();
    if (auto attempt = table_.take(correlation_id)) {
      attempt->complete(Reply{why, {}, {}, {}}, options_.logger);
    }
  }

  // ---- streams ----

  // An item of a streaming call: in order, or the stream is broken.
  void stream_item(amqp::Channel& channel, amqp::Delivery&& d) REQUIRES(loop_.io_thread) {
    PendingCall* call = table_.find(d.props.correlation_id);
    auto to = d.props.headers.find(detail::wire::kStreamToHeader);
    if (call == nullptr || !call->stream) {
      // Its stream ended here (cancelled, deadline, broken) while its server went on: tell it to
      // stop, once.
      late_replies_.fetch_add(1, std::memory_order_relaxed);
      if (to != d.props.headers.end() && !told_to_stop(d.props.correlation_id)) {
        PendingCall ended;
        ended.correlation_id = d.props.correlation_id;
        ended.stream_to = to->second;
        tell_stream(channel, ended, /*cancel=*/true, 0);
      }
      return;
    }
    const auto seq = detail::wire::int_header(d.props.headers, detail::wire::kStreamSeqHeader);
    if (to != d.props.headers.end() && call->stream_to.empty()) call->stream_to = to->second;
    if (!seq || static_cast<std::uint64_t>(*seq) != call->next_seq) {
      return finish_stream(
          channel, *call,
          {StatusCode::unavailable,
           "the stream broke: item " + std::to_string(call->next_seq) + " expected, got " +
               (seq ? "item " + std::to_string(*seq) : std::string("an unnumbered one")) +
               " (its server restarted it, or items were lost)"});
    }
    ++call->next_seq;
    stream_items_.fetch_add(1, std::memory_order_relaxed);
    call->stream->deliver(detail::wire::decode_reply(std::move(d.props), std::move(d.body)),
                          options_.logger);
  }

  static Status cancelled_by_reader() {
    return {StatusCode::cancelled, "the stream was cancelled by its reader"};
  }

  // Whether the server of this ended stream was told to stop already (remembers the last few).
  bool told_to_stop(const std::string& correlation_id) REQUIRES(loop_.io_thread) {
    if (std::find(told_.begin(), told_.end(), correlation_id) != told_.end()) return true;
    if (told_.size() >= 64) told_.pop_front();
    told_.push_back(correlation_id);
    return false;
  }

  // Ends a stream from this side: tells its server to stop, then completes the call.
  void finish_stream(amqp::Channel& channel, PendingCall& call, Status why)
      REQUIRES(loop_.io_thread) {
    if (!call.stream_to.empty()) told_to_stop(call.correlation_id);
    tell_stream(channel, call, /*cancel=*/true, 0);
    if (why.code() == StatusCode::cancelled) cancelled_.fetch_add(1, std::memory_order_relaxed);
    table_.take(call.correlation_id)->complete(Reply{std::move(why), {}, {}, {}}, options_.logger);
  }

  // Sends a stream's server credit (0: only to learn that its queue still exists), or a
  // cancel, to the queue its items named. False when it cannot be sent now.
  bool tell_stream(amqp::Channel& channel, const PendingCall& call, bool cancel,
                   std::uint32_t credit) REQUIRES(loop_.io_thread) {
    if (call.stream_to.empty() || !loop_.can_publish()) return false;
    amqp::Properties props;
    props.correlation_id = call.correlation_id;
    props.headers.emplace(detail::wire::kStreamControlHeader, cancel ? "cancel" : "credit");
    if (!cancel) props.headers.emplace(detail::wire::kStreamCreditHeader, std::to_string(credit));
    if (options_.send_user_id) props.user_id = loop_.user();
    // Mandatory: a queue that is gone comes back (on_return), and so does the news.
    return channel.publish("", call.stream_to, /*mandatory=*/true, props, "").ok();
  }

  // A reader made room for more items: its server hears of it now, or, while nothing can be
  // published (blocked, a quiet connection), as soon as something can: credit is never lost.
  void stream_control(amqp::Channel* channel, const detail::StreamControl& control)
      REQUIRES(loop_.io_thread) {
    PendingCall* call = table_.find(control.correlation_id);
    if (call == nullptr || !call->stream) return;  // ended already
    call->unsent_credit += control.credit;
    if (channel == nullptr ||
        !tell_stream(*channel, *call, /*cancel=*/false, call->unsent_credit)) {
      credit_owed_.push_back(call->correlation_id);
      return;
    }
    call->unsent_credit = 0;
  }

  // Each second while streams are open: is each stream's server still there? A server that
  // dies takes its exclusive control queue with it: a mandatory message carrying no credit
  // comes back then (on_return), and the stream ends at once instead of at its deadline.
  // Credit owed is sent on the way.
  void check_streams(amqp::Channel& channel, Clock::time_point now) REQUIRES(loop_.io_thread) {
    next_stream_check_.reset();
    std::erase_if(open_streams_, [&](const std::string& id) {
      loop_.io_thread.assert_held();  // called right here, on this thread
      PendingCall* call = table_.find(id);
      if (call == nullptr || !call->stream) return true;
      if (tell_stream(channel, *call, /*cancel=*/false, call->unsent_credit)) {
        call->unsent_credit = 0;
      }
      return false;
    });
    if (!open_streams_.empty()) next_stream_check_ = now + kStreamCheckInterval;
  }

  // Credit that could not be sent when its reader returned it, sent once it can be.
  void pay_credit(amqp::Channel& channel) REQUIRES(loop_.io_thread) {
    if (credit_owed_.empty() || !loop_.can_publish()) return;
    for (const std::string& id : credit_owed_) {
      PendingCall* call = table_.find(id);
      if (call == nullptr || call->unsent_credit == 0) continue;
      if (tell_stream(channel, *call, /*cancel=*/false, call->unsent_credit)) {
        call->unsent_credit = 0;
      }
    }
    credit_owed_.clear();
  }

  // The client closes: the servers of its open streams stop producing.
  void cancel_open_streams(amqp::Channel& channel) REQUIRES(loop_.io_thread) {
    for (const std::string& id : open_streams_) {
      PendingCall* call = table_.find(id);
      if (call != nullptr && call->stream) tell_stream(channel, *call, /*cancel=*/true, 0);
    }
  }

  // ---- gathers ----

  // A gather taken from the outbox asks two questions on the side channel (does the service's
  // fanout exchange exist: publishing to a missing one would close the main channel; how many
  // instances take part now: the roster's consumers), then publishes.
  void start_gather(amqp::Channel* channel, bool can_send, std::unique_ptr<detail::GatherCall> g)
      REQUIRES(loop_.io_thread) {
    if (g->options.cancel.stop_requested()) {
      g->finish({StatusCode::cancelled, "cancelled before it was sent"}, options_.logger);
      return;
    }
    if (channel == nullptr || !can_send) {
      g->finish({StatusCode::unavailable,
                 channel == nullptr ? not_connected()
                                    : "cannot publish now (blocked, or the connection is quiet)"},
                options_.logger);
      return;
    }
    const std::string& id = g->correlation_id;
    if (!channel->probe({amqp::Probe::Kind::exchange, detail::wire::gather_exchange_for(g->queue)})
             .ok() ||
        !channel->probe({amqp::Probe::Kind::queue, detail::wire::roster_queue_for(g->queue)})
             .ok()) {
      g->finish({StatusCode::unavailable, "connection lost"}, options_.logger);
      return;
    }
    probe_owners_.push_back({ProbeOwner::Kind::gather, id});
    probe_owners_.push_back({ProbeOwner::Kind::gather, id});
    gathers_.accept(std::move(g));
  }

  void gather_probed(amqp::Channel& channel, const std::string& id, const amqp::ProbeResult& result)
      REQUIRES(loop_.io_thread) {
    detail::GatherCall* g = gathers_.find(id);
    if (g == nullptr || g->published) return;  // ended meanwhile (deadline, cancel)
    const bool exchange = result.probe.kind == amqp::Probe::Kind::exchange;
    if (!result.status.ok()) {
      Status why =
          result.status.code() == StatusCode::not_found
              ? Status{StatusCode::unavailable,
                       "no server instance of '" + g->queue + "' takes part in gathers (no " +
                           (exchange ? "exchange '" : "roster queue '") + result.probe.name + "')"}
              : Status{result.status.code(), "cannot gather on '" + g->queue + "': asking about '" +
                                                 result.probe.name +
                                                 "': " + result.status.message()};
      return finish_gather(gathers_.take(id), std::move(why));
    }
    if (exchange) return;  // it exists: the roster's answer comes next
    g->result.expected = result.consumers;
    if (result.consumers == 0) {
      return finish_gather(gathers_.take(id),
                           {StatusCode::unavailable,
                            "no server instance of '" + g->queue + "' takes part in gathers now"});
    }
    if (!link_.replies_lost.ok()) return finish_gather(gathers_.take(id), link_.replies_lost);
    detail::wire::OutgoingRequest request(
        g->options, g->correlation_id, link_.reply_queue,
        std::chrono::ceil<std::chrono::milliseconds>(g->deadline - Clock::now()),
        /*oneway=*/false, g->trace);
    if (options_.send_user_id) request.set_user_id(loop_.user());
    const std::string exchange_name = detail::wire::gather_exchange_for(g->queue);
    if (Status bad = detail::wire::validate_outgoing(
            request.props(), g->body.size(), {channel.frame_max(), channel.max_message_size()},
            "gather");
        !bad.ok()) {
      return finish_gather(gathers_.take(id), std::move(bad));
    }
    auto seq = channel.publish(exchange_name, "", /*mandatory=*/true, request.props(), g->body);
    if (!seq) {
      return finish_gather(gathers_.take(id), {StatusCode::unavailable, seq.status().message()});
    }
    g->published = true;
    g->body.clear();
    g->body.shrink_to_fit();
  }

  void gathered(detail::GatherCall& g, amqp::Delivery&& d) REQUIRES(loop_.io_thread) {
    std::string instance;
    if (auto it = d.props.headers.find(detail::wire::kInstanceHeader);
        it != d.props.headers.end()) {
      instance = it->second;
    }
    if (!g.add(std::move(instance),
               detail::wire::decode_reply(std::move(d.props), std::move(d.body)))) {
      duplicate_replies_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (g.complete_set()) finish_gather(gathers_.take(g.correlation_id), {});
  }

  void finish_gather(std::unique_ptr<detail::GatherCall> g, Status status)
      REQUIRES(loop_.io_thread) {
    instances_.remember(g->queue, g->result);
    g->finish(std::move(status), options_.logger);
  }

  void fail_all(StatusCode code, const std::string& message) REQUIRES(loop_.io_thread) {
    for (auto& call : table_.take_all()) {
      call->complete(Reply::error(code, message), options_.logger);
    }
  }

  ClientOptions options_;
  detail::IoLoop loop_;
  detail::Outbox<std::unique_ptr<PendingCall>> calls_out_;
  detail::Outbox<std::string> cancels_out_;
  detail::Outbox<std::unique_ptr<detail::GatherCall>> gathers_out_;
  // Streams' readers ask for credit and cancels here; shared with the streams, which may
  // outlive the client (closed then).
  std::shared_ptr<detail::ControlOutbox> controls_out_;

  detail::Mutex uuid_mutex_;
  detail::UuidGenerator uuids_ GUARDED_BY(uuid_mutex_);

  // I/O thread only.
  Link link_ GUARDED_BY(loop_.io_thread);
  detail::CallTable table_ GUARDED_BY(loop_.io_thread);
  std::vector<std::unique_ptr<PendingCall>> batch_ GUARDED_BY(loop_.io_thread);
  std::size_t batch_pos_ GUARDED_BY(loop_.io_thread) = 0;  // batch_[0, pos) are taken care of
  // A lent turn's submitter: its own call, and where that call goes if it ends there.
  struct Lent {
    const PendingCall* mine;
    std::optional<Completion>* done;
  };
  std::optional<Lent> lent_ GUARDED_BY(loop_.io_thread);
  std::vector<Completion> ended_ GUARDED_BY(loop_.io_thread);  // on a lent turn, for on_wake
  static constexpr std::size_t kSendsPerTurn = 1024;
  std::vector<std::string> cancel_batch_ GUARDED_BY(loop_.io_thread);
  detail::ServerWatch watch_ GUARDED_BY(loop_.io_thread);
  // Who asked each question on the side channel, oldest first (answers come in that order):
  // empty for the watch, a gather's correlation id for a gather.
  struct ProbeOwner {
    enum class Kind { watch, gather } kind = Kind::watch;
    std::string id;  // a gather's correlation id
  };
  std::deque<ProbeOwner> probe_owners_ GUARDED_BY(loop_.io_thread);
  // Streaming calls that may be open (ids; ended ones are dropped when next looked at), and
  // when their servers' queues are next checked for life.
  std::vector<std::string> open_streams_ GUARDED_BY(loop_.io_thread);
  std::optional<Clock::time_point> next_stream_check_ GUARDED_BY(loop_.io_thread);
  static constexpr std::chrono::seconds kStreamCheckInterval{1};
  std::vector<detail::StreamControl> control_batch_ GUARDED_BY(loop_.io_thread);
  std::deque<std::string> told_ GUARDED_BY(loop_.io_thread);          // ended streams' servers told
  std::vector<std::string> credit_owed_ GUARDED_BY(loop_.io_thread);  // streams owed credit
  detail::GatherTable gathers_ GUARDED_BY(loop_.io_thread);
  std::vector<std::unique_ptr<detail::GatherCall>> gather_batch_ GUARDED_BY(loop_.io_thread);
  detail::InstanceMemory instances_ GUARDED_BY(loop_.io_thread);

  detail::LatencyRecorder latency_;
  detail::ErrorCounter errors_;

  mutable detail::Mutex reply_queue_mutex_;
  std::string reply_queue_ GUARDED_BY(reply_queue_mutex_);  // link_.reply_queue, for any thread

  std::atomic<std::uint64_t> calls_{0}, replies_{0}, timeouts_{0}, unroutable_{0}, no_server_{0},
      late_replies_{0}, cancelled_{0}, duplicate_replies_{0}, gathers_started_{0},
      streams_started_{0}, stream_items_{0};

  detail::RetryEngine retries_;  // calls under a retry or hedging policy
};

Result<std::unique_ptr<Client>> Client::connect(ClientOptions options) {
  if (Status bad = detail::validate_defaults(options.retry, options.hedging); !bad.ok()) return bad;
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

Status Client::notify(const std::string& queue, const std::string& method, std::string body,
                      const CallOptions& options) {
  if (impl_->in_io_thread()) {
    return {StatusCode::failed_precondition,
            "a blocking notify from the client's own callback would deadlock"};
  }
  CallOptions oneway = options;
  oneway.method = method;
  auto call = impl_->make_call(queue, std::move(body), oneway);
  call->oneway = true;
  auto future = call->done.emplace<std::promise<Reply>>().get_future();
  impl_->submit(std::move(call));
  return future.get().status;
}

std::future<GatherResult> Client::async_gather(const std::string& queue, const std::string& method,
                                               std::string body, const CallOptions& options) {
  auto gather = impl_->make_gather(queue, method, std::move(body), options);
  auto future = gather->done.emplace<std::promise<GatherResult>>().get_future();
  impl_->submit_gather(std::move(gather));
  return future;
}

void Client::async_gather(const std::string& queue, const std::string& method, std::string body,
                          const CallOptions& options, std::function<void(GatherResult)> on_done) {
  auto gather = impl_->make_gather(queue, method, std::move(body), options);
  gather->done = std::move(on_done);
  impl_->submit_gather(std::move(gather));
}

GatherResult Client::gather(const std::string& queue, const std::string& method, std::string body,
                            const CallOptions& options) {
  if (impl_->in_io_thread()) {
    GatherResult refused;
    refused.status = {StatusCode::failed_precondition,
                      "a blocking gather from the client's own callback would deadlock"};
    return refused;
  }
  return async_gather(queue, method, std::move(body), options).get();
}

ReplyStream::ReplyStream(std::shared_ptr<detail::StreamState> state) : state_(std::move(state)) {}
ReplyStream::~ReplyStream() {
  if (state_) state_->cancel();  // nothing when it has ended
}
std::optional<Reply> ReplyStream::next() {
  return state_->next();
}
void ReplyStream::async_next(std::function<void(std::optional<Reply>)> on_item) {
  state_->async_next(std::move(on_item));
}
void ReplyStream::cancel() {
  state_->cancel();
}
Status ReplyStream::status() const {
  return state_->status();
}
bool ReplyStream::done() const {
  return state_->done();
}

std::unique_ptr<ReplyStream> Client::stream(const std::string& queue, const std::string& method,
                                            std::string body, const CallOptions& options) {
  auto state = impl_->submit_stream(queue, method, std::move(body), options, nullptr, nullptr);
  return std::make_unique<ReplyStream>(std::move(state));
}

void Client::stream(const std::string& queue, const std::string& method, std::string body,
                    const CallOptions& options, std::function<void(Reply)> on_item,
                    std::function<void(Status)> on_done) {
  if (!on_item) on_item = [](Reply) {};
  impl_->submit_stream(queue, method, std::move(body), options, std::move(on_item),
                       std::move(on_done));
}

std::string Client::reply_queue() const {
  return impl_->reply_queue();
}
Client::Stats Client::stats() const {
  return impl_->stats();
}

}  // namespace amqprpc
