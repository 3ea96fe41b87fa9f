// The demo's domain: exact Fibonacci numbers and the parsing of a request body.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "amqprpc/message.hpp"
#include "amqprpc/service.hpp"
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

// The typed method `Fib`, in JSON: {"n": 10} -> {"n": 10, "fib": "55"} (the number as a string:
// fib(10000) has 2090 digits).
struct FibRequest {
  std::uint64_t n = 0;
};
struct FibReply {
  std::uint64_t n = 0;
  std::string fib;
};
void to_json(nlohmann::json& j, const FibRequest& r);
void from_json(const nlohmann::json& j, FibRequest& r);  // n must be a whole number >= 0
void to_json(nlohmann::json& j, const FibReply& r);
void from_json(const nlohmann::json& j, FibReply& r);

// The demo's service on `queue`: the seed's decimal bodies (no method) to the default handler,
// and the typed method Fib. `on_request`, when set, sees each request and its reply (logging).
amqprpc::Service service(
    const std::string& queue, std::uint64_t limit,
    std::function<void(const amqprpc::Request&, const amqprpc::Reply&)> on_request = {});

}  // namespace fib
