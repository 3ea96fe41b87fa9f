// amqp-rpc's benchmark: in one run, against one broker, measures
//   1. raw: an echo server and a pipelined client written directly on rabbitmq-c (the ceiling);
//   2. amqp-rpc: Server + Client (async, pipelined), same bodies and concurrency;
//   3. the seed: its pika client and server (sequential), as the tutorial has them, no sleep;
//   4. amqp-rpc with methods: the same echo as a raw-bytes method (x-rpc-method dispatch), and as
//      typed JSON and protobuf methods called through typed_async_call (dispatch and codecs);
//   5. the other forms against the same servers: a coroutine client (amqprpc::async_call with
//      asio::use_awaitable), a future client, a server whose handler is a coroutine, and
//      tracing on (spans made and exported on client and server), and the fail-fast check
//      off (calls sent blind, as tutorial 6 does: what knowing that a server is there costs);
//   6. idempotent calls under a retry policy and under a hedging policy that never trigger (every
//      first attempt succeeds in time): what a policy costs a call that needs none;
// and a long run showing the client's memory stays flat. Prints a Markdown table.
// Each measurement runs in a process of its own so CPU time and peak RSS are the client's alone.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "amqprpc/asio.hpp"
#include "amqprpc/client.hpp"
#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/server.hpp"
#include "amqprpc/tracing.hpp"
#include "bench.pb.h"
#include "common/cli.hpp"
#include "common/common.hpp"
#include "raw_baseline.hpp"

extern char** environ;

namespace bench_types {
// The typed JSON echo: the body as a string field.
struct Echo {
  std::string data;
};
void to_json(nlohmann::json& j, const Echo& e) {
  j = {{"data", e.data}};
}
void from_json(const nlohmann::json& j, Echo& e) {
  j.at("data").get_to(e.data);
}
}  // namespace bench_types

