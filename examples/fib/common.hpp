// What both demo programs share: where the broker is.
#pragma once

#include <cstdlib>
#include <string>

namespace fib {

// AMQP_URL if set, else a local broker with RabbitMQ's defaults.
inline std::string default_url() {
  const char* env = std::getenv("AMQP_URL");
  return env && *env ? env : "amqp://guest:guest@localhost:5672/%2F";
}

}  // namespace fib
