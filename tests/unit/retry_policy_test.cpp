// Retry and hedging policies as pure functions: validation, which policy governs a call, the
// backoff with full jitter, and the deadline that stops retries.
#include "client/retry_policy.hpp"

#include <gtest/gtest.h>

#include <limits>

using namespace amqprpc;
using namespace std::chrono_literals;
using detail::backoff_ceiling;
using detail::CallPolicy;
using detail::next_retry;
using detail::policy_for;
using detail::retry_backoff;
using Clock = std::chrono::steady_clock;

namespace {

RetryPolicy retry(int attempts) {
  RetryPolicy p;
  p.max_attempts = attempts;
  p.initial_backoff = 100ms;
  p.max_backoff = 1000ms;
  p.backoff_multiplier = 2.0;
  return p;
}

HedgingPolicy hedging(int attempts) {
  HedgingPolicy p;
  p.max_attempts = attempts;
  return p;
}

template <class Policy, class Change>
StatusCode validated(Policy p, Change change) {
  change(p);
  return detail::validate(p).code();
}

}  // namespace

TEST(RetryBackoff, TheCeilingGrowsByTheMultiplierFromTheFirstRetryUpToTheMaximum) {
  const RetryPolicy p = retry(5);
  EXPECT_EQ(backoff_ceiling(p, 2), 100ms) << "before the first retry: initial_backoff";
  EXPECT_EQ(backoff_ceiling(p, 3), 200ms);
  EXPECT_EQ(backoff_ceiling(p, 4), 400ms);
  EXPECT_EQ(backoff_ceiling(p, 5), 800ms);
  EXPECT_EQ(backoff_ceiling(p, 6), 1000ms) << "capped at max_backoff";
  EXPECT_EQ(backoff_ceiling(p, 1000), 1000ms) << "no overflow for large exponents";
  RetryPolicy flat = p;
  flat.backoff_multiplier = 1.0;
  EXPECT_EQ(backoff_ceiling(flat, 5), 100ms);
}

TEST(RetryBackoff, FullJitterDrawsFromZeroToTheCeiling) {
  const RetryPolicy p = retry(5);
  EXPECT_EQ(retry_backoff(p, 3, 0.0), 0ms);
  EXPECT_EQ(retry_backoff(p, 3, 0.5), 100ms);
  EXPECT_LT(retry_backoff(p, 3, 0.999999), 200ms);
  EXPECT_GE(retry_backoff(p, 3, 0.999999), 199ms);
  for (double u : {0.0, 0.1, 0.37, 0.5, 0.9, 0.999}) {
    for (int attempt = 2; attempt <= 8; ++attempt) {
      const auto wait = retry_backoff(p, attempt, u);
      EXPECT_GE(wait, 0ms);
      EXPECT_LE(wait, backoff_ceiling(p, attempt)) << "attempt " << attempt << ", u " << u;
    }
  }
}

TEST(RetryBackoff, HugeBackoffsAreClampedToThirtyDaysInsteadOfOverflowing) {
  RetryPolicy p = retry(5);
  p.initial_backoff = std::chrono::milliseconds::max();
  p.max_backoff = std::chrono::milliseconds::max();
  EXPECT_EQ(backoff_ceiling(p, 2), std::chrono::hours(24 * 30));
  const auto now = Clock::now();
  EXPECT_EQ(next_retry(p, 1, StatusCode::unavailable, now, now + 1h, 0.999), std::nullopt);
}

TEST(NextRetry, ARetryableFailureWithAttemptsLeftWaitsItsBackoff) {
  const RetryPolicy p = retry(3);
  const auto now = Clock::now();
  auto at = next_retry(p, 1, StatusCode::unavailable, now, now + 10s, 0.5);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(*at - now, 50ms) << "half of the first ceiling, 100 ms";
  at = next_retry(p, 2, StatusCode::unavailable, now, now + 10s, 0.5);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(*at - now, 100ms) << "half of the second ceiling, 200 ms";
}

TEST(NextRetry, SuccessACodeNotRetryableOrNoAttemptsLeftEndTheCall) {
  const RetryPolicy p = retry(3);
  const auto now = Clock::now();
  EXPECT_EQ(next_retry(p, 1, StatusCode::ok, now, now + 10s, 0.5), std::nullopt);
  EXPECT_EQ(next_retry(p, 1, StatusCode::invalid_argument, now, now + 10s, 0.5), std::nullopt);
  EXPECT_EQ(next_retry(p, 1, StatusCode::cancelled, now, now + 10s, 0.5), std::nullopt);
  EXPECT_EQ(next_retry(p, 3, StatusCode::unavailable, now, now + 10s, 0.5), std::nullopt)
      << "the third of three attempts was the last";
  RetryPolicy more = p;
  more.retryable_codes = {StatusCode::unavailable, StatusCode::internal};
  EXPECT_TRUE(next_retry(more, 1, StatusCode::internal, now, now + 10s, 0.5).has_value());
}

TEST(NextRetry, AnAttemptThatCouldNotStartBeforeTheDeadlineIsNotMade) {
  const RetryPolicy p = retry(5);
  const auto now = Clock::now();
  // Backoff 50 ms (u = 0.5 of 100 ms).
  EXPECT_TRUE(next_retry(p, 1, StatusCode::unavailable, now, now + 51ms, 0.5).has_value());
  EXPECT_EQ(next_retry(p, 1, StatusCode::unavailable, now, now + 50ms, 0.5), std::nullopt)
      << "it would start just as the deadline passes";
  EXPECT_EQ(next_retry(p, 1, StatusCode::unavailable, now, now + 10ms, 0.5), std::nullopt);
  EXPECT_EQ(next_retry(p, 1, StatusCode::unavailable, now, now - 1ms, 0.0), std::nullopt)
      << "the deadline has passed: not even an immediate retry";
}

