// Running the benchmark's processes: servers in the background, measured clients one at a time.
// A measured client (amqp-rpc-bench's own modes or a peer program) prints "@measure" when its
// measured window opens, "@end" when it closes, and its result as the last JSON line. At each
// mark the runner reads the CPU counters of the client, its server, the broker and the machine,
// so CPU per call covers the window alone, and a window in which other work (or the hypervisor,
// by steal) took a share of the machine can be told apart and run again.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bench {

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout, when captured
};

// Starts args[0] (a path) with args. capture: its stdout becomes Child::out; quiet: its stdout
// goes to /dev/null. Throws std::runtime_error when it cannot start.
Child spawn(const std::vector<std::string>& args, bool capture, bool quiet = false);

// SIGTERM, then waits for it (SIGKILL after `grace_s`).
void stop_child(Child& c, double grace_s = 10);

// Runs a program to its end; its last line of output, parsed as JSON ({"error": ...} if none).
nlohmann::json run_json(const std::vector<std::string>& args);

// The full path of `program` on $PATH ("" if none); a path with a '/' is returned as it is.
std::string find_program(const std::string& program);

// When a measured window counts as disturbed: the share of the machine's CPU (all cores) taken
// by anything but the client, its server, the broker and this process, or taken by steal.
struct Filter {
  double max_other = 0.10;
  double max_steal = 0.05;
  bool enabled = true;  // off when the broker's pid is unknown (its CPU would count as other)
};

struct Watched {
  pid_t server = -1;
  pid_t broker = -1;
};

// Runs one measured client (`label` names it in errors). Its result, plus: "client_cpu_us",
// "server_cpu_us", "broker_cpu_us" (per call, in the window; absent when a pid is unknown),
// "other_cpu" and "steal" (shares of the machine in the window), "disturbed" (by `filter`, or
// because the marks were read too late to bracket the client's window: "window_mismatch").
// {"error": ...} when the client failed, hung past `timeout_s` (then it is killed), printed no
// marks or completed no call in its window.
nlohmann::json measure(const std::string& label, const std::vector<std::string>& args,
                       const Watched& watched, const Filter& filter, double timeout_s);

}  // namespace bench
