// libFuzzer target: the demo's request parsing. Any body: no crash; a parsed n is within the
// limit and is what the digits say; the reply for it is right.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "fib.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  constexpr std::uint64_t kLimit = 300;
  auto n = fib::parse_n(body, kLimit);
  if (n) {
    if (*n > kLimit) std::abort();
    if (body.find_first_of("0123456789") == std::string::npos) std::abort();
    amqprpc::Reply r = fib::handle(body, kLimit);
    if (!r.status.ok() || r.body != fib::fibonacci(*n)) std::abort();
  } else if (n.status().code() != amqprpc::StatusCode::invalid_argument ||
             n.status().message().empty()) {
    std::abort();
  }
  return 0;
}
