// A fixed set of threads running one function over jobs taken from a FIFO queue, at most
// `threads` jobs at once.
//
// The owner's own thread (a server's I/O thread) may run jobs too, in one of those slots
// (take_here): a job it runs right where it read it costs no thread wake-up, where handing it
// to a worker costs three sleeps and wake-ups (docs/WORKER_POOL.md). While it does, an idle
// worker stands by on a timer: if that job runs for kRescueAfter, the worker runs `rescue`
// (the owner's duties: a server's I/O loop) until the owner's thread is back.
//
// Thread safety: submit_all() and take_here() from any thread; stop() and the destructor from
// one thread that is not a worker. The threads (and a job run by take_here's caller) share the
// queue's state with the pool, so a stop that gives up on a job that never ends can leave its
// thread behind safely.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

namespace amqprpc::detail {

template <class Job>
class WorkerPool {
 public:
  // Throws std::system_error when the system cannot start that many threads (having stopped
  // those it started).
  // `rescue`: what a standing-by worker runs while a job taken by take_here() has run for
  // kRescueAfter; `end_rescue` makes it return (both may be empty: no one stands by).
  WorkerPool(std::size_t threads, std::function<void(Job&)> work, std::function<void()> rescue = {},
             std::function<void()> end_rescue = {})
      : state_(std::make_shared<State>()), end_rescue_(std::move(end_rescue)) {
    state_->work = std::move(work);
    state_->rescue = std::move(rescue);
    if (threads == 0) threads = 1;
    state_->slots = threads;
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

  // Takes every job of `jobs` (moved from) with one lock and at most one wake-up. False once
  // stopping. `one_is_mine`: the caller takes one of them with take_here() next, so no worker
  // is woken for it.
  bool submit_all(std::vector<Job>& jobs, bool one_is_mine = false) {
    std::size_t wake = 0;
    bool poke_standby = false;
    {
      std::lock_guard lock(state_->mutex);
      State& s = *state_;
      if (s.stopping) return false;
      for (auto& j : jobs) s.jobs.push_back(std::move(j));
      wake = std::min(jobs.size(), s.slots - std::min(s.slots, s.running));
      if (one_is_mine && !s.reserved && wake > 0) {  // one per take_here: turns may read twice
        --wake;
        s.reserved = true;
      }
      // The standby waits on its timer, not on work_ready: poked when the others are too few.
      poke_standby = wake > s.waiting && s.standby;
    }
    if (wake == 1) {
      state_->work_ready.notify_one();
    } else if (wake > 1) {
      state_->work_ready.notify_all();
    }
    if (poke_standby) state_->poke();
    return true;
  }

  // For the owner's thread: the oldest waiting job, with a slot, to run here, now (empty: none
  // waits, no slot is free, or stopping). Calling what it returns runs the job, then those
  // queued behind it (up to kRunHere in all, and for kRescueAfter / 2 = 2 ms at most: the jobs of
  // one read, as an inline server would), and frees the slot; it touches nothing of the pool but
  // the state its threads share.
  std::function<void()> take_here() {
    std::shared_ptr<Job> job;
    {
      std::lock_guard lock(state_->mutex);
      State& s = *state_;
      s.reserved = false;
      if (s.stopping || s.jobs.empty() || s.running >= s.slots) return {};
      job = std::make_shared<Job>(std::move(s.jobs.front()));
      s.jobs.pop_front();
      ++s.running;
      s.started_here();
    }
    return [s = state_, job = std::move(job)] {
      for (std::size_t ran = 1;; ++ran) {
        s->work(*job);
        std::lock_guard lock(s->mutex);
        // The standby times the whole run (here_since), not each job: a run of short jobs that
        // keeps the owner's thread away too long gets a stand-in too. So the run ends well
        // before that.
        if (ran < kRunHere && !s->stopping && !s->jobs.empty() &&
            std::chrono::steady_clock::now() - *s->here_since < kRescueAfter / 2) {
          *job = std::move(s->jobs.front());
          s->jobs.pop_front();
          continue;
        }
        s->here_since.reset();
        if (--s->running == 0) s->idle.notify_all();
        return;
      }
    };
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
      state_->poke();
      // Meanwhile a worker still stands in for the owner's thread while it runs a job.
      if (deadline == std::chrono::steady_clock::time_point::max()) {
        state_->idle.wait(lock, [this] { return state_->running == 0; });
      } else {
        state_->idle.wait_until(lock, deadline, [this] { return state_->running == 0; });
      }
      out.left_behind = state_->running;
      state_->finished = true;
      state_->work_ready.notify_all();
      state_->poke();
      // A worker standing in for the owner's thread hands its duties back now.
      if (end_rescue_) {
        lock.unlock();
        end_rescue_();
        lock.lock();
      }
      state_->rescue_over.wait(lock, [this] { return !state_->rescuing; });
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
  // Jobs the owner's thread runs in a row before it sees to the loop again.
  static constexpr std::size_t kRunHere = 64;
  // How long a job on the owner's thread runs before a worker stands in for that thread.
  static constexpr std::chrono::milliseconds kRescueAfter{5};

  struct State {
    State() {
      timer_fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
      wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (timer_fd < 0 || wake_fd < 0) {
        const int e = errno;
        close_fds();
        throw std::system_error(e, std::generic_category(), "worker pool timer");
      }
    }
    ~State() { close_fds(); }
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    void close_fds() {
      if (timer_fd >= 0) ::close(timer_fd);
      if (wake_fd >= 0) ::close(wake_fd);
    }

    // The owner's thread goes off to run jobs (under `mutex`). The standby sleeps on a timer,
    // which this arms kRescueAfter ahead unless it is armed already: then the standby, when it
    // goes off, finds this run younger than that and arms it again for when it is not. Never
    // disarmed, and armed by the owner's thread only when it had gone off: setting a timer
    // costs a few microseconds on a VM (the hardware timer is reprogrammed), so while jobs
    // keep coming the owner's thread sets none, and the standby wakes once a kRescueAfter.
    void started_here() {
      here_since = std::chrono::steady_clock::now();
      if (rescue && !armed) arm(kRescueAfter);
    }
    void arm(std::chrono::nanoseconds after) {
      armed = true;
      itimerspec t{};
      const auto ns = std::max<std::int64_t>(after.count(), 1);  // 0 would disarm it
      t.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      t.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      ::timerfd_settime(timer_fd, 0, &t, nullptr);
    }
    void poke() const {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
    }
    // The standby: sleeps until its timer goes off (true) or it is poked.
    bool stand_by() const {
      pollfd fds[2] = {{timer_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
      if (::poll(fds, 2, -1) <= 0) return false;
      std::uint64_t n;
      if (fds[1].revents & POLLIN) {
        [[maybe_unused]] ssize_t r = ::read(wake_fd, &n, sizeof n);
      }
      return (fds[0].revents & POLLIN) && ::read(timer_fd, &n, sizeof n) == sizeof n;
    }

    std::function<void(Job&)> work;
    std::function<void()> rescue;
    int timer_fd = -1;
    int wake_fd = -1;
    std::mutex mutex;
    std::condition_variable work_ready;
    std::condition_variable idle;         // running dropped to 0
    std::condition_variable rescue_over;  // rescuing went false
    std::deque<Job> jobs;
    std::size_t slots = 1;
    std::size_t running = 0;  // jobs running, on workers or on the owner's thread
    bool stopping = false;    // no more jobs
    bool finished = false;    // and no more stand-ins: the threads end
    // Since when the owner's thread runs jobs (take_here), for the standby to time.
    std::optional<std::chrono::steady_clock::time_point> here_since;
    bool reserved = false;    // a job submitted is left for take_here, no worker woken for it
    std::size_t waiting = 0;  // workers waiting on work_ready
    bool armed = false;       // the standby's timer is set
    bool standby = false;     // a worker keeps watch over the owner's thread's jobs
    bool rescuing = false;    // a worker runs `rescue`
  };

  static void loop(State& s) {
    std::unique_lock lock(s.mutex);
    for (;;) {
      if (s.finished || (s.stopping && !s.rescue)) return;
      if (!s.stopping && !s.jobs.empty() && s.running < s.slots) {
        Job job = std::move(s.jobs.front());
        s.jobs.pop_front();
        ++s.running;
        // Whoever stood by (woken for this job) no longer does: another idle worker takes over.
        if (s.rescue && !s.standby && !s.rescuing && s.waiting > 0) s.work_ready.notify_one();
        lock.unlock();
        s.work(job);
        lock.lock();
        if (--s.running == 0) s.idle.notify_all();
        continue;
      }
      if (!s.rescue || s.standby || s.rescuing) {
        ++s.waiting;
        s.work_ready.wait(lock);
        --s.waiting;
        continue;
      }
      const auto now = std::chrono::steady_clock::now();
      if (s.here_since && now - *s.here_since >= kRescueAfter) {  // (nobody rescues: above)
        s.rescuing = true;
        lock.unlock();
        s.rescue();  // returns once the owner's thread is back (or on stop)
        lock.lock();
        s.rescuing = false;
        s.rescue_over.notify_all();
        // Not at once again for the same job: the owner's thread may just be coming back.
        if (s.here_since) {
          ++s.waiting;
          s.work_ready.wait_until(lock, now + kRescueAfter);
          --s.waiting;
        }
        continue;
      }
      // A job here, not yet old enough (else the rescue above): wake when it would be.
      if (s.here_since && !s.armed) s.arm(*s.here_since + kRescueAfter - now);
      s.standby = true;
      lock.unlock();
      const bool went_off = s.stand_by();
      lock.lock();
      s.standby = false;
      if (went_off) s.armed = false;
    }
  }

  std::shared_ptr<State> state_;
  std::function<void()> end_rescue_;
  std::vector<std::thread> threads_;  // the stopping thread's
  std::vector<std::thread::id> ids_;  // fixed at construction
  bool stopped_ = false;              // the stopping thread's
};

}  // namespace amqprpc::detail
