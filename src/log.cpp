#include "log.hpp"

#include <cstdio>

namespace amqprpc::detail {

void log(const Logger& logger, LogLevel level, std::string_view message) {
  if (logger) {
    logger(level, message);
    return;
  }
  if (level < LogLevel::warning) return;
  std::fprintf(stderr, "amqprpc %s: %.*s\n", level == LogLevel::warning ? "warning" : "error",
               static_cast<int>(message.size()), message.data());
}

}  // namespace amqprpc::detail
