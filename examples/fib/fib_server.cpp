// The seed's RPC server in C++: consumes rpc_queue, replies fib(n) to reply_to with the same
// correlation_id, then acks. Stops cleanly on SIGINT/SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <thread>

#include "amqprpc/server.hpp"
#include "common.hpp"
#include "fib.hpp"

int main(int argc, char** argv) {
  CLI::App app{"fib_server: answers fib(n) requests from an AMQP queue (RabbitMQ tutorial 6)"};
  std::string url = fib::default_url();
  amqprpc::ServerOptions options;
  std::uint64_t limit = fib::kDefaultLimit;
  bool quiet = false;
  app.add_option("--url", url, "broker URI (default: $AMQP_URL, else localhost)");
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is fine; anything else is a usage error
  }

  auto conn = amqprpc::ConnectionOptions::from_uri(url);
  if (!conn) {
    std::cerr << "fib_server: " << conn.status().message() << "\n";
    return 2;
  }
  options.connection = *conn;

  // Signals are taken by sigwait below, not by whichever thread they land on.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = amqprpc::Server::start(options, [limit, quiet](const amqprpc::Request& req) {
    amqprpc::Reply reply = fib::handle(req.body, limit);
    if (!quiet) {
      if (reply.status.ok()) {
        std::printf(" [.] fib(%.*s)\n", static_cast<int>(req.body.size()), req.body.data());
      } else {
        std::printf(" [!] %s\n", reply.status.to_string().c_str());
      }
      std::fflush(stdout);
    }
    return reply;
  });
  if (!server) {
    std::cerr << "fib_server: " << server.status().to_string() << "\n";
    return 1;
  }
  std::printf(" [x] Awaiting RPC requests on '%s' at %s\n", options.queue.c_str(),
              options.connection.to_string().c_str());
  std::fflush(stdout);

  // If the server dies on its own (connection lost), wake the sigwait below.
  amqprpc::Status ended;
  std::thread watcher([&] {
    ended = (*server)->wait();
    kill(getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&signals, &sig);
  (*server)->stop();
  watcher.join();
  auto stats = (*server)->stats();
  std::fprintf(stderr, "fib_server: stopped (%s); received %llu, replied %llu ok, %llu errors\n",
               ended.ok() ? "signal" : ended.to_string().c_str(),
               static_cast<unsigned long long>(stats.received),
               static_cast<unsigned long long>(stats.replied_ok),
               static_cast<unsigned long long>(stats.replied_error));
  return ended.ok() ? 0 : 1;
}
