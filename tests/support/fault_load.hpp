// A steady load of calls through a fault, and the report of what happened to every call.
//
// Nothing here assumes how long a fault lasts. The fault runs on its own thread and notes when
// the broker went down and when it accepted AMQP connections again (a private node takes 5 s to
// boot on a quiet machine and 10-15 s or more on a fresh or busy one). The load goes on until
// the fault is over and a recovery window after it has passed, bounded overall; recovery is
// reported from the moment the broker was back.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "amqprpc/client.hpp"

namespace faults {

using Clock = std::chrono::steady_clock;

// What the fault itself tells the load: when the broker went down and when it was back.
class FaultLog {
 public:
  void broker_down(Clock::time_point at = Clock::now()) { down_ = at; }
  void broker_back(Clock::time_point at) { back_ = at; }
  std::optional<Clock::time_point> down() const { return down_; }
  std::optional<Clock::time_point> back() const { return back_; }

 private:
  std::optional<Clock::time_point> down_, back_;
};

using Fault = std::function<void(FaultLog&)>;

struct LoadPlan {
  std::chrono::milliseconds fault_at{2000};         // steady load before the fault
  std::chrono::milliseconds recovery_window{5000};  // load still sent once the fault is over
  std::chrono::milliseconds limit{90000};           // the whole load, whatever the fault does
  std::chrono::milliseconds interval{10};           // between two calls
  amqprpc::CallOptions call;                        // timeout defaults to 5 s
};

struct Report {
  std::string scenario;
  int sent = 0, right = 0, failed_clearly = 0, lost = 0;
  std::uint64_t duplicated = 0;
  double recovery_s = -1;  // first failure -> first right answer to a call sent after it
  std::map<std::string, int> failures;  // status code -> count
  double first_failure_s = -1;          // fault injected -> first failed call (detection)
  std::string sample;                   // the first failure's message
  double slowest_failure_s = 0;         // longest a failed call waited for its answer
  double fault_s = -1;                  // fault injected -> fault over
  double broker_down_s = -1;            // broker stopped/killed -> accepting AMQP again
  double recovered_after_back_s = -1;   // broker accepting again -> first right answer after
  bool fault_over_in_time = false;      // the fault ended within the load's limit
  std::string fault_error;              // what the fault itself could not do

  std::string line() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "FAULT REPORT | %-34s | sent %5d | right %5d | failed clearly %4d | lost %d | "
                  "duplicated %llu | recovered in %.2f s",
                  scenario.c_str(), sent, right, failed_clearly, lost,
                  static_cast<unsigned long long>(duplicated), recovery_s);
    std::string out = buf;
    if (broker_down_s >= 0) {
      std::snprintf(buf, sizeof buf, " | broker down %.2f s", broker_down_s);
      out += buf;
      if (recovered_after_back_s >= 0) {
        std::snprintf(buf, sizeof buf, " | first right answer %.2f s after the broker was back",
                      recovered_after_back_s);
      } else {
        std::snprintf(buf, sizeof buf, " | no right answer after the broker was back");
      }
      out += buf;
    }
    if (first_failure_s >= 0) {
      std::snprintf(buf, sizeof buf, " | first failure %.2f s after the fault", first_failure_s);
      out += buf;
    }
    for (const auto& [code, n] : failures) out += " | " + code + " " + std::to_string(n);
    if (failed_clearly > 0) {
      std::snprintf(buf, sizeof buf, " | slowest failure took %.2f s", slowest_failure_s);
      out += buf;
    }
    if (!fault_over_in_time) out += " | THE FAULT OUTLASTED THE LOAD";
    if (!fault_error.empty()) out += " | fault failed: " + fault_error;
    if (!sample.empty()) out += " | e.g. \"" + sample.substr(0, 140) + "\"";
    return out;
  }
};

