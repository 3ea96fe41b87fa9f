#pragma once

#include <random>
#include <string>

namespace amqprpc::detail {

// Random (version 4) UUIDs as correlation ids. One generator per owner: no global state and no
// locking; not for use from several threads at once.
class UuidGenerator {
 public:
  UuidGenerator();
  std::string next();

 private:
  std::mt19937_64 rng_;
};

}  // namespace amqprpc::detail
