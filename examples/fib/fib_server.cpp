// The seed's RPC server in C++: consumes rpc_queue, replies fib(n) to reply_to with the same
// correlation_id, then acks. Stops cleanly on SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "amqprpc/server.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"
#include "fib.hpp"

namespace tools = amqprpc::tools;

int main(int argc, char** argv) {
  CLI::App app{"fib_server: answers fib(n) requests from an AMQP queue (RabbitMQ tutorial 6)"};
  std::string url;
  amqprpc::ServerOptions options;
  std::uint64_t limit = fib::kDefaultLimit;
  bool quiet = false;
  tools::add_url_option(app, url);
  app.add_option("--queue", options.queue, "queue to serve")->capture_default_str();
  app.add_option("--prefetch", options.prefetch, "requests held unacked at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--workers", options.workers, "handler threads (0: on the I/O thread)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--limit", limit, "largest n served")->capture_default_str();
  app.add_option("--max-request-size", options.max_request_size,
                 "larger requests get an error reply (bytes)")
      ->capture_default_str();
  app.add_option("--max-attempts", options.max_attempts,
                 "deliveries of a request that keeps crashing servers before it is dead-lettered "
                 "(0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_flag("--durable", options.durable, "declare the queue durable");
  app.add_flag("-q,--quiet", quiet, "do not print each request");
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;

  auto conn = tools::parse_broker_url("fib_server", url);
  if (!conn) return tools::kUsage;
  options.connection = *conn;

  tools::block_stop_signals();

  auto log = [](const amqprpc::Request& req, const amqprpc::Reply& reply) {
    if (reply.status.ok()) {
      std::printf(" [.] %sfib(%.*s)\n",
                  req.method.empty() ? "" : "Fib: ", static_cast<int>(req.body.size()),
                  req.body.data());
    } else {
      std::printf(" [!] %s\n", reply.status.to_string().c_str());
    }
    std::fflush(stdout);
  };
  // Method-less requests (the seed's) get fib of the decimal body; method Fib speaks JSON.
  auto server = amqprpc::Server::start(
      options,
      fib::service(
          options.queue, limit,
          quiet ? std::function<void(const amqprpc::Request&, const amqprpc::Reply&)>() : log));
  if (!server) {
    std::cerr << "fib_server: " << server.status().to_string() << "\n";
    return tools::kError;
  }
  // The instance name is what this server's replies to gathers carry (x-rpc-instance).
  std::printf(" [x] Awaiting RPC requests on '%s' at %s as instance %s\n", options.queue.c_str(),
              options.connection.to_string().c_str(), (*server)->instance().c_str());
  std::fflush(stdout);

  amqprpc::Status ended = tools::wait_for_stop(**server);
  auto stats = (*server)->stats();
  std::fprintf(stderr, "fib_server: stopped (%s); received %llu, replied %llu ok, %llu errors\n",
               ended.ok() ? "signal" : ended.to_string().c_str(),
               static_cast<unsigned long long>(stats.received),
               static_cast<unsigned long long>(stats.replied_ok),
               static_cast<unsigned long long>(stats.replied_error));
  return ended.ok() ? tools::kOk : tools::kError;
}
