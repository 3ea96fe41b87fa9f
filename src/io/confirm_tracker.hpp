// Publisher confirms: what each publish still waiting for its basic.ack/nack was for, and which
// of them a confirm settles (AMQP-CPP's Reliable does the same job). One per connection: its
// sequence numbers mean nothing on the next one.
//
// Thread safety: none; the I/O thread's.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <vector>

namespace amqprpc::detail {

template <class V>
class ConfirmTracker {
 public:
  // Publish number `seq` (from amqp::Channel::publish) was for `value`.
  void track(std::uint64_t seq, V value) { unconfirmed_.emplace(seq, std::move(value)); }

  // Removes and returns, in order, what a confirm for `seq` settles: that publish, or every
  // one up to it when `multiple`.
  std::vector<V> settle(std::uint64_t seq, bool multiple) {
    auto begin = unconfirmed_.begin();
    auto end = unconfirmed_.upper_bound(seq);
    if (!multiple) {
      begin = unconfirmed_.find(seq);
      if (begin == unconfirmed_.end()) return {};
      end = std::next(begin);
    }
    std::vector<V> settled;
    for (auto it = begin; it != end; ++it) settled.push_back(std::move(it->second));
    unconfirmed_.erase(begin, end);
    return settled;
  }

  bool empty() const { return unconfirmed_.empty(); }
  std::size_t size() const { return unconfirmed_.size(); }

 private:
  std::map<std::uint64_t, V> unconfirmed_;
};

}  // namespace amqprpc::detail
