// libFuzzer target: AMQP URI parsing. Any input: no crash, no UB; a parsed URI is sane and prints
// without its password; an error never contains the password written in the URI.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "amqprpc/options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string uri(reinterpret_cast<const char*>(data), size);
  auto o = amqprpc::ConnectionOptions::from_uri(uri);
  if (o) {
    if (o->port == 0) std::abort();
    if (o->vhost.empty()) std::abort();
    std::string shown = o->to_string();
    // A sentinel password with control characters: the printed user and vhost are
    // percent-encoded and a host cannot hold them, so finding it raw means the password leaked.
    amqprpc::ConnectionOptions secret = *o;
    secret.password = "\x01PW\x02";
    if (secret.to_string().find("\x01PW\x02") != std::string::npos) std::abort();
    // Printing and parsing again gives the same place (the password is masked).
    auto again = amqprpc::ConnectionOptions::from_uri(shown);
    if (!again || again->host != o->host || again->port != o->port || again->vhost != o->vhost ||
        again->user != o->user) {
      std::abort();
    }
  } else if (o.status().code() != amqprpc::StatusCode::invalid_argument) {
    std::abort();
  }
  return 0;
}
