#include "amqprpc/metrics.hpp"

#include <cmath>

namespace amqprpc {

int LatencyHistogram::bucket_of(std::uint64_t us) {
  if (us <= 1) return 0;
  // Smallest i with 2^(i/2) >= us.
  int i = static_cast<int>(std::ceil(2.0 * std::log2(static_cast<double>(us))));
  while (i > 0 && upper_bound_us(i - 1) >= us) --i;
  while (i < kBuckets - 1 && upper_bound_us(i) < us) ++i;
  return i < kBuckets ? i : kBuckets - 1;
}

std::uint64_t LatencyHistogram::upper_bound_us(int bucket) {
  return static_cast<std::uint64_t>(std::ceil(std::pow(2.0, bucket / 2.0)));
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
