// W3C Trace Context level 1 (https://www.w3.org/TR/trace-context/), section 3.2 and 3.3: the
// traceparent header as version 00 defines it, and how a receiver reads a later version.
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "amqprpc/context.hpp"
#include "protocol/wire.hpp"

namespace amqprpc {
namespace {

// traceparent = version "-" trace-id "-" parent-id "-" trace-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
constexpr std::size_t kVersion00Size = detail::wire::kTraceparentSize;
constexpr std::size_t kTraceIdAt = 3;
constexpr std::size_t kSpanIdAt = 36;
constexpr std::size_t kFlagsAt = 53;
constexpr std::size_t kTraceIdSize = 32;
constexpr std::size_t kSpanIdSize = 16;
// W3C lets a receiver drop a tracestate it will not carry; 512 is the size every vendor must
// accept, so passing on more could make a downstream hop truncate it.
constexpr std::size_t kMaxTracestate = 512;

// The spec allows lowercase only: "ABCDEF" makes the whole header invalid, as it does for every
// other W3C implementation, so two services never disagree about an id.
constexpr bool is_lower_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool is_lower_hex(std::string_view s) {
  for (char c : s) {
    if (!is_lower_hex(c)) return false;
  }
  return true;
}

// Eight characters at a time: each byte's top bit says whether it is one is_lower_hex accepts.
// A byte under 0x80 plus at most 0x50 (and a carry) stays under 0x100, so it carries nothing
// into the next byte. Only a byte from 0x80 up can carry, and ~x fails that byte itself: a
// carry it makes may change its neighbour's verdict, never the word's.
constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
constexpr std::uint64_t kTops = 0x8080808080808080ULL;

std::uint64_t lower_hex_tops(std::uint64_t x) {
  const std::uint64_t digit = (x + (0x80 - '0') * kOnes) & ~(x + (0x80 - '9' - 1) * kOnes);
  const std::uint64_t letter = (x + (0x80 - 'a') * kOnes) & ~(x + (0x80 - 'f' - 1) * kOnes);
  return (digit | letter) & ~x & kTops;  // ~x: a byte from 0x80 up is none
}

// An all-zero trace or span id is how the spec spells "no id": invalid. Every request and reply
// checks two ids.
template <std::size_t Size>
bool is_id(std::string_view s) {
  static_assert(Size % 8 == 0, "read eight characters at a time");
  if (s.size() != Size) return false;
  std::uint64_t hex = kTops;
  std::uint64_t nonzero = 0;
  for (std::size_t i = 0; i < Size; i += 8) {
    std::uint64_t x;
    std::memcpy(&x, s.data() + i, sizeof x);
    hex &= lower_hex_tops(x);
    nonzero |= x ^ ('0' * kOnes);
  }
  return hex == kTops && nonzero != 0;
}

int hex_value(char c) {
  return c <= '9' ? c - '0' : c - 'a' + 10;
}

// The traceparent of `trace` at `out`, 7 + the ids' sizes characters (55 for a valid trace).
// We only ever write version 00, and of the flags only "sampled": the other
// bits are unused in level 1, and a sender must not set bits it does not understand.
void write_traceparent_at(const TraceContext& trace, char* out) {
  auto put = [&out](std::string_view s) { out = std::copy(s.begin(), s.end(), out); };
  put("00-");
  put(trace.trace_id);
  put("-");
  put(trace.span_id);
  put(trace.sampled ? "-01" : "-00");
}

}  // namespace

bool TraceContext::valid() const {
  return is_id<kTraceIdSize>(trace_id) && is_id<kSpanIdSize>(span_id);
}

std::string TraceContext::traceparent() const {
  std::string out(7 + trace_id.size() + span_id.size(), '-');
  write_traceparent_at(*this, out.data());
  return out;
}

namespace detail::wire {

void write_traceparent(const TraceContext& trace, std::span<char, kTraceparentSize> out) {
  assert(trace.valid());  // exactly kTraceparentSize characters
  write_traceparent_at(trace, out.data());
}

}  // namespace detail::wire

std::optional<TraceContext> TraceContext::parse(std::string_view traceparent,
                                                std::string_view tracestate) {
  if (traceparent.size() < kVersion00Size) return std::nullopt;
  std::string_view version = traceparent.substr(0, 2);
  // "ff" is forbidden so that a future version can never be confused with a sentinel.
  if (!is_lower_hex(version) || version == "ff") return std::nullopt;
  if (version == "00") {
    if (traceparent.size() != kVersion00Size) return std::nullopt;
  } else if (traceparent.size() > kVersion00Size && traceparent[kVersion00Size] != '-') {
    // A later version may append fields, but the four we know keep their place: what follows
    // them must start a new field.
    return std::nullopt;
  }
  if (traceparent[2] != '-' || traceparent[kSpanIdAt - 1] != '-' ||
      traceparent[kFlagsAt - 1] != '-') {
    return std::nullopt;
  }
  std::string_view trace_id = traceparent.substr(kTraceIdAt, kTraceIdSize);
  std::string_view span_id = traceparent.substr(kSpanIdAt, kSpanIdSize);
  std::string_view flags = traceparent.substr(kFlagsAt, 2);
  if (!is_id<kTraceIdSize>(trace_id) || !is_id<kSpanIdSize>(span_id) || !is_lower_hex(flags)) {
    return std::nullopt;
  }
  TraceContext out;
  out.trace_id = trace_id;
  out.span_id = span_id;
  out.sampled = (hex_value(flags[1]) & 0x1) != 0;
  // An oversized tracestate is dropped alone: the traceparent is still good, and keeping the
  // trace beats losing it for vendor data.
  if (tracestate.size() <= kMaxTracestate) out.tracestate = tracestate;
  return out;
}

}  // namespace amqprpc
