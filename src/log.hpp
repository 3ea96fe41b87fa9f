#pragma once

#include <string_view>

#include "amqprpc/options.hpp"

namespace amqprpc::detail {

// Sends a line to the user's logger, or to stderr (warnings and errors only) when none is set.
void log(const Logger& logger, LogLevel level, std::string_view message);

}  // namespace amqprpc::detail
