// Error mapping: rabbitmq-c's replies and AMQP reply codes as Status values.
#pragma once

#include <amqp.h>

#include <string_view>

#include "amqprpc/status.hpp"

namespace amqprpc::detail::amqp {

// An AMQP reply code (connection.close / channel.close) as one of our status codes.
StatusCode code_for_reply_code(int reply_code);

// A readable description of a rabbitmq-c reply (library error, or the broker's close reason).
Status status_from_rpc_reply(const amqp_rpc_reply_t& reply, std::string_view what);

}  // namespace amqprpc::detail::amqp
