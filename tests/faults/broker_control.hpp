// Fault tests drive private RabbitMQ nodes through scripts/broker.sh: start, stop, SIGKILL,
// rabbitmqctl. Each node has its own name and port; none is the suite's shared broker.
#pragma once

#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

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

 private:
  std::string name_;
  int port_;
  std::string extra_env_;
};

}  // namespace faults
