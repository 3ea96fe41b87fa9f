// A fixed set of threads running one function over jobs taken from a FIFO queue.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace amqprpc::detail {

template <class Job>
class WorkerPool {
 public:
  // Throws std::system_error when the system cannot start that many threads (having stopped
  // those it started).
  WorkerPool(std::size_t threads, std::function<void(Job&)> work) : work_(std::move(work)) {
    if (threads == 0) threads = 1;
    try {
      threads_.reserve(threads);
      for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
    } catch (...) {
      stop();
      throw;
    }
  }
  ~WorkerPool() { stop(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Whether the calling thread is one of this pool's.
  bool is_worker() const {
    for (const auto& t : threads_) {
      if (t.get_id() == std::this_thread::get_id()) return true;
    }
    return false;
  }

  // Takes every job of `jobs` (moved from) with one lock and one wake-up.
  bool submit_all(std::vector<Job>& jobs) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return false;
      for (auto& j : jobs) jobs_.push_back(std::move(j));
    }
    if (jobs.size() == 1) {
      cv_.notify_one();
    } else {
      cv_.notify_all();
    }
    return true;
  }

  // Lets the running jobs finish, joins the threads and returns the jobs never started.
  std::deque<Job> stop() {
    std::deque<Job> left;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      left.swap(jobs_);
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    return left;
  }

 private:
  void loop() {
    for (;;) {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      work_(job);
    }
  }

  std::function<void(Job&)> work_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace amqprpc::detail
