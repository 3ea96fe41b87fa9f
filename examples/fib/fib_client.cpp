// The seed's RPC client in C++: `fib_client 30` prints 832040. Several n are called in turn.
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>

#include "amqprpc/client.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"

namespace tools = amqprpc::tools;

int main(int argc, char** argv) {
  CLI::App app{"fib_client: asks a fib_server (or the seed's server) for fib(n)"};
  std::string url;
  std::string queue = "rpc_queue";
  double timeout_s = 30;
  std::string reply_mode = "direct";
  std::vector<std::string> values;
  tools::add_url_option(app, url);
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
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;

  auto conn = tools::parse_broker_url("fib_client", url);
  if (!conn) return tools::kUsage;
  amqprpc::ClientOptions options;
  options.connection = *conn;
  options.reply_mode = reply_mode == "direct" ? amqprpc::ReplyMode::direct_reply_to
                                              : amqprpc::ReplyMode::exclusive_queue;
  auto client = amqprpc::Client::connect(options);
  if (!client) {
    std::cerr << "fib_client: " << client.status().to_string() << "\n";
    // Mapped as a call's outcome (a connect timeout is 3), as fib_client always has.
    return tools::exit_code_for_call(client.status());
  }
  amqprpc::CallOptions call;
  call.timeout = std::chrono::milliseconds(static_cast<long long>(std::ceil(timeout_s * 1000)));
  int exit_code = tools::kOk;
  for (const auto& n : values) {
    amqprpc::Reply reply = (*client)->try_call(queue, n, call);
    if (reply.status.ok()) {
      std::cout << reply.body << std::endl;
    } else {
      std::cerr << "fib_client: fib(" << n << "): " << reply.status.to_string() << "\n";
      exit_code = tools::exit_code_for_reply(reply);
    }
  }
  return exit_code;
}
