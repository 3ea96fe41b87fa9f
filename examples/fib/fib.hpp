// The demo's domain: exact Fibonacci numbers and the parsing of a request body.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "amqprpc/message.hpp"
#include "amqprpc/status.hpp"

namespace fib {

inline constexpr std::uint64_t kDefaultLimit = 10'000;

// fib(n) in decimal, exact (fib(100) = "354224848179261915075"). Linear in n additions over
// base-10^18 limbs.
std::string fibonacci(std::uint64_t n);

// Reads a request body the way the seed's int(body) would for sane input: optional ASCII
// whitespace around, an optional '+', decimal digits. Errors name what is wrong.
amqprpc::Result<std::uint64_t> parse_n(std::string_view body, std::uint64_t limit);

// The server's handler logic: body in, reply out (error replies for bad input).
amqprpc::Reply handle(std::string_view body, std::uint64_t limit);

}  // namespace fib
