#include "amqprpc/metrics.hpp"

#include <gtest/gtest.h>

#include "metrics_recorder.hpp"

using amqprpc::LatencyHistogram;
using namespace std::chrono_literals;

TEST(LatencyHistogram, BucketsGrowBySquareRootOfTwoAndCoverEveryValue) {
  EXPECT_EQ(LatencyHistogram::bucket_of(0), 0);
  EXPECT_EQ(LatencyHistogram::bucket_of(1), 0);
  for (std::uint64_t us : {2ull, 3ull, 100ull, 1000ull, 123456ull, 10'000'000ull}) {
    int b = LatencyHistogram::bucket_of(us);
    EXPECT_GE(LatencyHistogram::upper_bound_us(b), us) << us;
    if (b > 0) {
      EXPECT_LT(LatencyHistogram::upper_bound_us(b - 1), us) << us;
    }
  }
  EXPECT_EQ(LatencyHistogram::bucket_of(~0ull >> 1), LatencyHistogram::kBuckets - 1);
  // Bounds are ceil(2^(b/2)) us, inside the table and out of it.
  EXPECT_EQ(LatencyHistogram::upper_bound_us(0), 1u);
  EXPECT_EQ(LatencyHistogram::upper_bound_us(1), 2u);
  EXPECT_EQ(LatencyHistogram::upper_bound_us(20), 1024u);
  EXPECT_EQ(LatencyHistogram::upper_bound_us(21), 1449u);
  EXPECT_EQ(LatencyHistogram::upper_bound_us(-2), 1u);
  EXPECT_EQ(LatencyHistogram::upper_bound_us(LatencyHistogram::kBuckets), 1ull << 31);  // 62: 2^31
}

TEST(LatencyHistogram, PercentilesAreBucketBoundsCappedAtTheMaximum) {
  amqprpc::detail::LatencyRecorder r;
  for (int i = 0; i < 90; ++i) r.record(100us);
  for (int i = 0; i < 10; ++i) r.record(10ms);
  LatencyHistogram h = r.snapshot();
  EXPECT_EQ(h.count(), 100u);
  EXPECT_GE(h.percentile(50), 100us);
  EXPECT_LT(h.percentile(50), 142us);  // within one bucket (x1.41) of the truth
  EXPECT_GE(h.percentile(99), 10ms);
  EXPECT_EQ(h.percentile(100), 10ms);  // capped at the largest value seen
  EXPECT_EQ(h.max(), 10ms);
  EXPECT_NEAR(h.mean_us(), 0.9 * 100 + 0.1 * 10000, 1);
  EXPECT_EQ(LatencyHistogram().percentile(50), 0us);
}

TEST(ErrorCounter, CountsByCode) {
  amqprpc::detail::ErrorCounter c;
  c.count(amqprpc::StatusCode::unavailable);
  c.count(amqprpc::StatusCode::unavailable);
  c.count(amqprpc::StatusCode::internal);
  auto m = c.snapshot();
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m[amqprpc::StatusCode::unavailable], 2u);
  EXPECT_EQ(m[amqprpc::StatusCode::internal], 1u);
}
