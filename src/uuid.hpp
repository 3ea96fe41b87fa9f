#pragma once

#include <random>
#include <string>

namespace amqprpc::detail {

// Random (version 4) UUIDs as correlation ids, and random trace and span ids. One generator per
// owner: no global state and no locking; not for use from several threads at once.
class UuidGenerator {
 public:
  UuidGenerator();
  std::string next();
  // Random W3C Trace Context ids: a trace id (32 lowercase hex digits) and a span id (16),
  // never all zero.
  std::string trace_id();
  std::string span_id();

 private:
  std::mt19937_64 rng_;
};

}  // namespace amqprpc::detail
