// The writing side of the metrics: atomics that one thread updates and any thread snapshots.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <map>

#include "amqprpc/metrics.hpp"

namespace amqprpc::detail {

class LatencyRecorder {
 public:
  void record(std::chrono::steady_clock::duration d) {
    auto us = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(d).count());
    counts_[static_cast<std::size_t>(LatencyHistogram::bucket_of(us))].fetch_add(
        1, std::memory_order_relaxed);
    sum_us_.fetch_add(us, std::memory_order_relaxed);
    auto prev = max_us_.load(std::memory_order_relaxed);
    while (us > prev && !max_us_.compare_exchange_weak(prev, us, std::memory_order_relaxed)) {
    }
  }
  LatencyHistogram snapshot() const {
    LatencyHistogram::Buckets b;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = counts_[i].load(std::memory_order_relaxed);
    return LatencyHistogram(b, sum_us_.load(std::memory_order_relaxed),
                            max_us_.load(std::memory_order_relaxed));
  }

 private:
  std::array<std::atomic<std::uint64_t>, LatencyHistogram::kBuckets> counts_{};
  std::atomic<std::uint64_t> sum_us_{0};
  std::atomic<std::uint64_t> max_us_{0};
};

class ErrorCounter {
 public:
  void count(StatusCode code) {
    codes_[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
  }
  std::map<StatusCode, std::uint64_t> snapshot() const {
    std::map<StatusCode, std::uint64_t> out;
    for (std::size_t i = 1; i < codes_.size(); ++i) {  // 0 is ok
      if (auto n = codes_[i].load(std::memory_order_relaxed)) out[static_cast<StatusCode>(i)] = n;
    }
    return out;
  }

 private:
  std::array<std::atomic<std::uint64_t>, 16> codes_{};
};

}  // namespace amqprpc::detail
