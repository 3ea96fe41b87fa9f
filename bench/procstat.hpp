// CPU counters from /proc, in clock ticks (USER_HZ): a process's own (utime + stime of all its
// threads, living and ended, from /proc/<pid>/stat) and the machine's (the "cpu" line of
// /proc/stat). The orchestrator reads them when a client's measured window opens and when it
// closes, so CPU per call covers that window only (no start-up, warm-up or teardown), for the
// client, its server and the broker alike, whatever language each is written in.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace bench {

struct MachineCpu {
  std::uint64_t busy = 0;   // user + nice + system, all cores
  std::uint64_t steal = 0;  // time the hypervisor gave another guest
};

// utime + stime of process `pid`; nullopt when it cannot be read (gone, or pid <= 0).
std::optional<std::uint64_t> process_ticks(pid_t pid);

// The machine's counters; nullopt when /proc/stat cannot be read.
std::optional<MachineCpu> machine_ticks();

// The process listening on TCP `port` of this machine (the broker, for a URL on loopback):
// found through /proc/net/tcp{,6} and the processes' open sockets; nullopt if none is seen.
std::optional<pid_t> listener_pid(int port);

// The command name of `pid` (/proc/<pid>/comm), "" if unknown.
std::string process_name(pid_t pid);

// Clock ticks per second (USER_HZ) and online cores.
long ticks_per_second();
int cores();

}  // namespace bench
