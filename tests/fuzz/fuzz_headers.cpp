// libFuzzer target: the header path a server and a client own. Bytes are decoded by rabbitmq-c as
// an AMQP field table (as they arrive in a message's properties), turned into our text headers,
// then read as a reply (status header), a deadline and a delivery count. No crash, no UB, and
// a status decoded from any headers is one of ours.
#include <amqp.h>

#include <cstdint>
#include <cstdlib>

#include "amqp/table.hpp"
#include "protocol/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  amqp_bytes_t encoded{size, const_cast<std::uint8_t*>(data)};
  amqp_table_t table;
  std::size_t offset = 0;
  if (amqp_decode_table(encoded, &pool, &table, &offset) == AMQP_STATUS_OK) {
    amqprpc::Headers headers = amqprpc::detail::amqp::headers_from_table(table);
    (void)amqprpc::detail::wire::int_header(headers, amqprpc::detail::wire::kDeadlineHeader);
    std::int64_t attempt =
        amqprpc::detail::wire::attempt_of(headers, size % 2 == 0, size % 3 == 0, size % 5 == 0);
    if (attempt < 1) std::abort();
    amqprpc::detail::amqp::Properties props;
    props.headers = headers;
    amqprpc::Reply reply = amqprpc::detail::wire::decode_reply(std::move(props), "body");
    auto name = amqprpc::to_string(reply.status.code());
    if (!amqprpc::status_code_from_string(name)) std::abort();
  }
  empty_amqp_pool(&pool);
  return 0;
}