namespace {

using json = nlohmann::json;
using JsonEcho = bench_types::Echo;
using ProtoEcho = amqprpc::bench::Echo;
namespace tools = amqprpc::tools;
using Clock = std::chrono::steady_clock;
constexpr int kPrefetch = 512;  // both servers: more than the largest concurrency

amqprpc::ConnectionOptions broker_from(const std::string& url) {
  auto o = tools::parse_broker_url("bench", url);
  if (!o) std::exit(tools::kUsage);
  return *o;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

long max_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

long current_rss_kb() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

json summarize(bench::RunResult& r, double cpu, std::uint64_t total_calls) {
  json j;
  j["calls"] = r.calls;
  j["seconds"] = r.seconds;
  j["calls_per_s"] = r.seconds > 0 ? static_cast<double>(r.calls) / r.seconds : 0.0;
  j["p50_us"] = percentile(r.latencies_us, 50);
  j["p99_us"] = percentile(r.latencies_us, 99);
  j["max_us"] = r.latencies_us.empty()
                    ? 0.0
                    : *std::max_element(r.latencies_us.begin(), r.latencies_us.end());
  j["cpu_us_per_call"] = total_calls ? cpu * 1e6 / static_cast<double>(total_calls) : 0.0;
  j["peak_rss_kb"] = max_rss_kb();
  if (!r.error.empty()) j["error"] = r.error;
  return j;
}

// Tracing on: a span per call and per request served, written as JSON lines to /dev/null, so
// that what is measured is making and exporting the spans, not a disk.
std::shared_ptr<amqprpc::TracingInterceptor> tracing_to_null() {
  return std::make_shared<amqprpc::TracingInterceptor>(
      std::make_shared<amqprpc::JsonLinesExporter>("/dev/null"));
}

// ---- child modes ----

int serve(const std::string& impl, const std::string& url, const std::string& queue) {
  tools::block_stop_signals();
  auto broker = broker_from(url);
  if (impl == "raw") {
    std::atomic<bool> stop{false};
    std::string error;
    tools::wait_for_stop([&] { error = bench::raw_serve(broker, queue, kPrefetch, stop); },
                         [&] { stop = true; });
    if (!error.empty()) std::cerr << error << "\n";
    return error.empty() ? tools::kOk : tools::kError;
  }
  amqprpc::ServerOptions o;
  o.connection = broker;
  o.queue = queue;
  o.prefetch = kPrefetch;
  // The coroutine handler's server dispatches inline: the coroutine runs on its own thread.
  o.workers = impl == "amqprpc-inline" || impl == "amqprpc-coro" ? 0 : 1;
  if (impl == "amqprpc-traced") o.interceptors.push_back(tracing_to_null());
  // The coroutine handler's executor, run by one thread (declared before the server, which
  // holds it, so that it outlives the server).
  asio::io_context io;
  auto io_work = asio::make_work_guard(io);
  std::thread io_thread;
  // One service: the default handler (plain calls), a raw method and typed methods, all echoes.
  amqprpc::Service echo(queue);
  if (impl == "amqprpc-coro") {
    amqprpc::coroutine_default_handler(
        echo, io.get_executor(), [](const amqprpc::Request& r) -> asio::awaitable<amqprpc::Reply> {
          amqprpc::Reply reply = amqprpc::Reply::ok(r.body);
          co_return reply;
        });
    io_thread = std::thread([&io] { io.run(); });
  } else {
    echo.default_handler([](const amqprpc::Request& r) { return amqprpc::Reply::ok(r.body); });
  }
  echo.method("Echo", [](const amqprpc::Request& r) { return amqprpc::Reply::ok(r.body); });
  // Items of the body's size (in bytes), until the reader stops the stream (on the servers
  // with a worker thread: a stream's writer waits for credit).
  if (o.workers != 0)
    echo.stream_method("Items", [](const amqprpc::Request& r, amqprpc::StreamWriter& w) {
      const std::string item(
          std::min<std::size_t>(std::strtoul(r.body.c_str(), nullptr, 10), 1 << 20), 'x');
      while (w.write(item)) {
      }
      return amqprpc::Status{};
    });
  echo.method<JsonEcho, JsonEcho>("EchoJson", [](const JsonEcho& e) { return e; });
  echo.method<ProtoEcho, ProtoEcho>("EchoProto", [](const ProtoEcho& e) { return e; });
  auto end_io = [&] {
    io_work.reset();
    if (io_thread.joinable()) io_thread.join();
  };
  auto server = amqprpc::Server::start(o, std::move(echo));
  if (!server) {
    std::cerr << "bench serve: " << server.status().to_string() << "\n";
    end_io();
    return tools::kError;
  }
  amqprpc::Status ended = tools::wait_for_stop(**server);
  end_io();  // the server has stopped: no coroutine is left to run
  if (!ended.ok()) {
    std::cerr << "bench serve: stopped: " << ended.to_string() << "\n";
    return tools::kError;
  }
  return tools::kOk;
}

// Keeps `concurrency` async calls in flight; each completion (on the client's I/O thread)
// records its latency and starts the next call.
// How a client calls: plain bytes (no method), a raw method, a typed JSON or protobuf method,
// or plain bytes marked idempotent under a retry or a hedging policy.
enum class CallKind { bytes, method, json, proto, retry, hedge, gather };

CallKind call_kind(const std::string& mode) {
  if (mode == "method") return CallKind::method;
  if (mode == "json") return CallKind::json;
  if (mode == "proto") return CallKind::proto;
  if (mode == "retry") return CallKind::retry;
  if (mode == "hedge") return CallKind::hedge;
  if (mode == "gather") return CallKind::gather;
  return CallKind::bytes;
}

struct AsyncRun {
  AsyncRun(amqprpc::Client& c, std::string q, std::string b, CallKind k = CallKind::bytes)
      : client(c), queue(std::move(q)), body(std::move(b)), kind(k) {
    json_echo.data = body;
    proto_echo.set_data(body);
    method_options.method = "Echo";
    // Policies that never trigger here: every first attempt succeeds, well within the hedging
    // delay; what is measured is carrying a call through the retry engine.
    amqprpc::RetryPolicy retry;
    retry.max_attempts = 3;
    retry_options.idempotent = true;
    retry_options.retry = retry;
    amqprpc::HedgingPolicy hedge;
    hedge.max_attempts = 2;
    hedge.delay = std::chrono::seconds(1);
    hedge_options.idempotent = true;
    hedge_options.hedging = hedge;
  }
  amqprpc::Client& client;
  std::string queue;
  std::string body;
  CallKind kind;
  JsonEcho json_echo;
  ProtoEcho proto_echo;
  amqprpc::CallOptions method_options;
  amqprpc::CallOptions retry_options;
  amqprpc::CallOptions hedge_options;
  Clock::time_point measure_from, end;
  std::uint64_t total = 0, limit = UINT64_MAX;
  bench::RunResult result;
  Clock::time_point first_measured{};
  Clock::time_point last_measured{};
  std::mutex mutex;
  std::condition_variable cv;
  int in_flight = 0;
  std::function<void(std::uint64_t)> on_progress;
  bool record_latencies = true;  // off in the memory run: the samples would be what grows

  void start_one() {
    auto t0 = Clock::now();
    switch (kind) {
      case CallKind::bytes:
        client.async_call(queue, body, {}, [this, t0](amqprpc::Reply r) { done(t0, r.status); });
        return;
      case CallKind::method:
        client.async_call(queue, body, method_options,
                          [this, t0](amqprpc::Reply r) { done(t0, r.status); });
        return;
      case CallKind::retry:
      case CallKind::hedge:
        client.async_call(queue, body, kind == CallKind::retry ? retry_options : hedge_options,
                          [this, t0](amqprpc::Reply r) { done(t0, r.status); });
        return;
      case CallKind::gather:
        client.async_gather(queue, "", body, {}, [this, t0](amqprpc::GatherResult g) {
          done(t0, g.status.ok() && g.replies.size() != 1
                       ? amqprpc::Status{amqprpc::StatusCode::internal, "not one reply"}
                       : g.status);
        });
        return;
      case CallKind::json:
        amqprpc::typed_async_call<JsonEcho>(
            client, queue, "EchoJson", json_echo, {},
            std::function<void(amqprpc::Result<JsonEcho>)>(
                [this, t0](amqprpc::Result<JsonEcho> r) { done(t0, r.status()); }));
        return;
      case CallKind::proto:
        amqprpc::typed_async_call<ProtoEcho>(
            client, queue, "EchoProto", proto_echo, {},
            std::function<void(amqprpc::Result<ProtoEcho>)>(
                [this, t0](amqprpc::Result<ProtoEcho> r) { done(t0, r.status()); }));
        return;
    }
  }
  // Counts a completed call, started at t0, and records its latency when it completed inside
  // the measured window. True when another call should take its place.
  bool record(Clock::time_point t0, const amqprpc::Status& status) {
    auto now = Clock::now();
    ++total;
    if (!status.ok() && result.error.empty()) result.error = status.to_string();
    if (record_latencies && now >= measure_from && now < end) {
      if (result.latencies_us.empty()) first_measured = now;
      last_measured = now;
      result.latencies_us.push_back(std::chrono::duration<double, std::micro>(now - t0).count());
    }
    if (on_progress) on_progress(total);
    return now < end && total + static_cast<std::uint64_t>(in_flight) <= limit && status.ok();
  }
  void done(Clock::time_point t0, const amqprpc::Status& status) {
    if (record(t0, status)) {
      start_one();
      return;
    }
    std::lock_guard lock(mutex);
    if (--in_flight == 0) cv.notify_all();
  }
  void run(int concurrency) {
    in_flight = concurrency;
    for (int i = 0; i < concurrency; ++i) start_one();
    std::unique_lock lock(mutex);
    cv.wait(lock, [this] { return in_flight == 0; });
    finish();
  }
  void finish() {
    result.calls = result.latencies_us.size();
    result.seconds = std::chrono::duration<double>(last_measured - first_measured).count();
  }
};

// One stream whose window is the cell's concurrency: each item counts as a call, its latency
// the time since the item before it (what a reader waits per item).
void run_stream(AsyncRun& run, std::size_t size, int window) {
  amqprpc::CallOptions o;
  o.stream_window = static_cast<std::uint32_t>(std::clamp(window, 1, 4096));
  o.timeout = std::chrono::ceil<std::chrono::milliseconds>(run.end - Clock::now()) +
              std::chrono::seconds(30);
  auto stream = run.client.stream(run.queue, "Items", std::to_string(size), o);
  auto previous = Clock::now();
  while (auto item = stream->next()) {
    const auto arrived = previous;
    previous = Clock::now();
    if (!run.record(arrived, {})) break;
  }
  stream->cancel();
  while (stream->next()) {
  }
  const amqprpc::Status st = stream->status();
  if (!st.ok() && st.code() != amqprpc::StatusCode::cancelled && run.result.error.empty()) {
    run.result.error = st.to_string();
  }
  run.finish();
}

// One of the coroutine client's callers: awaits one call at a time until the run ends.
// A pointer, not a class-type parameter, and named arguments in the co_await: GCC 12
// miscompiles temporaries there (amqprpc/asio.hpp).
asio::awaitable<void> coroutine_caller(AsyncRun* run) {
  const amqprpc::CallOptions options;
  for (;;) {
    const auto t0 = Clock::now();
    amqprpc::Reply reply = co_await amqprpc::async_call(run->client, run->queue, run->body, options,
                                                        asio::use_awaitable);
    if (!run->record(t0, reply.status)) co_return;
  }
}

// The coroutine client: `concurrency` coroutines on one io_context, run by this thread; each
// resumes there when its reply comes (the client's I/O thread posts it).
void run_coroutines(AsyncRun& run, int concurrency) {
  asio::io_context io;
  run.in_flight = concurrency;
  for (int i = 0; i < concurrency; ++i) {
    asio::co_spawn(io, coroutine_caller(&run), [&run](std::exception_ptr e) {
      if (e && run.result.error.empty()) run.result.error = "a calling coroutine threw";
    });
  }
  io.run();  // until every caller has returned: each pending call holds work on `io`
  run.finish();
}

// The future client: this thread keeps `concurrency` futures in flight, a ring: it waits for the
// oldest, records it, and starts another. A call's latency ends when its future is waited for,
// so a reply that overtakes an older call's waits for it.
void run_futures(AsyncRun& run, int concurrency) {
  run.in_flight = concurrency;
  std::deque<std::pair<Clock::time_point, std::future<amqprpc::Reply>>> ring;
  auto start = [&] {
    const auto t0 = Clock::now();
    ring.emplace_back(t0, run.client.async_call(run.queue, run.body));
  };
  for (int i = 0; i < concurrency; ++i) start();
  while (!ring.empty()) {
    auto [t0, reply] = std::move(ring.front());
    ring.pop_front();
    if (run.record(t0, reply.get().status)) start();
  }
  run.finish();
}

int client(const std::string& impl, const std::string& url, const std::string& queue,
           int concurrency, std::size_t size, double warmup, double seconds) {
  auto broker = broker_from(url);
  double cpu0 = cpu_seconds();
  if (impl == "raw") {
    auto r = bench::raw_client(broker, queue, concurrency, size, warmup, seconds);
    // The raw client counts only measured calls; warm-up calls are about warmup/seconds more.
    std::uint64_t total =
        static_cast<std::uint64_t>(static_cast<double>(r.calls) * (warmup + seconds) / seconds);
    std::cout << summarize(r, cpu_seconds() - cpu0, total).dump() << std::endl;
    return r.error.empty() ? 0 : 1;
  }
  amqprpc::ClientOptions o;
  o.connection = broker;
  if (impl == "traced") o.interceptors.push_back(tracing_to_null());
  if (impl == "blind") o.server_check_interval = std::chrono::milliseconds::zero();
  auto c = amqprpc::Client::connect(o);
  if (!c) {
    std::cerr << "bench client: " << c.status().to_string() << "\n";
    return 1;
  }
  AsyncRun run{**c, queue, std::string(size, 'x'), call_kind(impl)};
  auto start = Clock::now();
  run.measure_from =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup));
  run.end = run.measure_from +
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  if (impl == "coro") {
    run_coroutines(run, concurrency);
  } else if (impl == "stream") {
    run_stream(run, size, concurrency);
  } else if (impl == "future") {
    run_futures(run, concurrency);
  } else {
    run.run(concurrency);
  }
  std::cout << summarize(run.result, cpu_seconds() - cpu0, run.total).dump() << std::endl;
  return run.result.error.empty() ? 0 : 1;
}

