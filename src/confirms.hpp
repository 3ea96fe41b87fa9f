// Publisher confirms: which of the publishes waiting for one a broker's basic.ack/nack settles.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <vector>

namespace amqprpc::detail {

// Removes from `unconfirmed` (publish number -> what it was for) the entries that a confirm for
// `seq` settles — that one, or all up to it when `multiple` — and returns their values in order.
template <class V>
std::vector<V> take_confirmed(std::map<std::uint64_t, V>& unconfirmed, std::uint64_t seq,
                              bool multiple) {
  auto begin = unconfirmed.begin();
  auto end = unconfirmed.upper_bound(seq);
  if (!multiple) {
    begin = unconfirmed.find(seq);
    if (begin == unconfirmed.end()) return {};
    end = std::next(begin);
  }
  std::vector<V> settled;
  for (auto it = begin; it != end; ++it) settled.push_back(std::move(it->second));
  unconfirmed.erase(begin, end);
  return settled;
}

}  // namespace amqprpc::detail
