#include "orchestrator.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "amqprpc/client.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"
#include "handoff.hpp"
#include "procstat.hpp"
#include "runner.hpp"

namespace bench {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace tools = amqprpc::tools;
constexpr int kPrefetch = 512;  // every server: more than the largest concurrency
constexpr const char* kPython = "/usr/bin/python3";  // Debian's, with python3-pika and aio-pika

std::string fmt(double v, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string duration(double s) {
  const int whole = static_cast<int>(s + 0.5);
  return whole >= 60 ? std::to_string(whole / 60) + " min " + std::to_string(whole % 60) + " s"
                     : std::to_string(whole) + " s";
}

// A cell's measurement of `key`, or null when it was not run there.
const json& in(const json& cell, const std::string& key) {
  static const json none;
  auto it = cell.find(key);
  return it == cell.end() ? none : *it;
}

bool readable(const std::string& path) {
  return access(path.c_str(), R_OK) == 0;
}

// True when the program runs to a zero exit status (its output discarded).
bool runs_ok(const std::vector<std::string>& args) {
  try {
    Child c = spawn(args, false, true);
    int status = 0;
    waitpid(c.pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  } catch (const std::exception&) {
    return false;
  }
}

// Waits until a queue's server answers (it has declared the queue and consumes it), by calling
// through it: every server here echoes.
bool wait_for_queue(const std::string& url, const std::string& queue) {
  amqprpc::ClientOptions o;
  auto broker = tools::parse_broker_url("bench", url);
  if (!broker) return false;
  o.connection = *broker;
  auto c = amqprpc::Client::connect(o);
  if (!c) return false;
  for (int i = 0; i < 100; ++i) {
    amqprpc::CallOptions co;
    co.timeout = std::chrono::milliseconds(2000);
    if ((*c)->try_call(queue, "ping", co).status.ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// An echo server: one process serving one queue for the whole run.
struct Server {
  std::vector<std::string> args;  // to start it
  std::string queue;
  Child child;
};

// One implementation measured in a cell: a client program against a server.
struct Row {
  std::string key;         // in the JSON data
  std::string client;      // the peers' table: the client's name
  std::string server;      // ... the server's
  std::string forms_name;  // the forms' table
  std::string server_key;
  bool peers = false;       // a row of the peers' table
  bool forms = false;       // a row of the forms' table
  bool sequential = false;  // 1 call in flight only
  double warmup = 0;        // seconds before the measured window
  std::function<std::vector<std::string>(const std::string& queue, int concurrency,
                                         std::size_t size)>
      client_args;
};

struct Cell {
  std::size_t size;
  int concurrency;
  bool peers;  // a cell of the peers' table
  bool forms;  // a cell of the forms' table
};

class Orchestrator {
 public:
  explicit Orchestrator(const Options& o) : o_(o), started_(Clock::now()) {}

  int run() {
    find_broker();
    filter_.max_other = o_.max_other_cpu;
    filter_.max_steal = o_.max_steal;
    filter_.enabled = broker_pid_ > 0;
    define();
    std::size_t planned = 0;
    for (const Cell& cell : cells_) planned += rows_in(cell).size() * o_.repeat;
    rerun_budget_ = static_cast<int>(o_.rerun_budget * static_cast<double>(planned) + 0.5);
    if (!start_servers()) return 1;
    measure_cells();
    json pika = seed_run();
    json long_result = memory_run();
    stop_servers();
    std::cerr << "bench: thread hand-off ... " << std::flush;
    try {
      handoff_ = measure_handoff(20000);
    } catch (const std::exception& e) {
      findings_.push_back(std::string("thread hand-off: ") + e.what());
    }
    std::cerr << fmt(handoff_.any_core_cpu_us, 1) << " µs CPU per round trip\n";
    const std::string report = render(pika, long_result);
    std::cout << report;
    if (!o_.out_file.empty()) {
      std::ofstream(o_.out_file) << report << "\n<!-- raw data: "
                                 << json{{"cells", cells_json_},
                                         {"pika", pika},
                                         {"long", long_result},
                                         {"handoff",
                                          {{"any_core_wall_us", handoff_.any_core_wall_us},
                                           {"any_core_cpu_us", handoff_.any_core_cpu_us},
                                           {"same_core_wall_us", handoff_.same_core_wall_us},
                                           {"same_core_cpu_us", handoff_.same_core_cpu_us}}},
                                         {"filter",
                                          {{"max_other_cpu", filter_.max_other},
                                           {"max_steal", filter_.max_steal},
                                           {"enabled", filter_.enabled}}},
                                         {"runs", runs_},
                                         {"runs_repeated", runs_repeated_},
                                         {"reruns", reruns_},
                                         {"still_disturbed", still_disturbed_}}
                                        .dump()
                                 << " -->\n";
    }
    return findings_.empty() ? 0 : 1;
  }

 private:
  // ---- what is measured ----

  // The broker's pid: given, or the process listening on the URL's port when the URL names this
  // machine.
  void find_broker() {
    broker_pid_ = o_.broker_pid;
    if (broker_pid_ > 0) {
      broker_about_ = "pid " + std::to_string(broker_pid_) + " (" + process_name(broker_pid_) + ")";
      return;
    }
    auto broker = tools::parse_broker_url("bench", o_.url);
    if (!broker) return;
    const std::string& host = broker->host;
    if (host != "localhost" && host.rfind("127.", 0) != 0 && host != "::1" && host != "[::1]")
      return;
    if (auto pid = listener_pid(broker->port)) {
      broker_pid_ = *pid;
      broker_about_ = "pid " + std::to_string(broker_pid_) + " (" + process_name(broker_pid_) +
                      "), found listening on port " + std::to_string(broker->port);
    }
  }

  std::vector<std::string> bench_client(const std::string& mode, const std::string& queue, int c,
                                        std::size_t size) const {
    return {o_.exe,
            "--url=" + o_.url,
            "--seconds=" + fmt(o_.seconds, 3),
            "--warmup=" + fmt(o_.warmup, 3),
            "client",
            mode,
            queue,
            std::to_string(c),
            std::to_string(size)};
  }

  // A peer program's client: its command, then the options they all take.
  std::vector<std::string> peer_client(std::vector<std::string> command, const std::string& queue,
                                       int c, std::size_t size, double warmup) const {
    for (const std::string& a :
         {std::string("--url"), o_.url, std::string("--queue"), queue, std::string("--concurrency"),
          std::to_string(c), std::string("--seconds"), fmt(o_.seconds, 3), std::string("--warmup"),
          fmt(warmup, 3), std::string("--size"), std::to_string(size)})
      command.push_back(a);
    return command;
  }

  std::vector<std::string> peer_server(std::vector<std::string> command,
                                       const std::string& queue) const {
    for (const std::string& a : {std::string("--url"), o_.url, std::string("--queue"), queue,
                                 std::string("--prefetch"), std::to_string(kPrefetch)})
      command.push_back(a);
    return command;
  }

  bool wants(const std::string& peer) const {
    return std::find(o_.peers.begin(), o_.peers.end(), peer) != o_.peers.end();
  }

  // A peer's client and server commands ({} if it cannot run here: why goes to the report).
  struct PeerCommands {
    std::vector<std::string> client, server;
  };
  std::optional<PeerCommands> peer_commands(const std::string& peer) {
    const std::string src = o_.peers_src, build = o_.peers_build;
    auto missing = [&](const std::string& why) -> std::optional<PeerCommands> {
      unavailable_.push_back(peer + ": not run (" + why +
                             "; scripts/bench.sh installs and builds the peers)");
      return std::nullopt;
    };
    if (peer == "java") {
      const std::string java = find_program("java");
      const std::string jars =
          "/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar:"
          "/usr/share/java/slf4j-nop.jar";
      if (java.empty()) return missing("no java on $PATH");
      if (!readable("/usr/share/java/amqp-client.jar") ||
          !readable("/usr/share/java/slf4j-nop.jar"))
        return missing("Debian's librabbitmq-client-java and libslf4j-java are not installed");
      if (!readable(build + "/java/BenchClient.class"))
        return missing("no " + build + "/java/BenchClient.class");
      const std::string cp = build + "/java:" + jars;
      return PeerCommands{{java, "-cp", cp, "BenchClient"}, {java, "-cp", cp, "BenchServer"}};
    }
    if (peer == "node") {
      const std::string node = find_program("node");
      const std::string modules = build + "/node/node_modules";
      if (node.empty()) return missing("no node on $PATH");
      if (!readable(modules + "/rabbitmq-client/package.json"))
        return missing("no rabbitmq-client in " + modules);
      return PeerCommands{{node, src + "/node/client.js", "--modules", modules},
                          {node, src + "/node/server.js", "--modules", modules}};
    }
    if (peer == "pika" || peer == "aio-pika") {
      const std::string module = peer == "pika" ? "pika" : "aio_pika";
      const std::string file = peer == "pika" ? "pika" : "aio_pika";
      if (!runs_ok({kPython, "-c", "import " + module}))
        return missing(std::string(kPython) + " cannot import " + module);
      if (!readable(src + "/python/" + file + "_client.py"))
        return missing("no " + src + "/python/" + file + "_client.py");
      return PeerCommands{{kPython, src + "/python/" + file + "_client.py"},
                          {kPython, src + "/python/" + file + "_server.py"}};
    }
    unavailable_.push_back(peer + ": unknown peer (java, node, pika, aio-pika)");
    return std::nullopt;
  }

  void define() {
    const std::string suffix = std::to_string(getpid());
    auto bench_server = [&](const std::string& key, const std::string& impl) {
      Server s;
      s.queue = "bench-" + key + "-" + suffix;
      s.args = {o_.exe, "--url=" + o_.url, "serve", impl, s.queue};
      servers_[key] = s;
    };
    bench_server("raw", "raw");
    bench_server("amqprpc", "amqprpc");
    auto bench_row = [&](const std::string& key, const std::string& mode,
                         const std::string& server_key) {
      Row r;
      r.key = key;
      r.server_key = server_key;
      r.client_args = [this, mode](const std::string& q, int c, std::size_t size) {
        return bench_client(mode, q, c, size);
      };
      return r;
    };
    // The two pairs both tables have.
    Row raw = bench_row("raw", "raw", "raw");
    raw.client = raw.server = raw.forms_name = "raw rabbitmq-c";
    raw.peers = raw.forms = true;
    rows_.push_back(raw);
    Row own = bench_row("amqprpc", "bytes", "amqprpc");
    own.client = "amqp-rpc";
    own.server = "amqp-rpc (1 worker)";
    own.forms_name = "amqp-rpc (1 worker thread)";
    own.peers = own.forms = true;
    rows_.push_back(own);
    Row own_raw = bench_row("amqprpc/raw", "bytes", "raw");
    own_raw.client = "amqp-rpc";
    own_raw.server = "raw rabbitmq-c";
    own_raw.peers = true;
    rows_.push_back(own_raw);

    static const std::map<std::string, std::pair<std::string, std::string>> names{
        {"java", {"Java RpcClient", "Java RpcServer"}},
        {"node", {"Node rabbitmq-client RPCClient", "Node rabbitmq-client consumer"}},
        {"pika", {"pika (seed)", "pika (seed)"}},
        {"aio-pika", {"aio-pika (tutorial 6)", "aio-pika (tutorial 6)"}},
    };
    for (const std::string& peer : o_.peers) {
      if (peer == "none") continue;
      auto commands = peer_commands(peer);
      if (!commands || !names.count(peer)) continue;
      Server s;
      s.queue = "bench-" + peer + "-" + suffix;
      s.args = peer_server(commands->server, s.queue);
      servers_[peer] = s;
      for (const std::string& server_key : {peer, std::string("raw")}) {
        Row r;
        r.key = server_key == "raw" ? peer + "/raw" : peer;
        r.client = names.at(peer).first;
        r.server = server_key == "raw" ? "raw rabbitmq-c" : names.at(peer).second;
        r.server_key = server_key;
        r.peers = true;
        r.sequential = peer == "pika";
        // A JIT (the JVM's, V8's) compiles the hot paths in the first seconds of a fresh
        // process: these clients warm up longer, so that what is measured is their steady state
        // (their servers run all along).
        r.warmup =
            peer == "java" || peer == "node" ? std::max(o_.warmup, o_.jit_warmup) : o_.warmup;
        r.client_args = [this, command = commands->client, warmup = r.warmup](
                            const std::string& q, int c, std::size_t size) {
          return peer_client(command, q, c, size, warmup);
        };
        rows_.push_back(r);
      }
    }

    if (o_.forms) {
      bench_server("amqprpc-inline", "amqprpc-inline");
      bench_server("amqprpc-coro", "amqprpc-coro");
      bench_server("amqprpc-traced", "amqprpc-traced");
      // The typed ones, the coroutine client and the future client call the worker-thread
      // server: compare them with its plain calls from the callback client.
      const std::vector<std::array<std::string, 3>> forms{
          {"amqprpc-inline", "bytes", "amqp-rpc (inline handler)"},
          {"amqprpc-coro", "bytes", "amqp-rpc coroutine handler"},
          {"method", "method", "amqp-rpc raw-bytes method (1 worker)"},
          {"json", "json", "amqp-rpc typed JSON method (1 worker)"},
          {"proto", "proto", "amqp-rpc typed protobuf method (1 worker)"},
          {"coro", "coro", "amqp-rpc coroutine client (1 worker server)"},
          {"future", "future", "amqp-rpc future client (1 worker server)"},
          {"blind", "blind", "amqp-rpc, fail-fast check off (1 worker server)"},
          {"gather", "gather", "amqp-rpc gather, 1 instance (1 worker server)"},
          {"stream", "stream", "amqp-rpc stream items, window = in flight (1 worker server)"},
          {"retry", "retry", "amqp-rpc idempotent, retry policy set, never retried (1 worker)"},
          {"hedge", "hedge", "amqp-rpc idempotent, hedging policy set, never hedged (1 worker)"},
          {"amqprpc-traced", "traced", "amqp-rpc, tracing on (spans to JSON lines, 1 worker)"},
      };
      for (const auto& [key, mode, name] : forms) {
        Row r = bench_row(key, mode, servers_.count(key) ? key : "amqprpc");
        r.forms_name = name;
        r.forms = true;
        rows_.push_back(r);
      }
    }

    std::set<std::size_t> sizes(o_.sizes.begin(), o_.sizes.end());
    std::set<int> concurrency(o_.concurrency.begin(), o_.concurrency.end());
    if (o_.forms) {
      sizes.insert(o_.forms_sizes.begin(), o_.forms_sizes.end());
      concurrency.insert(o_.forms_concurrency.begin(), o_.forms_concurrency.end());
    }
    auto has = [](const auto& v, const auto& x) {
      return std::find(v.begin(), v.end(), x) != v.end();
    };
    for (std::size_t size : sizes) {
      for (int c : concurrency) {
        Cell cell{size, c, has(o_.sizes, size) && has(o_.concurrency, c),
                  o_.forms && has(o_.forms_sizes, size) && has(o_.forms_concurrency, c)};
        if (cell.peers || cell.forms) cells_.push_back(cell);
      }
    }
  }

  bool start_servers() {
    // Only the servers some row calls.
    std::set<std::string> used;
    for (const Row& r : rows_) used.insert(r.server_key);
    for (auto it = servers_.begin(); it != servers_.end();) {
      it = used.count(it->first) ? std::next(it) : servers_.erase(it);
    }
    std::cerr << "bench: starting " << servers_.size() << " echo servers ..." << std::flush;
    for (auto& [key, s] : servers_) {
      try {
        s.child = spawn(s.args, false, true);
      } catch (const std::exception& e) {
        std::cerr << "\nbench: " << key << " server: " << e.what() << "\n";
        stop_servers();
        return false;
      }
    }
    for (auto& [key, s] : servers_) {
      if (!wait_for_queue(o_.url, s.queue)) {
        std::cerr << "\nbench: the " << key << " echo server did not come up\n";
        stop_servers();
        return false;
      }
    }
    std::cerr << " up\n";
    return true;
  }

  void stop_servers() {
    for (auto& [key, s] : servers_) stop_child(s.child);
  }

  double elapsed() const { return std::chrono::duration<double>(Clock::now() - started_).count(); }

  // One run of a row in a cell, run again while disturbed: at most o_.retries times, and while
  // the whole run's re-runs stay within their budget (a machine busy throughout would otherwise
  // take o_.retries + 1 times as long).
  json run_once(const Row& row, const Cell& cell) {
    const Server& server = servers_.at(row.server_key);
    const auto args = row.client_args(server.queue, cell.concurrency, cell.size);
    const double timeout = std::max(row.warmup, o_.warmup) + o_.seconds + 60;
    ++runs_;
    bool repeated = false;
    for (int attempt = 1;; ++attempt) {
      json r = measure(row.key, args, Watched{server.child.pid, broker_pid_}, filter_, timeout);
      r["attempts"] = attempt;
      if (r.contains("error") || !r.value("disturbed", false)) return r;
      // The budget is spent as the run goes: up to its share of the runs made so far (and a
      // few more), so that a busy start does not leave the cells after it none.
      const double allowed = o_.rerun_budget * static_cast<double>(runs_) + 3;
      if (attempt > o_.retries || reruns_ >= rerun_budget_ || reruns_ >= allowed) {
        ++still_disturbed_;
        return r;
      }
      if (!repeated) ++runs_repeated_;
      repeated = true;
      ++reruns_;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let a burst pass
    }
  }

  void progress(std::size_t cell_number, const Cell& cell, const std::string& what) const {
    std::ostringstream line;
    line << "bench: cell " << cell_number << "/" << cells_.size() << " (" << cell.size << " B, "
         << cell.concurrency << " in flight)" << what << ", " << duration(elapsed()) << " elapsed, "
         << reruns_ << " re-runs";
    if (live_) {
      std::cerr << "\r" << line.str() << "\033[K" << std::flush;
    } else if (what.empty()) {
      std::cerr << line.str() << "\n";
    }
  }

  // The rows measured in a cell.
  std::vector<const Row*> rows_in(const Cell& cell) const {
    std::vector<const Row*> rows;
    for (const Row& r : rows_) {
      if (!((r.peers && cell.peers) || (r.forms && cell.forms))) continue;
      if (r.sequential && cell.concurrency != 1) continue;
      rows.push_back(&r);
    }
    return rows;
  }

  void measure_cells() {
    std::size_t cell_number = 0;
    for (const Cell& cell : cells_) {
      ++cell_number;
      const std::vector<const Row*> rows = rows_in(cell);
      progress(cell_number, cell, "");
      // Runs alternate between implementations, `repeat` times; each implementation's median
      // run (by calls/s) stands for it, so drift and noise on a shared machine hit all alike.
      std::vector<std::vector<json>> runs(rows.size());
      for (int rep = 0; rep < o_.repeat; ++rep) {
        for (std::size_t i = 0; i < rows.size(); ++i) {
          progress(cell_number, cell,
                   ": " + rows[i]->key + " run " + std::to_string(rep + 1) + "/" +
                       std::to_string(o_.repeat));
          runs[i].push_back(run_once(*rows[i], cell));
        }
      }
      json j{{"size", cell.size},
             {"concurrency", cell.concurrency},
             {"peers", cell.peers},
             {"forms", cell.forms}};
      if (live_) std::cerr << "\r\033[K";
      std::cerr << "bench: body " << cell.size << " B, " << cell.concurrency << " in flight:";
      for (std::size_t i = 0; i < rows.size(); ++i) {
        auto& v = runs[i];
        for (const auto& run : v) {
          if (run.contains("error"))
            findings_.push_back(rows[i]->key + ": " + run["error"].get<std::string>());
        }
        // The median of the undisturbed runs, if any.
        std::vector<json> clean;
        for (const auto& run : v)
          if (!run.value("disturbed", false)) clean.push_back(run);
        if (!clean.empty()) v = clean;
        std::sort(v.begin(), v.end(), [](const json& a, const json& b) {
          return a.value("calls_per_s", 0.0) < b.value("calls_per_s", 0.0);
        });
        j[rows[i]->key] = v[v.size() / 2];
        std::cerr << " " << rows[i]->key << " " << fmt(v[v.size() / 2].value("calls_per_s", 0.0))
                  << "/s";
      }
      std::cerr << "\n";
      // Ratios to the raw pair of the same cell and run.
      const json raw = j["raw"];
      for (const Row* r : rows) {
        json& m = j[r->key];
        auto ratio = [&](const char* field) {
          const double base = raw.value(field, 0.0);
          return base > 0 ? m.value(field, 0.0) / base : 0.0;
        };
        m["ratio_calls_per_s"] = ratio("calls_per_s");
        m["ratio_p50"] = ratio("p50_us");
        m["ratio_client_cpu"] = ratio("client_cpu_us");
        m["ratio_server_cpu"] = ratio("server_cpu_us");
        const double base_total = raw.value("client_cpu_us", 0.0) +
                                  raw.value("server_cpu_us", 0.0) + raw.value("broker_cpu_us", 0.0);
        const double total = m.value("client_cpu_us", 0.0) + m.value("server_cpu_us", 0.0) +
                             m.value("broker_cpu_us", 0.0);
        m["ratio_total_cpu"] = base_total > 0 ? total / base_total : 0.0;
      }
      cells_json_.push_back(j);
    }
  }

  json seed_run() {
    if (o_.pika_calls <= 0) return {};
    std::cerr << "bench: the seed's pika client and server, " << o_.pika_calls
              << " sequential calls ... " << std::flush;
    json pika;
    // The seed's programs take the broker from $AMQP_URL only.
    setenv("AMQP_URL", o_.url.c_str(), 1);
    try {
      Child seed_server =
          spawn({kPython, o_.seed_dir + "/seed_rpc_server.py"}, false, /*quiet=*/true);
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // pika connects, declares
      pika = run_json({kPython, o_.seed_dir + "/seed_rpc_client.py", "--bench",
                       std::to_string(o_.pika_calls), "--n", "10"});
      stop_child(seed_server);
    } catch (const std::exception& e) {
      pika = json{{"error", e.what()}};
    }
    if (pika.contains("error")) findings_.push_back("seed: " + pika["error"].get<std::string>());
    std::cerr << fmt(pika.value("calls_per_s", 0.0)) << " calls/s\n";
    return pika;
  }

  json memory_run() {
    if (o_.long_calls == 0) return {};
    std::cerr << "bench: memory run, " << o_.long_calls << " calls at 256 in flight ... "
              << std::flush;
    json r = run_json({o_.exe, "--url=" + o_.url, "--long-calls=" + std::to_string(o_.long_calls),
                       "long", servers_.at("amqprpc").queue, "256"});
    if (r.contains("error")) findings_.push_back("memory run: " + r["error"].get<std::string>());
    std::cerr << fmt(r.value("seconds", 0.0), 1) << " s\n";
    return r;
  }

  // ---- the report ----

  std::string cpu(const json& m, const char* field) const {
    return m.contains(field) ? fmt(m[field].get<double>(), 1) : "";
  }
  static std::string mark_disturbed(const json& m) {
    return m.value("disturbed", false) ? " †" : "";
  }

  void peers_tables(std::ostream& md) const {
    std::vector<std::size_t> sizes;
    for (const Cell& c : cells_)
      if (c.peers && std::find(sizes.begin(), sizes.end(), c.size) == sizes.end())
        sizes.push_back(c.size);
    if (sizes.empty()) return;
    md << "## Against the peers\n\n"
       << "Each client against its own server and against the raw rabbitmq-c server; CPU per "
          "call of the client, the server and the broker, in the measured window; ratios to the "
          "raw pair's in the same cell.\n";
    for (std::size_t size : sizes) {
      md << "\n### "
         << (size % 1024 == 0 ? std::to_string(size / 1024) + " KiB" : std::to_string(size) + " B")
         << " bodies\n\n"
         << "| client | server | in flight | calls/s | p50 µs | p99 µs | client CPU µs/call | "
            "server CPU µs/call | broker CPU µs/call | calls/s vs raw | client CPU vs raw | "
            "server CPU vs raw | all CPU vs raw |\n"
         << "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
      for (const json& cell : cells_json_) {
        if (!cell.value("peers", false) || cell["size"] != size) continue;
        const int c = cell["concurrency"];
        for (const Row& r : rows_) {
          if (!r.peers) continue;
          md << "| " << r.client << " | " << r.server << " | " << c << " | ";
          if (!cell.contains(r.key)) {
            md << (r.sequential ? "n/a (sequential)" : "n/a") << " | | | | | | | | | |\n";
            continue;
          }
          const json& m = cell[r.key];
          if (m.contains("error")) {
            md << "failed | | | | | | | | | |\n";
            continue;
          }
          md << fmt(m.value("calls_per_s", 0.0)) << mark_disturbed(m) << " | "
             << fmt(m.value("p50_us", 0.0)) << " | " << fmt(m.value("p99_us", 0.0)) << " | "
             << cpu(m, "client_cpu_us") << " | " << cpu(m, "server_cpu_us") << " | "
             << cpu(m, "broker_cpu_us") << " | " << fmt(m.value("ratio_calls_per_s", 0.0), 2)
             << " | " << fmt(m.value("ratio_client_cpu", 0.0), 2) << " | "
             << fmt(m.value("ratio_server_cpu", 0.0), 2) << " | "
             << fmt(m.value("ratio_total_cpu", 0.0), 2) << " |\n";
        }
      }
    }
    for (const auto& u : unavailable_) md << "\n" << u << "\n";
    md << "\n";
  }

  void forms_table(std::ostream& md, double& best_rpc) const {
    bool any = false;
    for (const Cell& c : cells_) any = any || c.forms;
    if (!any) return;
    md << "## amqp-rpc's forms\n\n"
       << "| implementation | body | in flight | calls/s | p50 µs | p99 µs | max µs | client CPU "
          "µs/call | server CPU µs/call | broker CPU µs/call | client peak RSS MiB | calls/s vs "
          "raw | p50 vs raw |\n"
       << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const json& cell : cells_json_) {
      if (!cell.value("forms", false)) continue;
      for (const Row& r : rows_) {
        if (!r.forms || !cell.contains(r.key)) continue;
        const json& m = cell[r.key];
        if (r.key != "raw" && r.key != "stream")
          best_rpc = std::max(best_rpc, m.value("calls_per_s", 0.0));
        md << "| " << r.forms_name << " | " << cell["size"].get<std::size_t>() << " B | "
           << cell["concurrency"].get<int>() << " | " << fmt(m.value("calls_per_s", 0.0))
           << mark_disturbed(m) << " | " << fmt(m.value("p50_us", 0.0)) << " | "
           << fmt(m.value("p99_us", 0.0)) << " | " << fmt(m.value("max_us", 0.0)) << " | "
           << cpu(m, "client_cpu_us") << " | " << cpu(m, "server_cpu_us") << " | "
           << cpu(m, "broker_cpu_us") << " | " << fmt(m.value("peak_rss_kb", 0) / 1024.0, 1)
           << " | " << fmt(m.value("ratio_calls_per_s", 0.0), 2) << " | "
           << fmt(m.value("ratio_p50", 0.0), 2) << " |\n";
      }
    }
  }

  // The sentences comparing forms with their counterparts, in the forms' cells at 16 B and 1 or
  // 256 in flight.
  void forms_findings(std::ostream& report) const {
    auto forms_cells = [&]() {
      std::vector<const json*> v;
      for (const json& cell : cells_json_) {
        if (cell.value("forms", false) && cell["size"] == 16 &&
            (cell["concurrency"] == 1 || cell["concurrency"] == 256))
          v.push_back(&cell);
      }
      return v;
    };
    for (const json* cell : forms_cells()) {
      for (const char* mode : {"amqprpc", "amqprpc-inline"}) {
        if (!cell->contains(mode)) continue;
        std::string name = std::string(mode) == "amqprpc" ? "1 worker thread" : "inline handler";
        const json& m = in(*cell, mode);
        if ((*cell)["concurrency"] == 256) {
          report << "At 256 in flight (16 B), amqp-rpc (" << name << ") makes "
                 << fmt(100 * m.value("ratio_calls_per_s", 0.0))
                 << "% of the raw baseline's calls/s (target: at least 95%).\n";
        } else {
          report << "At 1 in flight (16 B), amqp-rpc (" << name << ")'s p50 latency is "
                 << fmt(m.value("ratio_p50", 0.0), 2)
                 << "x the raw baseline's (target: at most 1.10x).\n";
        }
      }
    }
    // Rows against the same server's plain calls, same run: what each adds per call.
    auto against_plain = [&](const std::string& what, std::initializer_list<const char*> keys) {
      for (const json* cell : forms_cells()) {
        const json& plain = in(*cell, "amqprpc");
        report << "\nAt " << (*cell)["concurrency"].get<int>() << " in flight (16 B), " << what
               << "against plain calls to the same server (1 worker):";
        for (const char* key : keys) {
          if (!cell->contains(key)) continue;
          const json& t = (*cell)[key];
          auto ratio = [&](const char* field) {
            double base = plain.value(field, 0.0);
            return base > 0 ? t.value(field, 0.0) / base : 0.0;
          };
          const double extra_cpu =
              t.value("client_cpu_us", 0.0) - plain.value("client_cpu_us", 0.0);
          report << " " << key << " calls/s " << fmt(ratio("calls_per_s"), 2) << "x, p50 "
                 << fmt(ratio("p50_us"), 2) << "x, client CPU " << (extra_cpu >= 0 ? "+" : "")
                 << fmt(extra_cpu, 1) << " µs/call;";
        }
        report << "\n";
      }
    };
    // Typed calls: what dispatch and codecs cost.
    against_plain("", {"method", "json", "proto"});
    // The coroutine and future clients, the coroutine handler and tracing, each against its
    // counterpart in the same cell.
    for (const json* cell : forms_cells()) {
      auto ratios = [&](const char* key, const char* base_key) {
        const json& t = in(*cell, key);
        const json& base = in(*cell, base_key);
        auto ratio = [&](const char* field) {
          double b = base.value(field, 0.0);
          return b > 0 ? t.value(field, 0.0) / b : 0.0;
        };
        return "calls/s " + fmt(ratio("calls_per_s"), 2) + "x, p50 " + fmt(ratio("p50_us"), 2) +
               "x";
      };
      auto cpu_of = [&](const char* key) {
        return fmt(in(*cell, key).value("client_cpu_us", 0.0), 1) + " µs/call";
      };
      const std::string at =
          "At " + std::to_string((*cell)["concurrency"].get<int>()) + " in flight (16 B), ";
      report << "\n"
             << at << "the coroutine client against the callback client (same 1-worker server): "
             << ratios("coro", "amqprpc")
             << "; against the future client: " << ratios("coro", "future") << "; client CPU "
             << cpu_of("coro") << " (callback " << cpu_of("amqprpc") << ", future "
             << cpu_of("future") << ").\n";
      report << "\n"
             << at << "the coroutine handler against the inline handler: "
             << ratios("amqprpc-coro", "amqprpc-inline")
             << "; against the 1 worker thread: " << ratios("amqprpc-coro", "amqprpc") << ".\n";
      report << "\n"
             << at << "tracing on against off (1 worker): " << ratios("amqprpc-traced", "amqprpc")
             << "; client CPU " << cpu_of("amqprpc-traced") << " on, " << cpu_of("amqprpc")
             << " off.\n";
      report << "\n"
             << at << "a gather (one instance: count, publish to its exchange, collect) against "
             << "a call to the same server: " << ratios("gather", "amqprpc")
             << "; a stream's items (window " << (*cell)["concurrency"].get<int>()
             << ") against calls: " << ratios("stream", "amqprpc") << ".\n";
      report << "\n"
             << at << "the fail-fast check (a server count per queue, refreshed in the "
             << "background) on against off: " << ratios("amqprpc", "blind") << "; client CPU "
             << cpu_of("amqprpc") << " on, " << cpu_of("blind") << " off.\n";
    }
    // Retry and hedging policies that never trigger: what carrying a call through them costs.
    against_plain("idempotent calls under a policy that never triggers, ", {"retry", "hedge"});
  }

  std::string render(const json& pika, const json& long_result) const {
    std::ostringstream report;
    report << "Measured: " << o_.seconds << " s per run after " << o_.warmup << " s of warm-up ("
           << std::max(o_.warmup, o_.jit_warmup)
           << " s for the JIT-compiled clients, Java's and Node's), " << o_.repeat
           << " runs per implementation and cell (the median by calls/s is shown); "
           << "the whole run took " << duration(elapsed()) << ".\n\n";
    if (filter_.enabled) {
      report << "Broker: " << broker_about_
             << ". Disturbance filter: a run in whose measured window other work took more than "
             << fmt(100 * filter_.max_other) << "% of the machine's CPU (" << cores()
             << " cores; /proc/stat's user+nice+system less the client's, the server's, the "
                "broker's and the orchestrator's own) or steal took more than "
             << fmt(100 * filter_.max_steal) << "% was run again, at most " << o_.retries
             << " times (and " << rerun_budget_ << " re-runs in all, " << fmt(100 * o_.rerun_budget)
             << "% of the runs planned, spent as the run goes): " << runs_repeated_ << " of "
             << runs_ << " runs were repeated (" << reruns_ << " re-runs in all)";
      if (still_disturbed_ > 0) {
        report << "; " << still_disturbed_
               << " were still disturbed at their last try and are kept, left out of the median "
                  "when another run of theirs was not, marked † when shown";
      }
      report << ".\n\n";
    } else {
      report << "Disturbance filter off: the broker's pid is unknown (not given with "
                "--broker-pid, and no process on this machine listens on the URL's port), so "
                "neither its CPU nor other work could be told apart.\n\n";
    }
    peers_tables(report);
    double best_rpc = 0;
    std::ostringstream forms;
    forms_table(forms, best_rpc);
    report << forms.str();
    if (!pika.is_null() && pika.value("calls_per_s", 0.0) > 0) {
      if (forms.str().empty()) {
        report << "| implementation | body | in flight | calls/s | p50 µs | p99 µs | max µs |\n"
               << "|---|---:|---:|---:|---:|---:|---:|\n";
      }
      report << "| seed (pika 1.x, sequential, fib(10)) | 2 B | 1 | "
             << fmt(pika.value("calls_per_s", 0.0)) << " | " << fmt(pika.value("p50_us", 0.0))
             << " | " << fmt(pika.value("p99_us", 0.0)) << " | " << fmt(pika.value("max_us", 0.0))
             << (forms.str().empty() ? " |\n" : " | | | | | | |\n");
    }
    report << "\n";
    if (!pika.is_null() && pika.value("calls_per_s", 0.0) > 0 && best_rpc > 0) {
      double best_raw = 0;
      for (const auto& cell : cells_json_)
        best_raw = std::max(best_raw, in(cell, "raw").value("calls_per_s", 0.0));
      report << "amqp-rpc's best calls/s (stream items aside) is "
             << fmt(best_rpc / pika.value("calls_per_s", 1.0), 1)
             << "x the seed's pika client (target: at least 20x); the raw rabbitmq-c baseline's "
                "best is "
             << fmt(best_raw / pika.value("calls_per_s", 1.0), 1) << "x.\n";
    }
    forms_findings(report);
    if (!long_result.is_null() && long_result.contains("samples")) {
      report << "\nMemory run: " << long_result.value("calls", 0) << " calls at 256 in flight in "
             << fmt(long_result.value("seconds", 0.0), 1)
             << " s; client RSS (MiB) after each tenth:";
      for (const auto& s : long_result["samples"])
        report << " " << fmt(s["rss_kb"].get<long>() / 1024.0, 1);
      report << "\n";
    }
    if (handoff_.any_core_wall_us > 0) {
      report
          << "\nThread hand-off on this machine (what a server that hands each batch of requests "
             "from its I/O thread to a worker and back pays, and amqp-rpc's server no longer does "
             "while a handler slot is free: docs/WORKER_POOL.md; at 1 call in flight a batch is "
             "one call): a round trip between two threads (a condition variable there, an "
             "eventfd through poll() back) takes "
          << fmt(handoff_.any_core_wall_us, 1) << " µs and " << fmt(handoff_.any_core_cpu_us, 1)
          << " µs of CPU when the threads run on any core, " << fmt(handoff_.same_core_wall_us, 1)
          << " µs and " << fmt(handoff_.same_core_cpu_us, 1) << " µs when both share one.\n";
    }
    for (const auto& f : findings_) report << "\nerror during the run: " << f << "\n";
    return report.str();
  }

  const Options& o_;
  const Clock::time_point started_;
  const bool live_ = isatty(STDERR_FILENO) != 0;
  Filter filter_;
  pid_t broker_pid_ = -1;
  std::string broker_about_;
  std::map<std::string, Server> servers_;
  std::vector<Row> rows_;
  std::vector<Cell> cells_;
  json cells_json_ = json::array();
  std::vector<std::string> unavailable_, findings_;
  HandoffCost handoff_;
  int runs_ = 0, runs_repeated_ = 0, reruns_ = 0, still_disturbed_ = 0, rerun_budget_ = 0;
};

}  // namespace

int orchestrate(const Options& options) {
  return Orchestrator(options).run();
}

}  // namespace bench
