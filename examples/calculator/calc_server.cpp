// The calculator demo's server: serves calc.Calculator (calculator.proto) through the generated
// base, calc::CalculatorService. Stops cleanly on SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "amqprpc/server.hpp"
#include "calculator_service.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"

namespace tools = amqprpc::tools;

int main(int argc, char** argv) {
  CLI::App app{
      "calc_server: serves the calculator of calculator.proto (Add, Subtract, "
      "Multiply, Divide)"};
  std::string url;
  std::string queue = calc::CalculatorClient::kDefaultQueue;
  amqprpc::ServerOptions options;
  tools::add_url_option(app, url);
  app.add_option("--queue", queue, "queue to serve")->capture_default_str();
  app.add_option("--workers", options.workers, "handler threads (0: on the I/O thread)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;

  auto conn = tools::parse_broker_url("calc_server", url);
  if (!conn) return tools::kUsage;
  options.connection = *conn;

  tools::block_stop_signals();

  // Outlives the server, which calls it.
  calc::CalculatorImpl calculator;
  auto server = amqprpc::Server::start(options, calculator.service(queue));
  if (!server) {
    std::cerr << "calc_server: " << server.status().to_string() << "\n";
    return tools::exit_code_for_connect(server.status());
  }
  std::printf("calc_server: serving calc.Calculator on '%s' at %s\n", queue.c_str(),
              options.connection.to_string().c_str());
  std::fflush(stdout);

  amqprpc::Status ended = tools::wait_for_stop(**server);
  auto stats = (*server)->stats();
  std::fprintf(stderr, "calc_server: stopped (%s); replied %llu ok, %llu errors\n",
               ended.ok() ? "signal" : ended.to_string().c_str(),
               static_cast<unsigned long long>(stats.replied_ok),
               static_cast<unsigned long long>(stats.replied_error));
  return ended.ok() ? tools::kOk : tools::kError;
}
