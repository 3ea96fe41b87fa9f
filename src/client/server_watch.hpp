// What a client knows of the queues it calls: whether each exists and how many servers consume
// it, learned from passive declarations on the side channel (Channel::probe) and refreshed in
// the background while the queue is in use. A call reads it to fail fast when nobody serves
// (the complaint of EasyNetQ #679 and nameko #732: such a call otherwise waits for its
// deadline), without a broker round trip per call to a served queue.
//
// A call never fails on old news: "nobody serves" is acted on only once an answer asked after
// the call was made confirms it (calls waiting for one share it), so a server that started
// before the call is always seen; the first call to a queue waits for the first answer too.
//
// Thread safety: none; the client's I/O thread owns it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "amqp/message.hpp"

namespace amqprpc::detail {

class ServerWatch {
 public:
  using Clock = std::chrono::steady_clock;

  // What a call to a queue should do now.
  enum class Verdict {
    send,       // servers consume it, or the broker would not say (the call goes out blind)
    unknown,    // nothing known yet: wait for an answer
    no_queue,   // the queue does not exist
    no_server,  // it exists, and nobody consumes it
  };

  // `refresh`: how often the count of a queue in use is asked again; a queue without servers,
  // or one that calls wait to appear, is asked four times as often, so a server that starts
  // is seen soon.
  explicit ServerWatch(Clock::duration refresh) : refresh_(refresh) {}

  // What is known of `queue` for a call at `now` (which marks the queue as in use).
  Verdict check(const std::string& queue, Clock::time_point now);
  // Servers consuming `queue` as last known (0 when unknown).
  std::uint32_t consumers(const std::string& queue) const;

  // How a call waits on a queue.
  enum class Wait {
    answer,  // for an answer asked from now on: asked at once
    appear,  // for the queue to appear (wait_for_ready): asked at the eager pace
  };
  // A call (by correlation id) waits on `queue` since `now`.
  void wait(const std::string& queue, std::string correlation_id, Wait how, Clock::time_point now);
  // The queues to ask about now; each is marked as asked until its answer comes.
  std::vector<std::string> due(Clock::time_point now);
  // When due() will next have something, if ever.
  std::optional<Clock::time_point> next_due() const;
  // An answer came: records it and returns the calls it settles (those that waited for an
  // answer asked after they began to wait, and those waiting for the queue to appear), to be
  // routed again with what is known now.
  std::vector<std::string> answer(const amqp::ProbeResult& result, Clock::time_point now);
  // The connection is gone: answers under way are lost, and what was known may be stale.
  void reset() { entries_.clear(); }

  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    bool known = false;  // an answer came
    bool asked = false;  // a probe is under way
    bool exists = false;
    bool unknowable = false;  // the broker would not say (no permission, another's exclusive)
    std::uint32_t consumers = 0;
    Clock::time_point asked_at{};
    Clock::time_point answered{};
    Clock::time_point used{};                                           // the last call checked
    std::vector<std::pair<std::string, Clock::time_point>> for_answer;  // id, since
    std::vector<std::string> for_queue;
  };

  // When `e` should be asked again.
  Clock::time_point next_probe(const Entry& e) const;

  Clock::duration refresh_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace amqprpc::detail
