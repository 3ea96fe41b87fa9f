// Retry and hedging policies as pure functions: validation, which policy governs a call, the
// backoff before a retry and whether one can still be made before the deadline. The moving
// parts (timers, attempts in flight) are in retry.hpp.
#pragma once

#include <chrono>
#include <optional>

#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc::detail {

// gRPC's cap on max_attempts, for both policies: more would multiply a failing service's load.
inline constexpr int kMaxPolicyAttempts = 5;

// Why a policy cannot work (invalid_argument, naming the field), or ok.
Status validate(const RetryPolicy& policy);
Status validate(const HedgingPolicy& policy);
// The client's defaults: each valid, and not both on (max_attempts > 1).
Status validate_defaults(const RetryPolicy& retry, const HedgingPolicy& hedging);

// What governs one call: nothing (one attempt), a retry policy or a hedging policy, or a refusal
// (invalid_argument). The pointers point into the options given.
struct CallPolicy {
  enum class Kind { none, retry, hedging, invalid };
  Kind kind = Kind::none;
  const RetryPolicy* retry = nullptr;
  const HedgingPolicy* hedging = nullptr;
  Status invalid;
};
// The call's own policy wins over the client's defaults (which validate_defaults checked); a
// policy with max_attempts 1, a call that is not idempotent and a one-way call get none. A bad
// policy of the call's own is refused even then: it is a mistake either way.
CallPolicy policy_for(const CallOptions& call, bool oneway, const RetryPolicy& default_retry,
                      const HedgingPolicy& default_hedging);

bool retryable(const RetryPolicy& policy, StatusCode code);
bool non_fatal(const HedgingPolicy& policy, StatusCode code);

// The longest wait before attempt `attempt` (2 is the first retry): min(initial_backoff *
// backoff_multiplier^(attempt-2), max_backoff).
std::chrono::microseconds backoff_ceiling(const RetryPolicy& policy, int attempt);
// The wait before attempt `attempt` with full jitter: `unit_random` (uniform in [0, 1)) times
// the ceiling.
std::chrono::microseconds retry_backoff(const RetryPolicy& policy, int attempt, double unit_random);

// When attempt `attempts + 1` of a call under `policy` goes, now that attempt `attempts` ended
// with `code` at `now`; nullopt when the call ends with that outcome instead: a success, a code
// that is not retryable, no attempts left, or a wait that would reach the call's deadline (an
// attempt that cannot start before it is not made).
std::optional<std::chrono::steady_clock::time_point> next_retry(
    const RetryPolicy& policy, int attempts, StatusCode code,
    std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline,
    double unit_random);

}  // namespace amqprpc::detail