TEST(PolicyValidation, GoodPoliciesAndTheDefaultsPass) {
  EXPECT_TRUE(detail::validate(RetryPolicy{}).ok());
  EXPECT_TRUE(detail::validate(HedgingPolicy{}).ok());
  EXPECT_TRUE(detail::validate(retry(5)).ok());
  EXPECT_TRUE(detail::validate(hedging(5)).ok());
  HedgingPolicy all_at_once = hedging(3);
  all_at_once.delay = 0ms;
  EXPECT_TRUE(detail::validate(all_at_once).ok()) << "delay 0 sends every attempt at once";
}

TEST(PolicyValidation, NonsenseRetryPoliciesAreRefusedNamingTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const RetryPolicy p = retry(3);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.max_attempts = 0; }), StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.max_attempts = -1; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.max_attempts = 6; }), StatusCode::invalid_argument)
      << "gRPC's cap is 5";
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.initial_backoff = 0ms; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.initial_backoff = -5ms; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.max_backoff = 50ms; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.backoff_multiplier = 0.5; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [&](RetryPolicy& r) { r.backoff_multiplier = nan; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [&](RetryPolicy& r) { r.backoff_multiplier = inf; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.retryable_codes.clear(); }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](RetryPolicy& r) { r.retryable_codes.push_back(StatusCode::ok); }),
            StatusCode::invalid_argument);
  EXPECT_EQ(
      validated(p, [](RetryPolicy& r) { r.retryable_codes.push_back(StatusCode::cancelled); }),
      StatusCode::invalid_argument);
  RetryPolicy bad = p;
  bad.max_backoff = 50ms;
  EXPECT_NE(detail::validate(bad).message().find("max_backoff"), std::string::npos)
      << detail::validate(bad).message();
  RetryPolicy off = p;
  off.max_attempts = 1;
  off.initial_backoff = 0ms;
  EXPECT_TRUE(detail::validate(off).ok()) << "the backoff of a policy that never retries is unused";
}

TEST(PolicyValidation, NonsenseHedgingPoliciesAreRefused) {
  const HedgingPolicy p = hedging(3);
  EXPECT_EQ(validated(p, [](HedgingPolicy& h) { h.max_attempts = 0; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](HedgingPolicy& h) { h.max_attempts = 6; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](HedgingPolicy& h) { h.delay = -1ms; }), StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](HedgingPolicy& h) { h.non_fatal_codes = {StatusCode::ok}; }),
            StatusCode::invalid_argument);
  EXPECT_EQ(validated(p, [](HedgingPolicy& h) { h.non_fatal_codes = {StatusCode::cancelled}; }),
            StatusCode::invalid_argument);
}

TEST(PolicyValidation, TheClientsDefaultsMayNotTurnOnBothPolicies) {
  EXPECT_TRUE(detail::validate_defaults(retry(3), hedging(1)).ok());
  EXPECT_TRUE(detail::validate_defaults(retry(1), hedging(3)).ok());
  EXPECT_EQ(detail::validate_defaults(retry(3), hedging(2)).code(), StatusCode::invalid_argument);
  EXPECT_EQ(detail::validate_defaults(retry(7), hedging(1)).code(), StatusCode::invalid_argument);
}

TEST(PolicyFor, OnlyIdempotentCallsGetAPolicy) {
  CallOptions call;
  call.retry = retry(3);
  EXPECT_EQ(policy_for(call, false, RetryPolicy{}, HedgingPolicy{}).kind, CallPolicy::Kind::none);
  call.idempotent = true;
  auto chosen = policy_for(call, false, RetryPolicy{}, HedgingPolicy{});
  EXPECT_EQ(chosen.kind, CallPolicy::Kind::retry);
  EXPECT_EQ(chosen.retry, &*call.retry);
  EXPECT_EQ(policy_for(call, /*oneway=*/true, RetryPolicy{}, HedgingPolicy{}).kind,
            CallPolicy::Kind::none)
      << "one-way calls are out of scope";
}

TEST(PolicyFor, TheCallsOwnPolicyReplacesBothDefaults) {
  const RetryPolicy default_retry = retry(1);
  const HedgingPolicy default_hedging = hedging(3);
  CallOptions call;
  call.idempotent = true;
  EXPECT_EQ(policy_for(call, false, default_retry, default_hedging).kind,
            CallPolicy::Kind::hedging);
  EXPECT_EQ(policy_for(call, false, default_retry, default_hedging).hedging, &default_hedging);
  call.retry = retry(1);
  EXPECT_EQ(policy_for(call, false, default_retry, default_hedging).kind, CallPolicy::Kind::none)
      << "a call's one-attempt retry policy turns the client's hedging off";
  call.retry = retry(4);
  EXPECT_EQ(policy_for(call, false, default_retry, default_hedging).kind, CallPolicy::Kind::retry);
}

TEST(PolicyFor, BadOrConflictingPoliciesOfTheCallAreRefusedEvenWhenNotIdempotent) {
  CallOptions call;
  call.retry = retry(3);
  call.hedging = hedging(2);
  auto both = policy_for(call, false, RetryPolicy{}, HedgingPolicy{});
  EXPECT_EQ(both.kind, CallPolicy::Kind::invalid);
  EXPECT_EQ(both.invalid.code(), StatusCode::invalid_argument);
  call.hedging.reset();
  call.retry->max_attempts = 9;
  EXPECT_EQ(policy_for(call, false, RetryPolicy{}, HedgingPolicy{}).kind,
            CallPolicy::Kind::invalid);
  call.idempotent = true;
  EXPECT_EQ(policy_for(call, false, RetryPolicy{}, HedgingPolicy{}).kind,
            CallPolicy::Kind::invalid);
}
