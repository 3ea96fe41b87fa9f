// Temporary (replaced by the tracing branch's implementation).
#include "amqprpc/context.hpp"

namespace amqprpc {

namespace {
bool lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}
bool all_zero(std::string_view s) {
  return s.find_first_not_of('0') == std::string_view::npos;
}
}  // namespace

bool TraceContext::valid() const {
  return trace_id.size() == 32 && span_id.size() == 16 && lower_hex(trace_id) &&
         lower_hex(span_id) && !all_zero(trace_id) && !all_zero(span_id);
}

std::string TraceContext::traceparent() const {
  return "00-" + trace_id + "-" + span_id + (sampled ? "-01" : "-00");
}

std::optional<TraceContext> TraceContext::parse(std::string_view tp, std::string_view ts) {
  if (tp.size() < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return std::nullopt;
  std::string_view version = tp.substr(0, 2), flags = tp.substr(53, 2);
  if (!lower_hex(version) || version == "ff" || !lower_hex(flags)) return std::nullopt;
  if (version == "00" ? tp.size() != 55 : (tp.size() > 55 && tp[55] != '-')) return std::nullopt;
  TraceContext t{std::string(tp.substr(3, 32)), std::string(tp.substr(36, 16)),
                 ((flags[1] >= 'a' ? flags[1] - 'a' + 10 : flags[1] - '0') & 1) != 0,
                 ts.size() <= 512 ? std::string(ts) : std::string()};
  if (!t.valid()) return std::nullopt;
  return t;
}

}  // namespace amqprpc
