#include "client/retry_policy.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace amqprpc::detail {

namespace {

bool contains(const std::vector<StatusCode>& codes, StatusCode code) {
  return std::find(codes.begin(), codes.end(), code) != codes.end();
}

Status refuse(std::string what) {
  return {StatusCode::invalid_argument, std::move(what)};
}

Status check_attempts(int max_attempts, const char* policy) {
  if (max_attempts >= 1 && max_attempts <= kMaxPolicyAttempts) return {};
  return refuse(std::string(policy) + ": max_attempts must be 1 (one attempt) to " +
                std::to_string(kMaxPolicyAttempts) + ", got " + std::to_string(max_attempts));
}

// ok and cancelled are never worth another attempt: one is a success, the other means the
// caller or the client gave up.
Status check_codes(const std::vector<StatusCode>& codes, const char* policy, const char* field) {
  for (StatusCode code : {StatusCode::ok, StatusCode::cancelled}) {
    if (contains(codes, code)) {
      return refuse(std::string(policy) + ": " + field + " must not hold " +
                    std::string(to_string(code)));
    }
  }
  return {};
}

}  // namespace

Status validate(const RetryPolicy& p) {
  if (Status st = check_attempts(p.max_attempts, "retry policy"); !st.ok()) return st;
  if (p.max_attempts == 1) return {};  // off: the rest does not matter
  if (p.initial_backoff.count() <= 0) {
    return refuse("retry policy: initial_backoff must be positive, got " +
                  std::to_string(p.initial_backoff.count()) + " ms");
  }
  if (p.max_backoff < p.initial_backoff) {
    return refuse("retry policy: max_backoff (" + std::to_string(p.max_backoff.count()) +
                  " ms) must not be below initial_backoff (" +
                  std::to_string(p.initial_backoff.count()) + " ms)");
  }
  if (!(p.backoff_multiplier >= 1.0) || !std::isfinite(p.backoff_multiplier)) {
    return refuse("retry policy: backoff_multiplier must be a finite number >= 1, got " +
                  std::to_string(p.backoff_multiplier));
  }
  if (p.retryable_codes.empty()) {
    return refuse("retry policy: retryable_codes is empty: no failure would be retried");
  }
  return check_codes(p.retryable_codes, "retry policy", "retryable_codes");
}

Status validate(const HedgingPolicy& p) {
  if (Status st = check_attempts(p.max_attempts, "hedging policy"); !st.ok()) return st;
  if (p.max_attempts == 1) return {};
  if (p.delay.count() < 0) {
    return refuse("hedging policy: delay must not be negative, got " +
                  std::to_string(p.delay.count()) + " ms");
  }
  return check_codes(p.non_fatal_codes, "hedging policy", "non_fatal_codes");
}

Status validate_defaults(const RetryPolicy& retry, const HedgingPolicy& hedging) {
  if (Status st = validate(retry); !st.ok()) return st;
  if (Status st = validate(hedging); !st.ok()) return st;
  if (retry.max_attempts > 1 && hedging.max_attempts > 1) {
    return refuse(
        "ClientOptions: retry and hedging are both on (max_attempts > 1); a call follows one "
        "policy or the other");
  }
  return {};
}

CallPolicy policy_for(const CallOptions& call, bool oneway, const RetryPolicy& default_retry,
                      const HedgingPolicy& default_hedging) {
  CallPolicy out;
  const RetryPolicy* retry = &default_retry;
  const HedgingPolicy* hedging = &default_hedging;
  if (call.retry || call.hedging) {
    if (call.retry && call.hedging) {
      out.kind = CallPolicy::Kind::invalid;
      out.invalid = refuse(
          "CallOptions: retry and hedging are both set; a call follows one policy or the other");
      return out;
    }
    if (call.retry) {
      if (Status st = validate(*call.retry); !st.ok()) {
        out.kind = CallPolicy::Kind::invalid;
        out.invalid = std::move(st);
        return out;
      }
      retry = &*call.retry;
      hedging = nullptr;
    } else {
      if (Status st = validate(*call.hedging); !st.ok()) {
        out.kind = CallPolicy::Kind::invalid;
        out.invalid = std::move(st);
        return out;
      }
      hedging = &*call.hedging;
      retry = nullptr;
    }
  }
  if (!call.idempotent || oneway) return out;
  if (retry != nullptr && retry->max_attempts > 1) {
    out.kind = CallPolicy::Kind::retry;
    out.retry = retry;
  } else if (hedging != nullptr && hedging->max_attempts > 1) {
    out.kind = CallPolicy::Kind::hedging;
    out.hedging = hedging;
  }
  return out;
}

bool retryable(const RetryPolicy& policy, StatusCode code) {
  return code != StatusCode::ok && code != StatusCode::cancelled &&
         contains(policy.retryable_codes, code);
}

bool non_fatal(const HedgingPolicy& policy, StatusCode code) {
  return code != StatusCode::ok && code != StatusCode::cancelled &&
         contains(policy.non_fatal_codes, code);
}

std::chrono::microseconds backoff_ceiling(const RetryPolicy& policy, int attempt) {
  using std::chrono::microseconds;
  // In doubles: neither a large exponent nor a huge max_backoff may overflow; no call lives
  // longer than 30 days (timeouts are clamped so), nor need any wait.
  constexpr double kLongest = 30.0 * 24 * 3600 * 1e6;
  const double max_us = std::min(static_cast<double>(policy.max_backoff.count()) * 1e3, kLongest);
  double us = static_cast<double>(policy.initial_backoff.count()) * 1e3 *
              std::pow(policy.backoff_multiplier, std::max(attempt - 2, 0));
  if (!(us < max_us)) us = max_us;
  return microseconds(static_cast<microseconds::rep>(std::max(us, 0.0)));
}

std::chrono::microseconds retry_backoff(const RetryPolicy& policy, int attempt,
                                        double unit_random) {
  const auto ceiling = backoff_ceiling(policy, attempt);
  const double unit = std::clamp(unit_random, 0.0, 1.0);
  return std::chrono::microseconds(
      static_cast<std::chrono::microseconds::rep>(static_cast<double>(ceiling.count()) * unit));
}

std::optional<std::chrono::steady_clock::time_point> next_retry(
    const RetryPolicy& policy, int attempts, StatusCode code,
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline,
    double unit_random) {
  if (!retryable(policy, code) || attempts >= policy.max_attempts) return std::nullopt;
  const auto at = now + retry_backoff(policy, attempts + 1, unit_random);
  if (at >= deadline) return std::nullopt;
  return at;
}

}  // namespace amqprpc::detail
