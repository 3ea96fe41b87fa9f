// libFuzzer target: the header path a server and a client own. Bytes are decoded by rabbitmq-c as
// an AMQP field table (as they arrive in a message's properties), turned into our text headers,
// then read as a reply (status header), a deadline, a delivery count and a W3C trace context
// (traceparent, tracestate). No crash, no UB, a status decoded from any headers is one of ours,
// and a trace context that parses is valid and reads back the same from what we would send on.
#include <amqp.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "amqp/table.hpp"
#include "amqprpc/context.hpp"
#include "protocol/wire.hpp"

namespace {

void check_trace(std::string_view traceparent, std::string_view tracestate) {
  auto trace = amqprpc::TraceContext::parse(traceparent, tracestate);
  if (!trace) return;
  if (!trace->valid() || trace->tracestate.size() > 512) std::abort();
  // What a server passes on (its reply, its nested calls) must read back as what it received.
  std::string sent = trace->traceparent();
  auto again = amqprpc::TraceContext::parse(sent, trace->tracestate);
  if (!again || again->trace_id != trace->trace_id || again->span_id != trace->span_id ||
      again->sampled != trace->sampled || again->tracestate != trace->tracestate) {
    std::abort();
  }
  // Version 00 with the flags we write is passed on byte for byte.
  std::string_view flags = traceparent.substr(traceparent.size() - 2);
  if (traceparent.starts_with("00") && (flags == "00" || flags == "01") && sent != traceparent) {
    std::abort();
  }
}

}  // namespace

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
    auto traceparent = headers.find("traceparent");
    auto tracestate = headers.find("tracestate");
    check_trace(traceparent == headers.end() ? std::string_view{} : traceparent->second,
                tracestate == headers.end() ? std::string_view{} : tracestate->second);
  }
  // The same rules on the raw bytes, which reach the parser in far fewer steps than through a
  // table: "traceparent\ntracestate".
  std::string_view raw(reinterpret_cast<const char*>(data), size);
  auto newline = raw.find('\n');
  check_trace(raw.substr(0, newline),
              newline == std::string_view::npos ? std::string_view{} : raw.substr(newline + 1));
  empty_amqp_pool(&pool);
  return 0;
}
