#include "common/common.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <thread>

namespace amqprpc::tools {

std::string default_url() {
  const char* env = std::getenv("AMQP_URL");
  return env && *env ? env : "amqp://guest:guest@localhost:5672/%2F";
}

std::optional<ConnectionOptions> parse_broker_url(std::string_view program,
                                                  const std::string& url) {
  auto conn = ConnectionOptions::from_uri(url);
  if (!conn) {
    std::cerr << program << ": " << conn.status().message() << "\n";
    return std::nullopt;
  }
  return *conn;
}

int exit_code_for_call(const Status& status) {
  switch (status.code()) {
    case StatusCode::ok:
      return kOk;
    case StatusCode::deadline_exceeded:
      return kTimeout;
    case StatusCode::unavailable:
    case StatusCode::permission_denied:
      // The broker refused us (an error reply from a server carries the header, not this).
      return kUnreachable;
    default:
      return kError;
  }
}

int exit_code_for_reply(const Reply& reply) {
  const bool from_server = reply.headers.count("x-rpc-status") != 0;
  if (!from_server && reply.status.code() == StatusCode::invalid_argument) return kUsage;
  return exit_code_for_call(reply.status);
}

int exit_code_for_connect(const Status& status) {
  if (status.ok()) return kOk;
  return status.code() == StatusCode::invalid_argument ? kUsage : kUnreachable;
}

namespace {

sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

}  // namespace

void block_stop_signals() {
  sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void wait_for_stop(const std::function<void()>& run, const std::function<void()>& stop) {
  std::thread runner([&] {
    run();
    // Wakes the sigwait below when `run` ended by itself; after a signal it stays pending,
    // blocked, and harmless.
    kill(getpid(), SIGTERM);
  });
  sigset_t signals = stop_signals();
  int sig = 0;
  sigwait(&signals, &sig);
  stop();
  runner.join();
}

Status wait_for_stop(Server& server) {
  Status ended;
  wait_for_stop([&] { ended = server.wait(); }, [&] { server.stop(); });
  return ended;
}

std::string executable_path(const char* argv0) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string(argv0);
}

}  // namespace amqprpc::tools
