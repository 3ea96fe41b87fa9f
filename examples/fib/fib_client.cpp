// The seed's RPC client in C++: `fib_client 30` prints 832040. Several n are called in turn.
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>

#include "amqprpc/client.hpp"
#include "common.hpp"

namespace {

// Exit codes a script can branch on.
enum Exit { kOk = 0, kRemoteError = 1, kUsage = 2, kTimeout = 3, kUnreachable = 4 };

int exit_code_for(amqprpc::StatusCode code) {
  switch (code) {
    case amqprpc::StatusCode::deadline_exceeded:
      return kTimeout;
    case amqprpc::StatusCode::unavailable:
    case amqprpc::StatusCode::permission_denied:
      return kUnreachable;
    default:
      return kRemoteError;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fib_client: asks a fib_server (or the seed's server) for fib(n)"};
  std::string url = fib::default_url();
  std::string queue = "rpc_queue";
  double timeout_s = 30;
  std::string reply_mode = "direct";
  std::vector<std::string> values;
  app.add_option("--url", url, "broker URI (default: $AMQP_URL, else localhost)");
  app.add_option("--queue", queue, "queue the server consumes")->capture_default_str();
  app.add_option("--timeout", timeout_s, "seconds to wait for each reply")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));
  app.add_option("--reply-mode", reply_mode,
                 "direct (amq.rabbitmq.reply-to) or exclusive (a server-named queue, as the seed)")
      ->capture_default_str()
      ->check(CLI::IsMember({"direct", "exclusive"}));
  app.add_option("n", values, "the n to compute (sent as is, so bad input reaches the server)")
      ->required();
  app.footer(
      "Exit codes: 0 ok, 1 error reply, 2 usage, 3 timeout, 4 broker or server unreachable.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is fine; anything else is a usage error
  }

  auto conn = amqprpc::ConnectionOptions::from_uri(url);
  if (!conn) {
    std::cerr << "fib_client: " << conn.status().message() << "\n";
    return kUsage;
  }
  amqprpc::ClientOptions options;
  options.connection = *conn;
  options.reply_mode = reply_mode == "direct" ? amqprpc::ReplyMode::direct_reply_to
                                              : amqprpc::ReplyMode::exclusive_queue;
  auto client = amqprpc::Client::connect(options);
  if (!client) {
    std::cerr << "fib_client: " << client.status().to_string() << "\n";
    return exit_code_for(client.status().code());
  }
  amqprpc::CallOptions call;
  call.timeout = std::chrono::milliseconds(static_cast<long long>(std::ceil(timeout_s * 1000)));
  int exit_code = kOk;
  for (const auto& n : values) {
    amqprpc::Reply reply = (*client)->try_call(queue, n, call);
    if (reply.status.ok()) {
      std::cout << reply.body << std::endl;
    } else {
      std::cerr << "fib_client: fib(" << n << "): " << reply.status.to_string() << "\n";
      exit_code = exit_code_for(reply.status.code());
    }
  }
  return exit_code;
}