// 1,000,000 calls (by default) at the given concurrency; RSS sampled every tenth of the way.
int long_run(const std::string& url, const std::string& queue, std::uint64_t calls,
             int concurrency) {
  amqprpc::ClientOptions o;
  o.connection = broker_from(url);
  auto c = amqprpc::Client::connect(o);
  if (!c) {
    std::cerr << "bench long: " << c.status().to_string() << "\n";
    return 1;
  }
  AsyncRun run{**c, queue, std::string(16, 'x')};
  run.measure_from = Clock::now();
  run.end = Clock::time_point::max();
  run.limit = calls;
  run.record_latencies = false;
  json samples = json::array();
  std::uint64_t step = std::max<std::uint64_t>(calls / 10, 1);
  run.on_progress = [&](std::uint64_t done) {
    if (done % step == 0) samples.push_back({{"calls", done}, {"rss_kb", current_rss_kb()}});
  };
  auto t0 = Clock::now();
  run.run(concurrency);
  json j;
  j["calls"] = run.total;
  j["seconds"] = std::chrono::duration<double>(Clock::now() - t0).count();
  j["samples"] = samples;
  j["late_replies"] = (*c)->stats().late_replies;
  if (!run.result.error.empty()) j["error"] = run.result.error;
  std::cout << j.dump() << std::endl;
  return run.result.error.empty() ? 0 : 1;
}

