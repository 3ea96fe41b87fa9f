// The client's gathers in flight: one request sent to every server instance of a service (its
// fanout exchange), the replies collected by instance until every instance counted at send
// time has answered, or the deadline.
//
// Thread safety: none; the client's I/O thread owns the table and every gather in it.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/options.hpp"

namespace amqprpc::detail {

using Clock = std::chrono::steady_clock;

struct GatherCall {
  std::string queue;
  std::string body;  // until published
  CallOptions options;
  std::string correlation_id;
  TraceContext trace;
  Clock::time_point submitted;
  Clock::time_point deadline;
  std::chrono::milliseconds timeout{};
  // As PendingCall::done: a promise only for the calls that return a future.
  std::variant<std::monostate, std::promise<GatherResult>, std::function<void(GatherResult)>> done;
  // Registered with options.cancel; unregistered when the gather is destroyed.
  std::optional<std::stop_callback<std::function<void()>>> on_cancel;

  // Where it stands: the two questions asked before sending (does the exchange exist, how many
  // instances take part; answered in that order, a missing exchange ends it), then the replies.
  bool published = false;
  GatherResult result;

  // Adds an instance's reply; false for a second reply from the same instance (a redelivered
  // request answered twice), which is dropped.
  bool add(std::string instance, Reply reply);
  bool complete_set() const { return published && result.replies.size() >= result.expected; }
  // Hands the result to the caller (promise or callback; an exception from the callback is
  // logged and dropped).
  void finish(Status status, const Logger& logger);
};

class GatherTable {
 public:
  using Ptr = std::unique_ptr<GatherCall>;

  bool empty() const { return gathers_.empty(); }
  GatherCall& accept(Ptr gather);
  GatherCall* find(const std::string& correlation_id);
  Ptr take(const std::string& correlation_id);
  std::optional<Clock::time_point> next_deadline() const;
  // The gather whose deadline passed first, or nullptr when none has by `now`.
  Ptr take_expired(Clock::time_point now);
  std::vector<Ptr> take_all();

 private:
  std::unordered_map<std::string, Ptr> gathers_;
  std::set<std::pair<Clock::time_point, std::string>> deadlines_;
};

// The instances that answered a client's last gather on each queue: the names it can give
// when the next one misses some (an instance never heard from has no name yet).
class InstanceMemory {
 public:
  // Records who answered `result` on `queue`, and names in result.silent those that answered
  // last time and not now, when some instance is missing.
  void remember(const std::string& queue, GatherResult& result);

 private:
  static constexpr std::size_t kQueues = 256;
  std::map<std::string, std::vector<std::string>> last_;
};

}  // namespace amqprpc::detail
