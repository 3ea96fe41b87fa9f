// The client's calls in flight: by correlation id, by deadline, the ones held back (accepted,
// not sent), and the ids of recently answered calls (another reply for one of those is a
// duplicate, not a stray).
//
// Thread safety: none; the client's I/O thread owns the table and every call in it.
#pragma once

#include <any>
#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "amqprpc/interceptor.hpp"
#include "amqprpc/message.hpp"
#include "amqprpc/options.hpp"
#include "client/deadline_heap.hpp"
#include "client/stream.hpp"
#include "metrics_recorder.hpp"

namespace amqprpc::detail {

using Clock = std::chrono::steady_clock;

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

// A call from submit to completion. What interceptors see (queue, options, trace...) is its
// ClientCall part.
struct PendingCall : ClientCall {
  std::string body;  // kept only while the call may have to be sent (again)
  std::chrono::milliseconds timeout{};
  Clock::time_point deadline;
  Clock::time_point submitted;
  std::string correlation_id;  // fixed while in a CallTable: its key views it
  // How the caller hears of the end: a future's promise, a callback, or nothing (monostate: no
  // promise is made, and dropped unsatisfied, for the calls that complete through a callback).
  std::variant<std::monostate, std::promise<Reply>, std::function<void(Reply)>> done;
  // Registered with options.cancel; unregistered when the call is destroyed.
  std::optional<std::stop_callback<CancelRequest>> on_cancel;
  std::size_t heap_index = DeadlineHeap<PendingCall>::npos;
  bool sent = false;    // on the wire on the current connection
  bool resend = false;  // sent on an earlier connection, held to be sent again
  LatencyRecorder* latency = nullptr;
  ErrorCounter* errors = nullptr;
  // The client's interceptors, their state for this call, and how many of them ran their
  // before-hook (whose after-hooks run at completion).
  const std::vector<std::shared_ptr<ClientInterceptor>>* interceptors = nullptr;
  std::vector<std::any> interceptor_state;
  std::size_t interceptors_ran = 0;
  // A streaming call: its items go to `stream` as they come (the call completes with the end
  // of the stream); `stream_to` is where its credit and cancel go, learned from the first
  // item; `next_seq` the number the next item must carry.
  std::shared_ptr<StreamState> stream;
  std::string stream_to;
  std::uint64_t next_seq = 1;
  std::uint32_t unsent_credit = 0;  // returned by its reader, not yet sent to its server

  // Runs the before-hooks of the interceptors in order; the first refusal, or ok.
  Status intercept(const Logger& logger);
  // Runs the after-hooks, then the caller's continuation. An exception from a callback or an
  // interceptor must not unwind through the I/O loop: it is logged and dropped.
  void complete(Reply reply, const Logger& logger);
};

class CallTable {
 public:
  using Ptr = std::unique_ptr<PendingCall>;

  bool empty() const { return calls_.empty(); }
  std::size_t size() const { return calls_.size(); }

  // Takes a call in (by id and by deadline); from now on the table owns it.
  PendingCall& accept(Ptr call);
  PendingCall* find(const std::string& correlation_id);
  // Takes a call out (nullptr if it is not here).
  Ptr take(const std::string& correlation_id);
  // Takes a call out because its reply came, and remembers that it did.
  Ptr take_answered(const std::string& correlation_id);
  // Whether a call with this id was answered recently (among the last few thousand): another
  // reply for it is a duplicate (the request was processed twice), not merely late.
  bool answered_recently(const std::string& correlation_id) const;

  // Sets an accepted call aside until it can be sent (sent = false); held calls go out in the
  // order they were held.
  void hold(PendingCall& call);
  // The held calls still in the table, in order; the held list is empty afterwards.
  std::vector<PendingCall*> take_held();

  std::optional<Clock::time_point> next_deadline() const;
  // The call whose deadline passed first, or nullptr when none has by `now`.
  Ptr take_expired(Clock::time_point now);
  // Every call, in no particular order; the table is empty afterwards.
  std::vector<Ptr> take_all();
  // The calls `keep` returns false for; `keep` may change the ones it keeps.
  std::vector<Ptr> take_unless(const std::function<bool(PendingCall&)>& keep);

 private:
  void remember(const std::string& correlation_id);
  static constexpr std::size_t kRecent = 4096;

  // Keyed by a view of the call's own correlation id, which stays put while it is here.
  std::unordered_map<std::string_view, Ptr> calls_;
  DeadlineHeap<PendingCall> deadlines_;
  std::vector<std::string> held_;
  // Hashes of the ids (a 64-bit collision would only miscount a duplicate as late), in a ring:
  // no string is copied or freed per reply, and remembering is one store. Only a reply that
  // matches no call looks here (a scan of 32 KiB), which is rare.
  std::vector<std::size_t> recent_ring_;  // up to kRecent, oldest at recent_next_ once full
  std::size_t recent_next_ = 0;
};

}  // namespace amqprpc::detail
