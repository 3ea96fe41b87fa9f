// What a server does with a delivery before any handler sees it, decided in one place, as a
// pure function of the delivery, the server's policy and the time (docs/PROTOCOL.md):
//   reject       no reply_to and not a one-way call: nowhere to answer (rejected, not requeued)
//   dead_letter  delivered more than max_attempts times: moved aside, caller told
//   expired      the caller's deadline passed: acked, not served
//   recount      a redelivery on a classic queue: re-published with its attempt count, since
//                only quorum queues count deliveries (x-rpc-attempts counts only in a copy a
//                server published: see TriagePolicy::server_users)
//   oversized    body over max_request_size: error reply, not served
//   serve        hand it to its handler
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "amqp/message.hpp"

namespace amqprpc::detail {

struct TriagePolicy {
  int max_attempts = 5;  // 0: no poison-message accounting
  bool quorum = false;   // the queue is a quorum queue (its x-delivery-count can be trusted)
  std::size_t max_request_size = 4u * 1024 * 1024;
  // The users servers log in as: a request whose broker-validated user_id is one of these is a
  // server's own copy, and its x-rpc-attempts counts. A client cannot forge that (unless it
  // logs in as a server's user).
  std::vector<std::string> server_users;
};

enum class Verdict { serve, reject, dead_letter, expired, recount, oversized };

struct Triage {
  Verdict verdict = Verdict::serve;
  std::int64_t attempt = 1;  // which delivery of the request this is (1 = the first)
  std::string caller = {};   // the verified caller (wire::caller_of); empty: unknown
  std::optional<std::int64_t> deadline_ms = {};  // its x-rpc-deadline (ms since the epoch)
};

Triage triage(const amqp::Delivery& delivery, const TriagePolicy& policy, std::int64_t now_ms);

}  // namespace amqprpc::detail
