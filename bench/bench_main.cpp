// amqp-rpc's benchmark: in one run, against one broker, measures
//   1. raw: an echo server and a pipelined client written directly on rabbitmq-c (the ceiling);
//   2. amqp-rpc: Server + Client (async, pipelined), same bodies and concurrency;
//   3. the peers a user would pick instead (bench/peers/: the official Java client's RpcClient
//      and RpcServer, Node's rabbitmq-client, pika as the seed has it, aio-pika), each client
//      against its own server and against the raw server;
//   4. the seed: its pika client and server (sequential), as the tutorial has them, no sleep;
//   5. amqp-rpc with methods: the same echo as a raw-bytes method (x-rpc-method dispatch), and as
//      typed JSON and protobuf methods called through typed_async_call (dispatch and codecs);
//   6. the other forms against the same servers: a coroutine client (amqprpc::async_call with
//      asio::use_awaitable), a future client, a server whose handler is a coroutine, and
//      tracing on (spans made and exported on client and server), and the fail-fast check
//      off (calls sent blind, as tutorial 6 does: what knowing that a server is there costs);
//   7. idempotent calls under a retry policy and under a hedging policy that never trigger (every
//      first attempt succeeds in time): what a policy costs a call that needs none;
// and a long run showing the client's memory stays flat. Prints a Markdown report.
// This file: the command line and the child modes (echo servers, measured clients, the memory
// run); orchestrator.cpp runs them, each measurement in a process of its own, and reads the
// CPU counters of client, server and broker around each measured window (runner.cpp).
#include <sys/resource.h>
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
#include "orchestrator.hpp"
#include "raw_baseline.hpp"

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

// Tells the orchestrator that the measured window opens ("measure") or has closed ("end"): it
// reads the CPU counters of client, server, broker and machine at these lines.
void mark(const char* what) {
  std::printf("@%s\n", what);
  std::fflush(stdout);
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
  std::atomic<bool> measure_marked{false}, end_marked{false};

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
    if (record_latencies && now >= measure_from && !measure_marked.exchange(true)) mark("measure");
    if (record_latencies && now >= end && !end_marked.exchange(true)) mark("end");
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
    auto r = bench::raw_client(broker, queue, concurrency, size, warmup, seconds, mark);
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "amqp-rpc benchmark: raw rabbitmq-c, amqp-rpc and the peers (the Java client's RpcClient "
      "and RpcServer, Node's rabbitmq-client, pika, aio-pika) in one run"};
  app.require_subcommand(0, 1);
  bench::Options o;
  tools::add_url_option(app, o.url);
  // Installed: the seed's programs are in ../share/amqprpc/seed; in the build tree, the source's.
  o.exe = tools::executable_path(argv[0]);
  o.seed_dir = AMQPRPC_SEED_DIR;
  {
    std::string dir = o.exe.substr(0, o.exe.find_last_of('/')) + "/../share/amqprpc/seed";
    if (access((dir + "/seed_rpc_client.py").c_str(), R_OK) == 0) o.seed_dir = dir;
  }
  o.peers_src = AMQPRPC_PEERS_SRC;
  o.peers_build = AMQPRPC_PEERS_BUILD;
  bool no_forms = false;
  app.add_option("--seconds", o.seconds, "measured seconds per run")->capture_default_str();
  app.add_option("--warmup", o.warmup, "unmeasured seconds before each run")->capture_default_str();
  app.add_option("--jit-warmup", o.jit_warmup,
                 "unmeasured seconds before each run of the Java and Node clients, at least "
                 "(their JIT compiles the hot paths first)")
      ->capture_default_str();
  app.add_option("--concurrency", o.concurrency, "calls in flight (the peers' table)")
      ->capture_default_str();
  app.add_option("--sizes", o.sizes, "body sizes in bytes (the peers' table)")
      ->capture_default_str();
  app.add_option("--peers", o.peers,
                 "peers to run beside amqp-rpc and raw rabbitmq-c: java, "
                 "node, pika, aio-pika, or none")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--forms-concurrency", o.forms_concurrency,
                 "calls in flight for amqp-rpc's other forms (methods, codecs, coroutines, "
                 "gathers, streams, policies, tracing)")
      ->capture_default_str();
  app.add_option("--forms-sizes", o.forms_sizes, "body sizes for amqp-rpc's other forms")
      ->capture_default_str();
  app.add_flag("--no-forms", no_forms, "skip amqp-rpc's other forms");
  app.add_option("--repeat", o.repeat, "runs per cell and implementation; the median is shown")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--broker-pid", o.broker_pid,
                 "the broker's (Erlang VM's) pid, for its CPU per call and the disturbance "
                 "filter (scripts/broker.sh pid)");
  app.add_option("--max-other-cpu", o.max_other_cpu,
                 "a run is disturbed when other work took more than this share of the "
                 "machine's CPU in its window")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-steal", o.max_steal,
                 "a run is disturbed when steal took more than this share of the machine's CPU")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--retries", o.retries, "re-runs of a disturbed run, at most")
      ->capture_default_str()
      ->check(CLI::Range(0, 20));
  app.add_option("--rerun-budget", o.rerun_budget,
                 "re-runs in the whole run, at most, as a share of the runs planned")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--long-calls", o.long_calls, "calls in the memory run (0 skips it)")
      ->capture_default_str();
  app.add_option("--pika-calls", o.pika_calls,
                 "sequential calls of the seed's pika client (0 skips)")
      ->capture_default_str();
  app.add_option("--seed-dir", o.seed_dir, "where seed_rpc_client.py and seed_rpc_server.py are");
  app.add_option("--peers-src", o.peers_src, "the peers' programs (bench/peers)")
      ->capture_default_str();
  app.add_option("--peers-build", o.peers_build,
                 "the peers' build: java/ (classes) and node/node_modules (scripts/bench.sh "
                 "makes it)")
      ->capture_default_str();
  app.add_option("--out", o.out_file, "also write the Markdown report to this file");

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
  if (*serve_cmd) return serve(impl, o.url, queue);
  if (*client_cmd) return client(impl, o.url, queue, conc, size, o.warmup, o.seconds);
  if (*long_cmd) return long_run(o.url, queue, o.long_calls, conc);
  o.forms = !no_forms;
  if (o.peers.size() == 1 && o.peers[0] == "none") o.peers.clear();
  return bench::orchestrate(o);
}
