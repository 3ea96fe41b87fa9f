// How logs, metrics and spans name a call: "<queue>/<method>", or the queue alone for its
// default handler (tutorial-6 clients), so both read like gRPC's "/service/method".
#pragma once

#include <string>
#include <string_view>

namespace amqprpc::detail {

inline std::string call_name(std::string_view queue, std::string_view method) {
  std::string out(queue);
  if (!method.empty()) out.append("/").append(method);
  return out;
}

}  // namespace amqprpc::detail
