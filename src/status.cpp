#include "amqprpc/status.hpp"

#include <array>

namespace amqprpc {
namespace {

constexpr std::array<std::pair<StatusCode, std::string_view>, 13> kNames{{
    {StatusCode::ok, "ok"},
    {StatusCode::cancelled, "cancelled"},
    {StatusCode::invalid_argument, "invalid_argument"},
    {StatusCode::deadline_exceeded, "deadline_exceeded"},
    {StatusCode::not_found, "not_found"},
    {StatusCode::permission_denied, "permission_denied"},
    {StatusCode::resource_exhausted, "resource_exhausted"},
    {StatusCode::failed_precondition, "failed_precondition"},
    {StatusCode::unavailable, "unavailable"},
    {StatusCode::internal, "internal"},
    {StatusCode::unknown, "unknown"},
    {StatusCode::unimplemented, "unimplemented"},
    {StatusCode::unauthenticated, "unauthenticated"},
}};

}  // namespace

std::string_view to_string(StatusCode code) noexcept {
  for (const auto& [c, name] : kNames) {
    if (c == code) return name;
  }
  return "unknown";
}

std::optional<StatusCode> status_code_from_string(std::string_view name) noexcept {
  for (const auto& [c, n] : kNames) {
    if (n == name) return c;
  }
  return std::nullopt;
}

std::string Status::to_string() const {
  std::string out(amqprpc::to_string(code_));
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

}  // namespace amqprpc
