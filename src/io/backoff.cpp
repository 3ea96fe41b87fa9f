#include "io/backoff.hpp"

#include <algorithm>
#include <cstdint>

namespace amqprpc::detail {

Status validate(const ReconnectOptions& r) {
  if (!r.enabled) return {};
  if (r.initial_delay.count() < 1 || r.max_delay < r.initial_delay || !(r.multiplier >= 1.0) ||
      !(r.jitter >= 0.0) || !(r.jitter < 1.0)) {
    return {StatusCode::invalid_argument,
            "reconnect options: need initial_delay >= 1 ms, max_delay >= initial_delay, "
            "multiplier >= 1 and 0 <= jitter < 1"};
  }
  return {};
}

std::chrono::milliseconds backoff_delay(std::chrono::milliseconds backoff,
                                        const ReconnectOptions& options, double unit_random) {
  const double factor = 1.0 - options.jitter + 2.0 * options.jitter * unit_random;
  return std::chrono::milliseconds(
      static_cast<std::int64_t>(static_cast<double>(backoff.count()) * factor));
}

std::chrono::milliseconds backoff_grow(std::chrono::milliseconds backoff,
                                       const ReconnectOptions& options) {
  const double grown = static_cast<double>(backoff.count()) * options.multiplier;
  const double bound = static_cast<double>(options.max_delay.count());
  return std::clamp(std::chrono::milliseconds(static_cast<std::int64_t>(std::min(grown, bound))),
                    options.initial_delay, options.max_delay);
}

}  // namespace amqprpc::detail
