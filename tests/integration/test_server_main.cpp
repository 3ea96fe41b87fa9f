// A server process for tests that need a real process to kill: echoes the body (after an
// optional delay), crashes (abort) on a chosen body, counts what it served, stops gracefully on
// SIGTERM. Prints "ready" when consuming and "served N" when it exits.
//   amqprpc_test_server --queue Q [--name N] [--delay-ms D] [--crash-on BODY] [--workers W]
//                       [--prefetch P] [--max-attempts A]
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "amqprpc/server.hpp"

int main(int argc, char** argv) {
  amqprpc::ServerOptions options;
  std::string name = "server";
  std::string crash_on;
  int delay_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--queue") {
      options.queue = value;
    } else if (flag == "--name") {
      name = value;
    } else if (flag == "--delay-ms") {
      delay_ms = std::atoi(value.c_str());
    } else if (flag == "--crash-on") {
      crash_on = value;
    } else if (flag == "--workers") {
      options.workers = static_cast<std::size_t>(std::atoi(value.c_str()));
    } else if (flag == "--prefetch") {
      options.prefetch = static_cast<std::uint16_t>(std::atoi(value.c_str()));
    } else if (flag == "--max-attempts") {
      options.max_attempts = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const char* url = std::getenv("AMQP_URL");
  auto conn = amqprpc::ConnectionOptions::from_uri(url ? url : "amqp://");
  if (!conn) return 2;
  options.connection = *conn;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::atomic<int> served{0};
  auto server = amqprpc::Server::start(options, [&](const amqprpc::Request& r) {
    if (!crash_on.empty() && r.body == crash_on) std::abort();
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    served++;
    amqprpc::Reply reply = amqprpc::Reply::ok(r.body);
    reply.headers["x-served-by"] = name;
    return reply;
  });
  if (!server) {
    std::fprintf(stderr, "%s\n", server.status().to_string().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::thread watcher([&] {
    (*server)->wait();
    kill(getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&signals, &sig);
  (*server)->stop();
  watcher.join();
  auto stats = (*server)->stats();
  std::printf("served %d requeued %llu\n", served.load(),
              static_cast<unsigned long long>(stats.requeued));
  std::fflush(stdout);
  return 0;
}
