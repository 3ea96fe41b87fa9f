#include "amqprpc/metrics.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace amqprpc {

namespace {

// Bucket i holds latencies up to ceil(2^(i/2)) us.
std::uint64_t bound_of(int bucket) {
  return static_cast<std::uint64_t>(std::ceil(std::pow(2.0, bucket / 2.0)));
}

// The buckets' bounds, computed once and looked up on every call (two calls to pow() a
// recording cost more than the rest of it).
const std::array<std::uint64_t, LatencyHistogram::kBuckets>& upper_bounds() {
  static const auto bounds = [] {
    std::array<std::uint64_t, LatencyHistogram::kBuckets> b{};
    for (int i = 0; i < LatencyHistogram::kBuckets; ++i)
      b[static_cast<std::size_t>(i)] = bound_of(i);
    return b;
  }();
  return bounds;
}

}  // namespace

int LatencyHistogram::bucket_of(std::uint64_t us) {
  // The first bucket whose bound is at least `us`; the last one takes everything above.
  const auto& bounds = upper_bounds();
  const auto it = std::lower_bound(bounds.begin(), bounds.end() - 1, us);
  return static_cast<int>(it - bounds.begin());
}

std::uint64_t LatencyHistogram::upper_bound_us(int bucket) {
  if (bucket < 0 || bucket >= kBuckets) return bound_of(bucket);
  return upper_bounds()[static_cast<std::size_t>(bucket)];
}

std::uint64_t LatencyHistogram::count() const {
  std::uint64_t n = 0;
  for (auto c : counts_) n += c;
  return n;
}

std::chrono::microseconds LatencyHistogram::percentile(double p) const {
  std::uint64_t n = count();
  if (n == 0) return std::chrono::microseconds(0);
  auto rank = static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(n)));
  if (rank == 0) rank = 1;
  std::uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      auto bound = upper_bound_us(i);
      return std::chrono::microseconds(bound < max_us_ ? bound : max_us_);
    }
  }
  return std::chrono::microseconds(max_us_);
}

double LatencyHistogram::mean_us() const {
  std::uint64_t n = count();
  return n == 0 ? 0.0 : static_cast<double>(sum_us_) / static_cast<double>(n);
}

}  // namespace amqprpc
