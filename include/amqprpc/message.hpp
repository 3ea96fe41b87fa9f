// What travels: requests a server handles and the replies it sends back.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "amqprpc/context.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// Application headers, both ways. Values are text; non-text AMQP field values that arrive are
// rendered as text (numbers in decimal, booleans as true/false).
using Headers = std::map<std::string, std::string, std::less<>>;

// A request as a server's handler sees it.
struct Request {
  std::string queue;           // the queue it was consumed from
  std::string method;          // the method called (header x-rpc-method); empty: the default
  bool oneway = false;         // a one-way call (Client::notify): nothing is sent back
  std::string body;            // raw bytes
  std::string content_type;    // empty when the client set none
  std::string correlation_id;  // may be empty: seed-style clients may send none
  std::string reply_to;
  // The verified caller: the AMQP user_id the broker validated against the caller's login
  // (amqp-rpc clients set it). Empty: unknown (a client that set none).
  std::string caller;
  Headers headers;
  bool redelivered = false;
  // The caller's deadline, the cancellation signal and the trace context, which calls made on
  // behalf of this request inherit (context.call_options()).
  Context context;
};

// A reply: what a handler returns, and what a client receives. A non-ok status travels as an
// error reply (see docs/PROTOCOL.md); an ok reply is the body alone, as the seed expects.
struct Reply {
  Status status;
  std::string body;
  std::string content_type;
  Headers headers;

  static Reply ok(std::string body) { return Reply{Status{}, std::move(body), {}, {}}; }
  static Reply error(StatusCode code, std::string message) {
    return Reply{Status{code, std::move(message)}, {}, {}, {}};
  }
};

}  // namespace amqprpc
