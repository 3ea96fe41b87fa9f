#include "server/triage.hpp"

#include <algorithm>

#include "protocol/wire.hpp"

namespace amqprpc::detail {

Triage triage(const amqp::Delivery& d, const TriagePolicy& policy, std::int64_t now_ms) {
  if (d.props.reply_to.empty() && !wire::is_oneway(d.props.headers)) return {Verdict::reject};
  const Headers& headers = d.props.headers;
  const auto deadline_ms = wire::int_header(headers, wire::kDeadlineHeader);
  const bool expired = wire::expired(deadline_ms, now_ms);
  // Published by a server: its own copy (x-rpc-attempts and x-rpc-caller are the server's).
  const bool own_copy =
      !d.props.user_id.empty() && std::find(policy.server_users.begin(), policy.server_users.end(),
                                            d.props.user_id) != policy.server_users.end();
  std::string caller = wire::caller_of(d.props, own_copy);
  std::int64_t attempt = 1;
  if (policy.max_attempts > 0) {
    attempt = wire::attempt_of(headers, d.redelivered, policy.quorum, own_copy);
    if (attempt > policy.max_attempts)
      return {Verdict::dead_letter, attempt, std::move(caller), deadline_ms};
    const bool counted_by_broker = policy.quorum && headers.count(wire::kDeliveryCountHeader) != 0;
    if (d.redelivered && !counted_by_broker) {
      return {expired ? Verdict::expired : Verdict::recount, attempt, std::move(caller),
              deadline_ms};
    }
  }
  if (expired) return {Verdict::expired, attempt, std::move(caller), deadline_ms};
  if (d.body.size() > policy.max_request_size) {
    return {Verdict::oversized, attempt, std::move(caller), deadline_ms};
  }
  return {Verdict::serve, attempt, std::move(caller), deadline_ms};
}

}  // namespace amqprpc::detail
