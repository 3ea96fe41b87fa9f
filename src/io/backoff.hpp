// Reconnect timing as pure functions: exponential backoff with jitter, bounded.
#pragma once

#include <chrono>

#include "amqprpc/options.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc::detail {

// Why these options cannot work (invalid_argument), or ok. Disabled options are always fine.
Status validate(const ReconnectOptions& options);

// The wait before the next attempt: `backoff` stretched or shrunk by the jitter, where
// `unit_random` is uniform in [0, 1).
std::chrono::milliseconds backoff_delay(std::chrono::milliseconds backoff,
                                        const ReconnectOptions& options, double unit_random);

// The backoff after one more failed attempt: multiplied, kept within [initial, max].
std::chrono::milliseconds backoff_grow(std::chrono::milliseconds backoff,
                                       const ReconnectOptions& options);

}  // namespace amqprpc::detail
