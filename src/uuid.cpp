#include "uuid.hpp"

#include <cstdint>

namespace amqprpc::detail {

UuidGenerator::UuidGenerator() {
  std::random_device rd;
  std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
  rng_.seed(seq);
}

namespace {

constexpr char kHex[] = "0123456789abcdef";

// The `digits` low nibbles of v as lowercase hex, most significant first, at `out`.
void put_hex(char* out, std::uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; --i) {
    out[i] = kHex[v & 15];
    v >>= 4;
  }
}

}  // namespace

std::string UuidGenerator::next() {
  std::uint64_t hi = rng_();
  std::uint64_t lo = rng_();
  hi = (hi & ~std::uint64_t{0xF000}) | 0x4000;                           // version 4
  lo = (lo & ~(std::uint64_t{0xC} << 60)) | (std::uint64_t{0x8} << 60);  // RFC 4122 variant
  // 8-4-4-4-12 hex digits: hi makes the first three groups, lo the last two.
  std::string out(36, '-');
  char* p = out.data();
  put_hex(p, hi >> 32, 8);
  put_hex(p + 9, hi >> 16, 4);
  put_hex(p + 14, hi, 4);
  put_hex(p + 19, lo >> 48, 4);
  put_hex(p + 24, lo, 12);
  return out;
}

std::string UuidGenerator::trace_id() {
  std::uint64_t hi = rng_();
  std::uint64_t lo = rng_();
  if (hi == 0 && lo == 0) lo = 1;
  std::string out(32, '0');
  put_hex(out.data(), hi, 16);
  put_hex(out.data() + 16, lo, 16);
  return out;
}

std::string UuidGenerator::span_id() {
  std::uint64_t v = rng_();
  if (v == 0) v = 1;
  std::string out(16, '0');
  put_hex(out.data(), v, 16);
  return out;
}

}  // namespace amqprpc::detail
