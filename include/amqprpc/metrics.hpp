// Numbers an operator wants: a latency histogram and counts of errors by status code.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>

#include "amqprpc/status.hpp"

namespace amqprpc {

// Latencies in buckets growing by sqrt(2) from 1 µs (bucket i holds values up to 2^(i/2) µs;
// the last one everything longer, about 18 minutes and more). A snapshot: a plain value.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 62;
  using Buckets = std::array<std::uint64_t, kBuckets>;

  LatencyHistogram() { counts_.fill(0); }
  LatencyHistogram(const Buckets& counts, std::uint64_t sum_us, std::uint64_t max_us)
      : counts_(counts), sum_us_(sum_us), max_us_(max_us) {}

  static int bucket_of(std::uint64_t us);
  static std::uint64_t upper_bound_us(int bucket);

  std::uint64_t count() const;
  // The upper bound of the bucket holding the p-th percentile (0 < p <= 100); 0 when empty.
  std::chrono::microseconds percentile(double p) const;
  std::chrono::microseconds max() const { return std::chrono::microseconds(max_us_); }
  double mean_us() const;
  const Buckets& buckets() const { return counts_; }

 private:
  Buckets counts_;
  std::uint64_t sum_us_ = 0;
  std::uint64_t max_us_ = 0;
};

}  // namespace amqprpc
