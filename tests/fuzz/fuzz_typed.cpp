// libFuzzer target: typed bodies as they arrive from the network, through the code that decodes
// them: a typed method's request (the demo's JSON Fib, and a protobuf method, in binary and in
// JSON) and a typed call's reply, with and without an error detail. No crash, no UB, no
// exception escapes; a body that does not decode is invalid_argument (request) or internal
// (reply), never ok with garbage.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/service.hpp"
#include "fib.hpp"
#include "proto/test_messages.pb.h"

namespace {

using namespace amqprpc;

const Service& services() {
  static const Service s = [] {
    Service svc = fib::service("fuzz", 50);
    svc.method<test::EchoRequest, test::EchoReply>("Say", [](const test::EchoRequest& r) {
      test::EchoReply out;
      out.set_text(r.text());
      return out;
    });
    return svc;
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const char* const kTypes[] = {"application/json", "application/protobuf", "", "text/x"};
  Request r;
  r.body = body;
  r.content_type = kTypes[selector & 3];
  r.method = (selector & 4) != 0 ? "Say" : "Fib";
  if ((selector & 8) != 0) r.headers["x-rpc-type"] = "amqprpc.test.ErrorInfo";
  Reply reply = services().find(r.method)->handler(r);
  if (!reply.status.ok() && reply.status.code() != StatusCode::invalid_argument) std::abort();

  Reply incoming = Reply::ok(body);
  incoming.content_type = kTypes[(selector >> 4) & 3];
  if ((selector & 64) != 0) {
    incoming.status = Status{StatusCode::invalid_argument, "x",
                             StatusDetail{"amqprpc.test.ErrorInfo", incoming.content_type, body}};
    (void)detail_as<test::ErrorInfo>(incoming.status);
  }
  const bool was_ok = incoming.status.ok();
  auto typed = detail::decode_typed_reply<test::EchoReply>(std::move(incoming), "Say");
  if (was_ok && !typed.ok() && typed.status().code() != StatusCode::internal) std::abort();
  auto json_typed = detail::decode_typed_reply<fib::FibReply>(Reply::ok(body), "Fib");
  if (!json_typed.ok() && json_typed.status().code() != StatusCode::internal) std::abort();
  return 0;
}
