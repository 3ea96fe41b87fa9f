#pragma once

#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "amqprpc/options.hpp"

namespace amqprpc::detail {

// Sends a line to the user's logger, or to stderr (warnings and errors only) when none is set.
void log(const Logger& logger, LogLevel level, std::string_view message);

// Runs user code (a callback, an interceptor's hook) where no exception may get out, into the
// I/O loop or a worker: what it throws is caught and described, "<what>: <e.what()>", or `what`
// alone for a non-standard exception. nullopt when it threw nothing.
template <class F>
std::optional<std::string> thrown_by(F&& f, std::string_view what) {
  try {
    std::forward<F>(f)();
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string(what) + ": " + e.what();
  } catch (...) {
    return std::string(what);
  }
}

}  // namespace amqprpc::detail
