#include "handoff.hpp"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <thread>

namespace bench {

namespace {

double process_cpu_us() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

void pin(pthread_t thread, int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  ::pthread_setaffinity_np(thread, sizeof set, &set);
}

// One measurement: `core` < 0 leaves the threads free.
void round_trips(int n, int core, double& wall_us, double& cpu_us) {
  std::mutex mutex;
  std::condition_variable ready;
  bool token = false;  // at the worker
  const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  cpu_set_t was;
  ::pthread_getaffinity_np(::pthread_self(), sizeof was, &was);
  if (core >= 0) pin(::pthread_self(), core);
  std::thread worker([&] {
    for (int i = 0; i < n; ++i) {
      {
        std::unique_lock lock(mutex);
        ready.wait(lock, [&] { return token; });
        token = false;
      }
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(efd, &one, sizeof one);
    }
  });
  if (core >= 0) pin(worker.native_handle(), core);
  const double cpu0 = process_cpu_us();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    {
      std::lock_guard lock(mutex);
      token = true;
    }
    ready.notify_one();
    pollfd p{efd, POLLIN, 0};
    while (::poll(&p, 1, -1) != 1) {
      if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll");
    }
    std::uint64_t value;
    [[maybe_unused]] ssize_t r = ::read(efd, &value, sizeof value);
  }
  wall_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n;
  cpu_us = (process_cpu_us() - cpu0) / n;
  worker.join();
  ::close(efd);
  ::pthread_setaffinity_np(::pthread_self(), sizeof was, &was);
}

}  // namespace

HandoffCost measure_handoff(int n) {
  HandoffCost c;
  round_trips(n / 10 + 1, -1, c.any_core_wall_us, c.any_core_cpu_us);  // warm-up
  round_trips(n, -1, c.any_core_wall_us, c.any_core_cpu_us);
  const int core = ::sched_getcpu();
  round_trips(n, core < 0 ? 0 : core, c.same_core_wall_us, c.same_core_cpu_us);
  return c;
}

}  // namespace bench