// ---- the orchestrator ----

struct Child {
  pid_t pid = -1;
  int out = -1;
};

Child spawn(const std::vector<std::string>& args, bool capture, bool quiet = false) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  int pipefd[2] = {-1, -1};
  if (capture) {
    if (pipe(pipefd) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  } else if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  }
  Child c;
  if (posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) {
    throw std::runtime_error("cannot start " + args[0]);
  }
  posix_spawn_file_actions_destroy(&fa);
  if (capture) {
    close(pipefd[1]);
    c.out = pipefd[0];
  }
  return c;
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

void stop_child(Child& c) {
  if (c.pid <= 0) return;
  kill(c.pid, SIGTERM);
  int status;
  waitpid(c.pid, &status, 0);
  c.pid = -1;
}

// Waits until a queue exists (its server has declared it), by calling through it.
bool wait_for_queue(const std::string& url, const std::string& queue) {
  amqprpc::ClientOptions o;
  o.connection = broker_from(url);
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

// The key of an implementation in the JSON report: the server mode, or for a method client, the
// kind of call.
std::string mode_key(const std::string& server, const std::string& client) {
  return server.empty() ? client : server;
}

std::string fmt(double v, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"amqp-rpc benchmark: raw rabbitmq-c vs amqp-rpc vs the seed's pika client"};
  app.require_subcommand(0, 1);
  std::string url;
  tools::add_url_option(app, url);

  double seconds = 2, warmup = 0.5;
  std::vector<int> concurrency{1, 16, 256};
  std::vector<std::size_t> sizes{16, 4096};
  std::uint64_t long_calls = 1'000'000;
  int pika_calls = 2000;
  int repeat = 3;
  // Installed: the seed's programs are in ../share/amqprpc/seed; in the build tree, the source's.
  const std::string exe = tools::executable_path(argv[0]);
  std::string seed_dir = AMQPRPC_SEED_DIR;
  {
    std::string dir = exe.substr(0, exe.find_last_of('/')) + "/../share/amqprpc/seed";
    if (access((dir + "/seed_rpc_client.py").c_str(), R_OK) == 0) seed_dir = dir;
  }
  std::string out_file;
  app.add_option("--seconds", seconds, "measured seconds per cell")->capture_default_str();
  app.add_option("--warmup", warmup, "unmeasured seconds before each cell")->capture_default_str();
  app.add_option("--concurrency", concurrency, "calls in flight")->capture_default_str();
  app.add_option("--sizes", sizes, "body sizes in bytes")->capture_default_str();
  app.add_option("--repeat", repeat, "runs per cell and implementation; the median is shown")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--long-calls", long_calls, "calls in the memory run (0 skips it)")
      ->capture_default_str();
  app.add_option("--pika-calls", pika_calls, "sequential calls of the seed's pika client (0 skips)")
      ->capture_default_str();
  app.add_option("--seed-dir", seed_dir, "where seed_rpc_client.py and seed_rpc_server.py are");
  app.add_option("--out", out_file, "also write the Markdown report to this file");

  std::string impl, queue;
  int conc = 1;
  std::size_t size = 16;
  auto* serve_cmd = app.add_subcommand("serve", "(internal) run an echo server")->group("");
  serve_cmd->add_option("impl", impl)->required();
  serve_cmd->add_option("queue", queue)->required();
  auto* client_cmd = app.add_subcommand("client", "(internal) run one measured client")->group("");
  client_cmd->add_option("impl", impl)->required();
  client_cmd->add_option("queue", queue)->required();
  client_cmd->add_option("concurrency", conc)->required();
  client_cmd->add_option("size", size)->required();
  auto* long_cmd = app.add_subcommand("long", "(internal) the memory run")->group("");
  long_cmd->add_option("queue", queue)->required();
  long_cmd->add_option("concurrency", conc)->required();
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;
  if (*serve_cmd) return serve(impl, url, queue);
  if (*client_cmd) return client(impl, url, queue, conc, size, warmup, seconds);
  if (*long_cmd) return long_run(url, queue, long_calls, conc);

  // Orchestrate.
  const std::string common_url = "--url=" + url;
  struct Impl {
    std::string name;    // in the table
    std::string server;  // serve argument
    std::string client;  // client argument
    std::string queue;
    Child child;
  };
  const std::string suffix = std::to_string(getpid());
  // The typed ones, the coroutine client and the future client call the worker-thread server:
  // compare them with its plain calls from the callback client.
  const std::string worker_queue = "bench-amqprpc-" + suffix;
  std::vector<Impl> impls = {
      {"raw rabbitmq-c", "raw", "raw", "bench-raw-" + suffix, {}},
      {"amqp-rpc (1 worker thread)", "amqprpc", "bytes", worker_queue, {}},
      {"amqp-rpc (inline handler)", "amqprpc-inline", "bytes", "bench-inline-" + suffix, {}},
      {"amqp-rpc coroutine handler", "amqprpc-coro", "bytes", "bench-coro-" + suffix, {}},
      {"amqp-rpc raw-bytes method (1 worker)", "", "method", worker_queue, {}},
      {"amqp-rpc typed JSON method (1 worker)", "", "json", worker_queue, {}},
      {"amqp-rpc typed protobuf method (1 worker)", "", "proto", worker_queue, {}},
      {"amqp-rpc coroutine client (1 worker server)", "", "coro", worker_queue, {}},
      {"amqp-rpc future client (1 worker server)", "", "future", worker_queue, {}},
      {"amqp-rpc, fail-fast check off (1 worker server)", "", "blind", worker_queue, {}},
      {"amqp-rpc gather, 1 instance (1 worker server)", "", "gather", worker_queue, {}},
      {"amqp-rpc stream items, window = in flight (1 worker server)",
       "",
       "stream",
       worker_queue,
       {}},
      {"amqp-rpc idempotent, retry policy set, never retried (1 worker)",
       "",
       "retry",
       worker_queue,
       {}},
      {"amqp-rpc idempotent, hedging policy set, never hedged (1 worker)",
       "",
       "hedge",
       worker_queue,
       {}},
      {"amqp-rpc, tracing on (spans to JSON lines, 1 worker)",
       "amqprpc-traced",
       "traced",
       "bench-traced-" + suffix,
       {}},
  };
  bool up = true;
  for (auto& impl : impls) {
    if (!impl.server.empty())
      impl.child = spawn({exe, common_url, "serve", impl.server, impl.queue}, false);
  }
  for (auto& impl : impls) up = up && wait_for_queue(url, impl.queue);
  auto stop_servers = [&] {
    for (auto& impl : impls) stop_child(impl.child);
  };
  if (!up) {
    std::cerr << "bench: the echo servers did not come up\n";
    stop_servers();
    return 1;
  }

  std::ostringstream md;
  md << "| implementation | body | in flight | calls/s | p50 µs | p99 µs | max µs | client CPU "
        "µs/call | "
        "client peak RSS MiB | calls/s vs raw | p50 vs raw |\n"
     << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  json all = json::array();
  double best_rpc = 0;
  const bool live = isatty(STDERR_FILENO) != 0;
  const std::size_t cells = sizes.size() * concurrency.size();
  std::size_t cell_number = 0;
  std::vector<std::string> findings;
  for (std::size_t sz : sizes) {
    for (int c : concurrency) {
      // Runs alternate between implementations, `repeat` times; each implementation's median
      // run (by calls/s) stands for it, so drift and noise on a shared machine hit all alike.
      std::vector<std::vector<json>> runs(impls.size());
      ++cell_number;
      for (int r = 0; r < repeat; ++r) {
        for (std::size_t i = 0; i < impls.size(); ++i) {
          if (live) {  // a live progress line on a terminal
            std::cerr << "\rbench: cell " << cell_number << "/" << cells << " (" << sz << " B, "
                      << c << " in flight): " << mode_key(impls[i].server, impls[i].client)
                      << " run " << (r + 1) << "/" << repeat << "          " << std::flush;
          }
          runs[i].push_back(run_json({exe, common_url, "--seconds=" + fmt(seconds, 3),
                                      "--warmup=" + fmt(warmup, 3), "client", impls[i].client,
                                      impls[i].queue, std::to_string(c), std::to_string(sz)}));
        }
      }
      std::vector<json> median(impls.size());
      for (std::size_t i = 0; i < impls.size(); ++i) {
        auto& v = runs[i];
        std::sort(v.begin(), v.end(), [](const json& a, const json& b) {
          return a.value("calls_per_s", 0.0) < b.value("calls_per_s", 0.0);
        });
        median[i] = v[v.size() / 2];
        for (const auto& run : v) {
          if (run.contains("error"))
            findings.push_back(impls[i].name + ": " + run["error"].get<std::string>());
        }
      }
      const json& raw = median[0];
      json cell{{"size", sz}, {"concurrency", c}};
      std::cerr << (live ? "\r" : "") << "bench: body " << sz << " B, " << c << " in flight:";
      for (std::size_t i = 0; i < impls.size(); ++i) {
        const json& j = median[i];
        double ratio = raw.value("calls_per_s", 0.0) > 0
                           ? j.value("calls_per_s", 0.0) / raw.value("calls_per_s", 0.0)
                           : 0;
        double p50_ratio =
            raw.value("p50_us", 0.0) > 0 ? j.value("p50_us", 0.0) / raw.value("p50_us", 0.0) : 0;
        if (i > 0) best_rpc = std::max(best_rpc, j.value("calls_per_s", 0.0));
        md << "| " << impls[i].name << " | " << sz << " B | " << c << " | "
           << fmt(j.value("calls_per_s", 0.0)) << " | " << fmt(j.value("p50_us", 0.0)) << " | "
           << fmt(j.value("p99_us", 0.0)) << " | " << fmt(j.value("max_us", 0.0)) << " | "
           << fmt(j.value("cpu_us_per_call", 0.0), 1) << " | "
           << fmt(j.value("peak_rss_kb", 0) / 1024.0, 1) << " | " << fmt(ratio, 2) << " | "
           << fmt(p50_ratio, 2) << " |\n";
        const std::string key = mode_key(impls[i].server, impls[i].client);
        cell[key] = j;
        cell[key + "_ratio_calls_per_s"] = ratio;
        cell[key + "_ratio_p50"] = p50_ratio;
        std::cerr << " " << key << " " << fmt(j.value("calls_per_s", 0.0)) << "/s";
      }
      std::cerr << "\n";
      all.push_back(cell);
    }
  }

  json pika;
  if (pika_calls > 0) {
    std::cerr << "bench: the seed's pika client and server, " << pika_calls
              << " sequential calls ... " << std::flush;
    Child seed_server = spawn({"/usr/bin/python3", seed_dir + "/seed_rpc_server.py"}, false, true);
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // pika connects and declares
    pika = run_json({"/usr/bin/python3", seed_dir + "/seed_rpc_client.py", "--bench",
                     std::to_string(pika_calls), "--n", "10"});
    stop_child(seed_server);
    std::cerr << fmt(pika.value("calls_per_s", 0.0)) << " calls/s\n";
    md << "| seed (pika 1.x, sequential) | 2 B | 1 | " << fmt(pika.value("calls_per_s", 0.0))
       << " | " << fmt(pika.value("p50_us", 0.0)) << " | " << fmt(pika.value("p99_us", 0.0))
       << " | " << fmt(pika.value("max_us", 0.0)) << " | | | | |\n";
  }

  json long_result;
  if (long_calls > 0) {
    std::cerr << "bench: memory run, " << long_calls << " calls at 256 in flight ... "
              << std::flush;
    long_result = run_json({exe, common_url, "--long-calls=" + std::to_string(long_calls), "long",
                            impls[1].queue, "256"});
    std::cerr << fmt(long_result.value("seconds", 0.0), 1) << " s\n";
  }
  stop_servers();

  std::ostringstream report;
  report << md.str() << "\n";
  if (!pika.is_null() && pika.value("calls_per_s", 0.0) > 0) {
    double best_raw = 0;
    for (const auto& cell : all)
      best_raw = std::max(best_raw, cell["raw"].value("calls_per_s", 0.0));
    report
        << "amqp-rpc's best calls/s is " << fmt(best_rpc / pika.value("calls_per_s", 1.0), 1)
        << "x the seed's pika client (target: at least 20x); the raw rabbitmq-c baseline's best is "
        << fmt(best_raw / pika.value("calls_per_s", 1.0), 1) << "x.\n";
  }
  for (const auto& cell : all) {
    if (cell["size"] != 16) continue;
    for (const char* mode : {"amqprpc", "amqprpc-inline"}) {
      std::string name = std::string(mode) == "amqprpc" ? "1 worker thread" : "inline handler";
      if (cell["concurrency"] == 256) {
        report << "At 256 in flight (16 B), amqp-rpc (" << name << ") makes "
               << fmt(100 * cell[std::string(mode) + "_ratio_calls_per_s"].get<double>())
               << "% of the raw baseline's calls/s (target: at least 95%).\n";
      }
      if (cell["concurrency"] == 1) {
        report << "At 1 in flight (16 B), amqp-rpc (" << name << ")'s p50 latency is "
               << fmt(cell[std::string(mode) + "_ratio_p50"].get<double>(), 2)
               << "x the raw baseline's (target: at most 1.10x).\n";
      }
    }
  }
  if (!long_result.is_null() && long_result.contains("samples")) {
    report << "\nMemory run: " << long_result.value("calls", 0) << " calls at 256 in flight in "
           << fmt(long_result.value("seconds", 0.0), 1) << " s; client RSS (MiB) after each tenth:";
    for (const auto& s : long_result["samples"])
      report << " " << fmt(s["rss_kb"].get<long>() / 1024.0, 1);
    report << "\n";
  }
  // Rows against the same server's plain calls, same run: what each adds per call.
  auto against_plain = [&](const std::string& what, std::initializer_list<const char*> keys) {
    for (const auto& cell : all) {
      if (cell["size"] != 16 || (cell["concurrency"] != 1 && cell["concurrency"] != 256)) continue;
      const json& plain = cell["amqprpc"];
      report << "\nAt " << cell["concurrency"].get<int>() << " in flight (16 B), " << what
             << "against plain calls to the same server (1 worker):";
      for (const char* key : keys) {
        const json& t = cell[key];
        auto ratio = [&](const char* field) {
          double base = plain.value(field, 0.0);
          return base > 0 ? t.value(field, 0.0) / base : 0.0;
        };
        const double extra_cpu =
            t.value("cpu_us_per_call", 0.0) - plain.value("cpu_us_per_call", 0.0);
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
  for (const auto& cell : all) {
    if (cell["size"] != 16 || (cell["concurrency"] != 1 && cell["concurrency"] != 256)) continue;
    auto ratios = [&](const char* key, const char* base_key) {
      const json& t = cell[key];
      const json& base = cell[base_key];
      auto ratio = [&](const char* field) {
        double b = base.value(field, 0.0);
        return b > 0 ? t.value(field, 0.0) / b : 0.0;
      };
      return "calls/s " + fmt(ratio("calls_per_s"), 2) + "x, p50 " + fmt(ratio("p50_us"), 2) + "x";
    };
    auto cpu = [&](const char* key) {
      return fmt(cell[key].value("cpu_us_per_call", 0.0), 1) + " µs/call";
    };
    const std::string at =
        "At " + std::to_string(cell["concurrency"].get<int>()) + " in flight (16 B), ";
    report << "\n"
           << at << "the coroutine client against the callback client (same 1-worker server): "
           << ratios("coro", "amqprpc")
           << "; against the future client: " << ratios("coro", "future") << "; client CPU "
           << cpu("coro") << " (callback " << cpu("amqprpc") << ", future " << cpu("future")
           << ").\n";
    report << "\n"
           << at << "the coroutine handler against the inline handler: "
           << ratios("amqprpc-coro", "amqprpc-inline")
           << "; against the 1 worker thread: " << ratios("amqprpc-coro", "amqprpc") << ".\n";
    report << "\n"
           << at << "tracing on against off (1 worker): " << ratios("amqprpc-traced", "amqprpc")
           << "; client CPU " << cpu("amqprpc-traced") << " on, " << cpu("amqprpc") << " off.\n";
    report << "\n"
           << at << "a gather (one instance: count, publish to its exchange, collect) against "
           << "a call to the same server: " << ratios("gather", "amqprpc")
           << "; a stream's items (window " << cell["concurrency"].get<int>()
           << ") against calls: " << ratios("stream", "amqprpc") << ".\n";
    report << "\n"
           << at << "the fail-fast check (a server count per queue, refreshed in the background) "
           << "on against off: " << ratios("amqprpc", "blind") << "; client CPU " << cpu("amqprpc")
           << " on, " << cpu("blind") << " off.\n";
  }
  // Retry and hedging policies that never trigger: what carrying a call through them costs.
  against_plain("idempotent calls under a policy that never triggers, ", {"retry", "hedge"});
  for (const auto& f : findings) report << "\nerror during the run: " << f << "\n";
  std::cout << report.str();
  if (!out_file.empty()) {
    std::ofstream(out_file) << report.str() << "\n<!-- raw data: "
                            << json{{"cells", all}, {"pika", pika}, {"long", long_result}}.dump()
                            << " -->\n";
  }
  return findings.empty() ? 0 : 1;
}
