#include "amqp/errors.hpp"

#include <string>

#include "amqp/table.hpp"

namespace amqprpc::detail::amqp {

StatusCode code_for_reply_code(int reply_code) {
  switch (reply_code) {
    case 403:  // ACCESS_REFUSED
    case 530:  // NOT_ALLOWED (e.g. no access to the vhost)
      return StatusCode::permission_denied;
    case 404:  // NOT_FOUND
      return StatusCode::not_found;
    case 405:  // RESOURCE_LOCKED (exclusive queue of another connection)
    case 406:  // PRECONDITION_FAILED (declaration disagrees with the existing queue)
      return StatusCode::failed_precondition;
    case 320:  // CONNECTION_FORCED (broker shutting down, or closed by an operator)
      return StatusCode::unavailable;
    case 311:  // CONTENT_TOO_LARGE
    case 506:  // RESOURCE_ERROR
      return StatusCode::resource_exhausted;
    default:
      return StatusCode::internal;
  }
}

Status status_from_rpc_reply(const amqp_rpc_reply_t& reply, std::string_view what) {
  std::string prefix(what);
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {};
    case AMQP_RESPONSE_NONE:
      return {StatusCode::internal, prefix + ": no reply from rabbitmq-c"};
    case AMQP_RESPONSE_LIBRARY_EXCEPTION: {
      int err = reply.library_error;
      StatusCode code = StatusCode::unavailable;
      if (err == AMQP_STATUS_TIMEOUT) code = StatusCode::deadline_exceeded;
      if (err == AMQP_STATUS_BAD_URL || err == AMQP_STATUS_INVALID_PARAMETER) {
        code = StatusCode::invalid_argument;
      }
      return {code, prefix + ": " + amqp_error_string2(err)};
    }
    case AMQP_RESPONSE_SERVER_EXCEPTION: {
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        auto* m = static_cast<amqp_connection_close_t*>(reply.reply.decoded);
        return {code_for_reply_code(m->reply_code),
                prefix + ": broker closed the connection: " + to_string(m->reply_text)};
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        auto* m = static_cast<amqp_channel_close_t*>(reply.reply.decoded);
        return {code_for_reply_code(m->reply_code),
                prefix + ": broker closed the channel: " + to_string(m->reply_text)};
      }
      return {StatusCode::internal, prefix + ": unexpected broker reply"};
    }
  }
  return {StatusCode::internal, prefix + ": unknown rabbitmq-c reply"};
}

}  // namespace amqprpc::detail::amqp