// Sends a call every `plan.interval`; `fault` runs on its own thread from `plan.fault_at`. The
// load stops once the fault is over and `plan.recovery_window` has passed after it (or at
// `plan.limit`). Completions are recorded by callback with their time, so recovery is measured
// exactly: from the first failure to the first right answer to a call sent after it.
inline Report run_load(const std::string& scenario, amqprpc::Client& client,
                       const std::string& queue, LoadPlan plan, const Fault& fault) {
  using namespace std::chrono_literals;
  amqprpc::CallOptions call = plan.call;
  if (!call.timeout) call.timeout = 5s;
  struct Outcome {
    bool done = false;
    amqprpc::Status status;
    bool right = false;
    Clock::time_point sent, completed;
  };
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Outcome> outcomes;
  outcomes.reserve(static_cast<std::size_t>(plan.limit / plan.interval) + 16);
  int completed = 0;

  FaultLog log;
  std::mutex fault_mutex;
  std::optional<Clock::time_point> fault_over;  // under fault_mutex
  std::string fault_error;                      // under fault_mutex
  std::thread injector;
  auto fault_time = Clock::time_point::max();
  auto start = Clock::now();
  auto load_over = [&] {
    auto now = Clock::now();
    if (now - start >= plan.limit) return true;
    std::lock_guard lock(fault_mutex);
    return fault_over && now - *fault_over >= plan.recovery_window;
  };
  for (std::size_t i = 0; !load_over(); ++i) {
    if (!injector.joinable() && Clock::now() - start >= plan.fault_at) {
      fault_time = Clock::now();
      injector = std::thread([&] {
        std::string error;
        try {
          fault(log);
        } catch (const std::exception& e) {
          error = e.what();
        } catch (...) {
          error = "unknown exception";
        }
        std::lock_guard lock(fault_mutex);
        fault_over = Clock::now();
        fault_error = error;
      });
    }
    std::string body = scenario + "#" + std::to_string(i);
    {
      std::lock_guard lock(mutex);
      outcomes.push_back({false, {}, false, Clock::now(), {}});
    }
    client.async_call(queue, body, call, [&, i, body](amqprpc::Reply reply) {
      std::lock_guard lock(mutex);
      Outcome& o = outcomes[i];
      o.done = true;
      o.completed = Clock::now();
      o.status = reply.status;
      o.right = reply.status.ok() && reply.body == body;
      ++completed;
      cv.notify_all();
    });
    std::this_thread::sleep_for(plan.interval);
  }
  Report r;
  r.scenario = scenario;
  {
    std::lock_guard lock(fault_mutex);
    r.fault_over_in_time = fault_over.has_value();
  }
  if (injector.joinable()) injector.join();  // the fault bounds its own waits
  r.fault_error = fault_error;
  if (fault_over && fault_time != Clock::time_point::max()) {
    r.fault_s = std::chrono::duration<double>(*fault_over - fault_time).count();
  }
  if (log.down() && log.back()) {
    r.broker_down_s = std::chrono::duration<double>(*log.back() - *log.down()).count();
  }
  {
    std::unique_lock lock(mutex);
    // Every call must end by its deadline (plus slack): what has not by then hung.
    cv.wait_until(lock, Clock::now() + *call.timeout + 3s,
                  [&] { return completed == static_cast<int>(outcomes.size()); });
    r.sent = static_cast<int>(outcomes.size());
    // Recovery: from the first failure the fault caused to the first right answer to a call
    // sent after that failure (0 when no call failed).
    Clock::time_point first_failure = Clock::time_point::max();
    for (const Outcome& o : outcomes) {
      if (o.done && !o.right) first_failure = std::min(first_failure, o.completed);
    }
    if (first_failure == Clock::time_point::max()) {
      r.recovery_s = 0;
    } else {
      r.first_failure_s = std::chrono::duration<double>(first_failure - fault_time).count();
    }
    Clock::time_point first_ok = Clock::time_point::max();
    Clock::time_point first_ok_after_back = Clock::time_point::max();
    for (const Outcome& o : outcomes) {
      if (!o.done) {
        r.lost++;
      } else if (o.right) {
        r.right++;
        if (o.sent >= first_failure) first_ok = std::min(first_ok, o.completed);
        if (log.down() && log.back() && o.sent >= *log.down() && o.completed >= *log.back()) {
          first_ok_after_back = std::min(first_ok_after_back, o.completed);
        }
      } else if (!o.status.ok() && !o.status.message().empty()) {
        r.failed_clearly++;
        r.failures[std::string(amqprpc::to_string(o.status.code()))]++;
        if (r.sample.empty()) r.sample = o.status.message();
        r.slowest_failure_s = std::max(r.slowest_failure_s,
                                       std::chrono::duration<double>(o.completed - o.sent).count());
      } else {
        r.lost++;  // a wrong answer is as bad as none
      }
    }
    if (first_ok != Clock::time_point::max()) {
      r.recovery_s = std::chrono::duration<double>(first_ok - first_failure).count();
    }
    if (first_ok_after_back != Clock::time_point::max()) {
      r.recovered_after_back_s =
          std::chrono::duration<double>(first_ok_after_back - *log.back()).count();
    }
  }
  // A grace period for a wrong outcome to show (it creates no condition the test waits for).
  std::this_thread::sleep_for(500ms);
  r.duplicated = client.stats().duplicate_replies;
  if (r.lost > 0) {
    // The callbacks still reference this frame: wait (bounded) for them before returning.
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 30s, [&] { return completed == static_cast<int>(outcomes.size()); });
  }
  return r;
}

// Prints the report line and appends it to $AMQPRPC_FAULT_REPORT, if set.
inline void record(const Report& r) {
  std::printf("%s\n", r.line().c_str());
  std::fflush(stdout);
  if (const char* file = std::getenv("AMQPRPC_FAULT_REPORT")) {
    std::ofstream(file, std::ios::app) << r.line() << "\n";
  }
}

}  // namespace faults
