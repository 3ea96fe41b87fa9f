// Fault tests drive private RabbitMQ nodes through scripts/broker.sh: start, stop, SIGKILL,
// rabbitmqctl. Each node has its own name and port; none is the suite's shared broker.
// `accepts_amqp` asks the node itself (a TCP connect and the start of the AMQP handshake), so a
// test can measure how long a node was down and wait for it instead of assuming a boot time.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "amqprpc/options.hpp"

namespace faults {

class BrokerNode {
 public:
  BrokerNode(std::string name, int port, std::string extra_env = "")
      : name_(std::move(name)), port_(port), extra_env_(std::move(extra_env)) {}

  std::string url() const {
    return "amqp://guest:guest@127.0.0.1:" + std::to_string(port_) + "/%2F";
  }
  amqprpc::ConnectionOptions options() const {
    auto o = amqprpc::ConnectionOptions::from_uri(url()).value();
    o.connect_timeout = std::chrono::milliseconds(2000);
    return o;
  }
  int port() const { return port_; }
  const std::string& name() const { return name_; }

  int run(const std::string& args) const {
    std::string cmd = "AMQPRPC_BROKER_NAME=" + name_ +
                      " AMQPRPC_BROKER_PORT=" + std::to_string(port_) + " " + extra_env_ + " " +
                      AMQPRPC_SOURCE_DIR + "/scripts/broker.sh " + args + " >/dev/null 2>&1";
    int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string output(const std::string& args) const {
    std::string cmd = "AMQPRPC_BROKER_NAME=" + name_ +
                      " AMQPRPC_BROKER_PORT=" + std::to_string(port_) + " " + extra_env_ + " " +
                      AMQPRPC_SOURCE_DIR + "/scripts/broker.sh " + args + " 2>/dev/null";
    std::string out;
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[256];
      while (std::fgets(buf, sizeof buf, p)) out += buf;
      pclose(p);
    }
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  }

  void start() const {
    if (run("start") != 0) throw std::runtime_error("cannot start node " + name_);
  }
  void stop() const { run("stop"); }
  void kill9() const {
    std::string pid = output("pid");
    if (pid.empty()) throw std::runtime_error("node " + name_ + " is not running");
    ::kill(std::stoi(pid), SIGKILL);
  }
  int ctl(const std::string& args) const { return run("ctl " + args); }

  // True if the node accepts a TCP connection on its AMQP port and answers the AMQP 0-9-1
  // protocol header with connection.start (what a client needs before it can log in).
  bool accepts_amqp(std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) const {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port_));
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      static const char header[] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
      if (::send(fd, header, sizeof header, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof header)) {
        // Frame: type 1 (method), channel 0, size (4), then class 10 method 10.
        unsigned char frame[11];
        std::size_t got = 0;
        auto end = std::chrono::steady_clock::now() + limit;
        while (got < sizeof frame) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
              end - std::chrono::steady_clock::now());
          pollfd p{fd, POLLIN, 0};
          if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
          ssize_t n = ::recv(fd, frame + got, sizeof frame - got, 0);
          if (n <= 0) break;
          got += static_cast<std::size_t>(n);
        }
        ok = got == sizeof frame && frame[0] == 1 && frame[1] == 0 && frame[2] == 0 &&
             frame[7] == 0 && frame[8] == 10 && frame[9] == 0 && frame[10] == 10;
      }
    }
    ::close(fd);
    return ok;
  }

  // Polls accepts_amqp() until it is `want` or `limit` passes; the moment it was, if it was.
  std::optional<std::chrono::steady_clock::time_point> await_amqp(
      bool want, std::chrono::milliseconds limit) const {
    auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto now = std::chrono::steady_clock::now();
      if (accepts_amqp() == want) return now;
      if (now >= end) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

 private:
  std::string name_;
  int port_;
  std::string extra_env_;
};

}  // namespace faults
