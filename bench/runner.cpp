#include "runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "procstat.hpp"

extern char** environ;

namespace bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The counters read at a mark.
struct Sample {
  Clock::time_point at;
  std::optional<MachineCpu> machine;
  std::optional<std::uint64_t> client, server, broker, self;
};

Sample sample(pid_t client, const Watched& w) {
  Sample s;
  s.client = process_ticks(client);
  s.server = process_ticks(w.server);
  s.broker = process_ticks(w.broker);
  s.self = process_ticks(getpid());
  s.machine = machine_ticks();
  s.at = Clock::now();
  return s;
}

std::optional<double> delta(const std::optional<std::uint64_t>& a,
                            const std::optional<std::uint64_t>& b) {
  if (!a || !b || *b < *a) return std::nullopt;
  return static_cast<double>(*b - *a);
}

void kill_and_reap(Child& c) {
  if (c.pid <= 0) return;
  kill(c.pid, SIGKILL);
  int status = 0;
  waitpid(c.pid, &status, 0);
  c.pid = -1;
}

}  // namespace

Child spawn(const std::vector<std::string>& args, bool capture, bool quiet) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  int pipefd[2] = {-1, -1};
  if (capture) {
    if (pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  } else if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  Child c;
  const int rc = posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    if (capture) {
      close(pipefd[0]);
      close(pipefd[1]);
    }
    throw std::runtime_error("cannot start " + args[0]);
  }
  if (capture) {
    close(pipefd[1]);
    c.out = pipefd[0];
  }
  return c;
}

void stop_child(Child& c, double grace_s) {
  if (c.pid <= 0) return;
  kill(c.pid, SIGTERM);
  const auto give_up = Clock::now() + std::chrono::duration<double>(grace_s);
  int status = 0;
  while (waitpid(c.pid, &status, WNOHANG) == 0) {
    if (Clock::now() >= give_up) {
      kill_and_reap(c);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  c.pid = -1;
}

json run_json(const std::vector<std::string>& args) {
  Child c = spawn(args, true);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(c.out, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(c.out);
  int status = 0;
  waitpid(c.pid, &status, 0);
  // The result is the last line of the child's output.
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto nl = out.find_last_of('\n');
  std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  if (last.empty() || last[0] != '{') {
    return json{{"error", "no result from " + args[0] + " " + (args.size() > 4 ? args[4] : "") +
                              " (exit status " + std::to_string(status) + ")"}};
  }
  try {
    return json::parse(last);
  } catch (const std::exception& e) {
    return json{{"error", std::string("bad output: ") + e.what()}};
  }
}

std::string find_program(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

json measure(const std::string& label, const std::vector<std::string>& args, const Watched& watched,
             const Filter& filter, double timeout_s) {
  Child c;
  try {
    c = spawn(args, true);
  } catch (const std::exception& e) {
    return json{{"error", e.what()}};
  }
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  std::optional<Sample> from, to;
  std::string pending, last_json, failure;
  char buf[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      failure = "timed out after " + std::to_string(static_cast<int>(timeout_s)) + " s";
      break;
    }
    pollfd p{c.out, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t n = read(c.out, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // end of output
    pending.append(buf, static_cast<std::size_t>(n));
    for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      const std::string line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (line == "@measure" && !from) {
        from = sample(c.pid, watched);
      } else if (line == "@end" && from && !to) {
        to = sample(c.pid, watched);
      } else if (!line.empty() && line[0] == '{') {
        last_json = line;
      }
    }
  }
  if (!pending.empty() && pending[0] == '{') last_json = pending;
  close(c.out);
  if (!failure.empty()) {
    kill_and_reap(c);
  } else {
    int status = 0;
    waitpid(c.pid, &status, 0);
    c.pid = -1;
  }
  const std::string& what = label;
  if (!failure.empty()) return json{{"error", what + ": " + failure}};
  json r;
  try {
    r = last_json.empty() ? json{{"error", what + ": no result"}} : json::parse(last_json);
  } catch (const std::exception& e) {
    return json{{"error", what + ": bad output: " + e.what()}};
  }
  if (!from || !to) {
    if (!r.contains("error")) r["error"] = what + ": no measured window (@measure, @end)";
    return r;
  }
  const double calls = r.value("calls", 0.0);
  if (calls <= 0 && !r.contains("error")) r["error"] = what + ": no call completed in its window";
  const double us_per_tick = 1e6 / static_cast<double>(ticks_per_second());
  auto per_call = [&](const char* key, const std::optional<double>& ticks) {
    if (ticks && calls > 0) r[key] = *ticks * us_per_tick / calls;
  };
  const auto client = delta(from->client, to->client);
  const auto server = delta(from->server, to->server);
  const auto broker = delta(from->broker, to->broker);
  per_call("client_cpu_us", client);
  per_call("server_cpu_us", server);
  per_call("broker_cpu_us", broker);
  const double window_s = std::chrono::duration<double>(to->at - from->at).count();
  const double capacity = window_s * static_cast<double>(ticks_per_second() * cores());
  r["window_s"] = window_s;
  if (from->machine && to->machine && capacity > 0) {
    const double busy = static_cast<double>(to->machine->busy - from->machine->busy);
    const double ours = client.value_or(0) + server.value_or(0) + broker.value_or(0) +
                        delta(from->self, to->self).value_or(0);
    const double other = std::max(0.0, busy - ours) / capacity;
    const double steal = static_cast<double>(to->machine->steal - from->machine->steal) / capacity;
    r["other_cpu"] = other;
    r["steal"] = steal;
    r["disturbed"] = filter.enabled && (other > filter.max_other || steal > filter.max_steal);
  }
  // The marks were read late (this process was not scheduled, or the client's output was held
  // up): the counters do not cover the client's window, whatever the filter says.
  const double client_s = r.value("seconds", 0.0);
  if (std::abs(window_s - client_s) > std::max(0.1 * client_s, 0.05)) {
    r["window_mismatch"] = true;
    r["disturbed"] = true;
  }
  return r;
}

}  // namespace bench
