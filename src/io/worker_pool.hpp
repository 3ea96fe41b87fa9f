// A fixed set of threads running one function over jobs taken from a FIFO queue.
//
// Thread safety: submit_all() from any thread; stop() and the destructor from one thread that
// is not a worker. The threads share the queue's state with the pool, so a stop that gives up
// on a job that never ends can leave its thread behind safely.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace amqprpc::detail {

template <class Job>
class WorkerPool {
 public:
  // Throws std::system_error when the system cannot start that many threads (having stopped
  // those it started).
  WorkerPool(std::size_t threads, std::function<void(Job&)> work)
      : state_(std::make_shared<State>()) {
    state_->work = std::move(work);
    if (threads == 0) threads = 1;
    try {
      threads_.reserve(threads);
      for (std::size_t i = 0; i < threads; ++i) {
        threads_.emplace_back([s = state_] { loop(*s); });
        ids_.push_back(threads_.back().get_id());
      }
    } catch (...) {
      stop();
      throw;
    }
  }
  ~WorkerPool() { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Whether the calling thread is one of this pool's (also one a stop left behind). Any thread:
  // the ids never change after construction.
  bool is_worker() const {
    return std::find(ids_.begin(), ids_.end(), std::this_thread::get_id()) != ids_.end();
  }

  // Takes every job of `jobs` (moved from) with one lock and one wake-up. False once stopping.
  bool submit_all(std::vector<Job>& jobs) {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->stopping) return false;
      for (auto& j : jobs) state_->jobs.push_back(std::move(j));
    }
    if (jobs.size() == 1) {
      state_->work_ready.notify_one();
    } else {
      state_->work_ready.notify_all();
    }
    return true;
  }

  struct Stopped {
    std::deque<Job> unstarted;    // taken by no thread: the caller decides their fate
    std::size_t left_behind = 0;  // jobs still running at the deadline
  };
  // Takes no more jobs, returns those never started, and waits until `deadline` for the
  // running ones. Threads still running a job then are left behind: each ends on its own when
  // its job returns. Idempotent: a later call returns at once. From one thread at a time.
  Stopped stop(std::chrono::steady_clock::time_point deadline =
                   std::chrono::steady_clock::time_point::max()) {
    Stopped out;
    if (stopped_) return out;
    stopped_ = true;
    {
      std::unique_lock lock(state_->mutex);
      state_->stopping = true;
      out.unstarted.swap(state_->jobs);
      state_->work_ready.notify_all();
      if (deadline == std::chrono::steady_clock::time_point::max()) {
        state_->idle.wait(lock, [this] { return state_->running == 0; });
      } else {
        state_->idle.wait_until(lock, deadline, [this] { return state_->running == 0; });
      }
      out.left_behind = state_->running;
    }
    for (auto& t : threads_) {
      if (!t.joinable()) continue;
      if (out.left_behind > 0) {
        t.detach();
      } else {
        t.join();
      }
    }
    threads_.clear();
    return out;
  }

 private:
  struct State {
    std::function<void(Job&)> work;
    std::mutex mutex;
    std::condition_variable work_ready;
    std::condition_variable idle;  // running dropped to 0
    std::deque<Job> jobs;
    std::size_t running = 0;
    bool stopping = false;
  };

  static void loop(State& s) {
    std::unique_lock lock(s.mutex);
    for (;;) {
      s.work_ready.wait(lock, [&] { return s.stopping || !s.jobs.empty(); });
      if (s.stopping) return;
      Job job = std::move(s.jobs.front());
      s.jobs.pop_front();
      ++s.running;
      lock.unlock();
      s.work(job);
      lock.lock();
      if (--s.running == 0) s.idle.notify_all();
    }
  }

  std::shared_ptr<State> state_;
  std::vector<std::thread> threads_;  // the stopping thread's
  std::vector<std::thread::id> ids_;  // fixed at construction
  bool stopped_ = false;              // the stopping thread's
};

}  // namespace amqprpc::detail
