#include "uuid.hpp"

#include <cstdint>

namespace amqprpc::detail {

UuidGenerator::UuidGenerator() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
  rng_.seed(seq);
}

std::string UuidGenerator::next() {
  std::uint64_t hi = rng_();
  std::uint64_t lo = rng_();
  hi = (hi & ~std::uint64_t{0xF000}) | 0x4000;                           // version 4
  lo = (lo & ~(std::uint64_t{0xC} << 60)) | (std::uint64_t{0x8} << 60);  // RFC 4122 variant
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  int pos = 0;
  auto put = [&](std::uint64_t v, int nibbles_from, int count) {
    for (int i = 0; i < count; ++i) {
      if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
      out[pos++] = kHex[(v >> (4 * (nibbles_from - 1 - i))) & 15];
    }
  };
  put(hi, 16, 16);
  put(lo, 16, 16);
  return out;
}

namespace {

void put_hex(std::string& out, std::uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) out.push_back(kHex[(v >> (4 * i)) & 15]);
}

}  // namespace

std::string UuidGenerator::trace_id() {
  std::uint64_t hi = rng_();
  std::uint64_t lo = rng_();
  if (hi == 0 && lo == 0) lo = 1;
  std::string out;
  out.reserve(32);
  put_hex(out, hi);
  put_hex(out, lo);
  return out;
}

std::string UuidGenerator::span_id() {
  std::uint64_t v = rng_();
  if (v == 0) v = 1;
  std::string out;
  out.reserve(16);
  put_hex(out, v);
  return out;
}

}  // namespace amqprpc::detail
