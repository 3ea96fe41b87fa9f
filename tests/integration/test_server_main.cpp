// A server process for tests that need a real process to kill: echoes the body (after an
// optional delay), crashes (abort) on a chosen body, counts what it served, stops gracefully on
// SIGTERM. Prints "ready" when consuming and "served N" when it exits.
//   amqprpc_test_server --queue Q [--name N] [--delay-ms D] [--crash-on BODY] [--workers W]
//                       [--prefetch P] [--max-attempts A]
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "amqprpc/server.hpp"
#include "common/common.hpp"

namespace tools = amqprpc::tools;

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
      return tools::kUsage;
    }
  }
  auto conn = tools::parse_broker_url("amqprpc_test_server", tools::default_url());
  if (!conn) return tools::kUsage;
  options.connection = *conn;

  tools::block_stop_signals();

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
    return tools::kError;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  tools::wait_for_stop(**server);
  auto stats = (*server)->stats();
  std::printf("served %d requeued %llu\n", served.load(),
              static_cast<unsigned long long>(stats.requeued));
  std::fflush(stdout);
  return tools::kOk;
}
