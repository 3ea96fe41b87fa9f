// What every command-line program of amqp-rpc shares: where the broker is, what the exit code
// means, and how a server waits for its stop signal.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "amqprpc/options.hpp"
#include "amqprpc/server.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc::tools {

// ---- the broker ----

// $AMQP_URL if set, else a local broker with RabbitMQ's defaults. A --url option overrides it.
std::string default_url();

// The broker at `url`; when the URL is malformed, says why on stderr ("program: why") and
// returns nothing: the caller exits with kUsage.
std::optional<ConnectionOptions> parse_broker_url(std::string_view program, const std::string& url);

// ---- exit codes: one scheme for every program, so scripts can branch on them ----

enum Exit : int {
  kOk = 0,
  kError = 1,  // an error reply from the server; for a server, it failed or stopped on an error
  kUsage = 2,  // a bad command line or URL
  kTimeout = 3,
  kUnreachable = 4,  // the broker or the server cannot be reached, or refused us
};

// The outcome of a call.
int exit_code_for_call(const Status& status);
// The same for a reply, telling an error reply from the server (it carries x-rpc-status) from a
// call the client refused before sending anything (bad headers, queue name...): a usage error.
int exit_code_for_reply(const Reply& reply);

// The outcome of connecting (a client or a server): a bad option is a usage error, anything
// else means the broker cannot be reached.
int exit_code_for_connect(const Status& status);

// ---- stopping a server ----

// Blocks SIGINT and SIGTERM in the calling thread and so in every thread it starts afterwards:
// they then wait for wait_for_stop() instead of landing on whichever thread they find. Call it
// before anything starts a thread (Server::start does).
void block_stop_signals();

// Runs `run` on a thread of its own and waits for SIGINT or SIGTERM, or for `run` to return by
// itself (a server whose connection is lost for good); then calls `stop` and waits for `run` to
// return. Needs block_stop_signals() first.
void wait_for_stop(const std::function<void()>& run, const std::function<void()>& stop);

// The same for a server; returns why it ended (Server::wait: ok when a signal stopped it).
Status wait_for_stop(Server& server);

// ---- the program itself ----

// This program's file (from /proc/self/exe), else `argv0`.
std::string executable_path(const char* argv0);

}  // namespace amqprpc::tools
