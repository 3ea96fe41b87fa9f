// amqp-rpc: the command line for AMQP RPC, like grpcurl for gRPC.
//   amqp-rpc call QUEUE [BODY]      call a server, print the reply (or --json)
//   amqp-rpc serve --queue Q        serve with a built-in handler (fib, echo)
//   amqp-rpc bench [OPTIONS]        the benchmark (raw rabbitmq-c vs amqp-rpc vs the seed)
// Exit codes: 0 ok, 1 error reply from the server, 2 usage, 3 timeout, 4 broker or server
// unreachable (cannot connect, login refused, no route, connection lost).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"
#include "fib.hpp"

namespace {

using json = nlohmann::json;
namespace tools = amqprpc::tools;
using tools::kOk;
using tools::kUnreachable;
using tools::kUsage;

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json histogram_json(const amqprpc::LatencyHistogram& h) {
  return {{"count", h.count()},
          {"mean_us", std::round(h.mean_us())},
          {"p50_us", h.percentile(50).count()},
          {"p99_us", h.percentile(99).count()},
          {"max_us", h.max().count()}};
}

json errors_json(const std::map<amqprpc::StatusCode, std::uint64_t>& errors) {
  json j = json::object();
  for (const auto& [code, n] : errors) j[std::string(amqprpc::to_string(code))] = n;
  return j;
}

struct CallArgs {
  std::string url;
  std::string queue;
  std::string body;
  bool body_given = false;
  bool from_stdin = false;
  bool as_json = false;
  double timeout_s = 30;
  std::vector<std::string> headers;
  std::string content_type;
  std::string reply_mode = "direct";
};

int run_call(const CallArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc call", a.url);
  if (!conn) return kUsage;
  if (a.from_stdin && a.body_given) {
    std::cerr << "amqp-rpc call: give the body as an argument or with --stdin, not both\n";
    return kUsage;
  }
  if (!std::isfinite(a.timeout_s)) {  // CLI11's range check lets NaN through
    std::cerr << "amqp-rpc call: --timeout must be a number of seconds, got " << a.timeout_s
              << "\n";
    return kUsage;
  }
  amqprpc::CallOptions call;
  call.timeout = std::chrono::milliseconds(static_cast<long long>(std::ceil(a.timeout_s * 1000)));
  call.content_type = a.content_type;
  for (const auto& h : a.headers) {
    auto eq = h.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "amqp-rpc call: --header wants NAME=VALUE, got '" << h << "'\n";
      return kUsage;
    }
    call.headers[h.substr(0, eq)] = h.substr(eq + 1);
  }
  std::string body = a.body;
  if (a.from_stdin) body.assign(std::istreambuf_iterator<char>(std::cin), {});

  amqprpc::ClientOptions options;
  options.connection = *conn;
  options.reconnect.enabled = false;  // one call: report, do not retry
  options.reply_mode = a.reply_mode == "direct" ? amqprpc::ReplyMode::direct_reply_to
                                                : amqprpc::ReplyMode::exclusive_queue;
  options.logger = [](amqprpc::LogLevel, std::string_view) {};  // errors are reported below
  auto started = std::chrono::steady_clock::now();
  auto client = amqprpc::Client::connect(options);
  auto connected = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  if (!client) {
    if (a.as_json) {
      std::cout << dump({{"status", amqprpc::to_string(client.status().code())},
                         {"message", client.status().message()},
                         {"url", conn->to_string()},
                         {"queue", a.queue},
                         {"timing_ms", {{"connect", ms(connected - started)}}}})
                << "\n";
    }
    std::cerr << "amqp-rpc call: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }
  amqprpc::Reply reply = (*client)->try_call(a.queue, body, call);
  auto done = std::chrono::steady_clock::now();
  if (a.as_json) {
    auto stats = (*client)->stats();
    json j{{"status", amqprpc::to_string(reply.status.code())},
           {"queue", a.queue},
           {"url", conn->to_string()},
           {"headers", reply.headers},
           {"content_type", reply.content_type},
           {"timing_ms", {{"connect", ms(connected - started)}, {"call", ms(done - connected)}}},
           {"metrics",
            {{"calls", stats.calls},
             {"replies", stats.replies},
             {"timeouts", stats.timeouts},
             {"late_replies", stats.late_replies},
             {"reconnects", stats.reconnects},
             {"errors", errors_json(stats.errors)},
             {"latency", histogram_json(stats.latency)}}}};
    if (reply.status.ok()) {
      j["body"] = reply.body;
    } else {
      j["message"] = reply.status.message();
    }
    std::cout << dump(j) << "\n";
  } else if (reply.status.ok()) {
    std::cout << reply.body;
    if (isatty(STDOUT_FILENO) || reply.body.empty() || reply.body.back() != '\n') std::cout << "\n";
  }
  const int code = tools::exit_code_for_reply(reply);
  if (code == kUsage) {
    std::cerr << "amqp-rpc call: " << reply.status.message() << " (nothing was sent)\n";
  } else if (!reply.status.ok()) {
    std::cerr << "amqp-rpc call: " << reply.status.to_string() << "\n";
  }
  return code;
}

struct ServeArgs {
  std::string url;
  amqprpc::ServerOptions options;
  std::string handler = "echo";
  std::uint64_t fib_limit = fib::kDefaultLimit;
  bool stats = false;
  double stats_interval_s = 5;
  bool quorum = false;
  bool quiet = false;
};

json server_stats_json(const amqprpc::Server::Stats& s) {
  return {{"received", s.received},
          {"replied_ok", s.replied_ok},
          {"replied_error", s.replied_error},
          {"rejected", s.rejected},
          {"expired", s.expired},
          {"oversized", s.oversized},
          {"redelivered", s.redelivered},
          {"dead_lettered", s.dead_lettered},
          {"requeued", s.requeued},
          {"reconnects", s.reconnects},
          {"errors", errors_json(s.errors)},
          {"handler_latency", histogram_json(s.handler_latency)}};
}

int run_serve(ServeArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc serve", a.url);
  if (!conn) return kUsage;
  a.options.connection = *conn;
  if (a.quorum) a.options.queue_type = amqprpc::QueueType::quorum;
  amqprpc::Handler handler;
  if (a.handler == "fib") {
    handler = [limit = a.fib_limit](const amqprpc::Request& r) {
      return fib::handle(r.body, limit);
    };
  } else {
    handler = [](const amqprpc::Request& r) {
      amqprpc::Reply reply = amqprpc::Reply::ok(r.body);
      reply.content_type = r.content_type;
      reply.headers = r.headers;
      reply.headers.erase("x-rpc-deadline");
      return reply;
    };
  }
  tools::block_stop_signals();

  if (!a.quiet) {
    a.options.logger = [](amqprpc::LogLevel level, std::string_view line) {
      if (level >= amqprpc::LogLevel::info) {
        std::fprintf(stderr, "amqp-rpc serve: %.*s\n", static_cast<int>(line.size()), line.data());
      }
    };
  }
  auto server = amqprpc::Server::start(a.options, handler);
  if (!server) {
    std::cerr << "amqp-rpc serve: " << server.status().to_string() << "\n";
    return tools::exit_code_for_connect(server.status());
  }
  std::fprintf(stderr, "amqp-rpc serve: serving '%s' (%s handler) at %s; Ctrl-C stops\n",
               a.options.queue.c_str(), a.handler.c_str(),
               a.options.connection.to_string().c_str());
  std::atomic<bool> done{false};
  std::thread reporter;
  if (a.stats) {
    reporter = std::thread([&] {
      auto interval = std::chrono::milliseconds(static_cast<long long>(a.stats_interval_s * 1000));
      while (!done) {
        for (auto slept = std::chrono::milliseconds(0); slept < interval && !done;
             slept += std::chrono::milliseconds(50)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (done) break;
        auto s = (*server)->stats();
        std::fprintf(stderr,
                     "amqp-rpc serve: stats: received %llu, ok %llu, errors %llu, expired %llu, "
                     "handler p50 %lld us p99 %lld us\n",
                     static_cast<unsigned long long>(s.received),
                     static_cast<unsigned long long>(s.replied_ok),
                     static_cast<unsigned long long>(s.replied_error),
                     static_cast<unsigned long long>(s.expired),
                     static_cast<long long>(s.handler_latency.percentile(50).count()),
                     static_cast<long long>(s.handler_latency.percentile(99).count()));
      }
    });
  }
  amqprpc::Status ended = tools::wait_for_stop(**server);
  done = true;
  if (reporter.joinable()) reporter.join();
  if (a.stats) std::cout << dump({{"stats", server_stats_json((*server)->stats())}}) << "\n";
  if (!ended.ok()) {
    std::cerr << "amqp-rpc serve: stopped: " << ended.to_string() << "\n";
    return kUnreachable;
  }
  return kOk;
}

int run_bench(const std::vector<std::string>& args, const char* argv0) {
  // The benchmark is its own program (it starts copies of itself as servers and clients);
  // it lives next to this one.
  std::string self = tools::executable_path(argv0);
  std::string dir = self.substr(0, self.find_last_of('/') + 1);
  // Installed side by side; in a build tree, build/tools/amqp-rpc/ beside build/bench/.
  std::vector<std::string> candidates{dir + "amqp-rpc-bench", dir + "../../bench/amqp-rpc-bench"};
  for (const auto& exe : candidates) {
    if (access(exe.c_str(), X_OK) != 0) continue;
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(exe.c_str(), argv.data());
  }
  std::cerr << "amqp-rpc bench: cannot find amqp-rpc-bench next to " << self << "\n";
  return kUsage;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"amqp-rpc: remote procedure calls over RabbitMQ (AMQP 0-9-1)"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 error reply from the server, 2 usage, 3 timeout, 4 broker or server "
      "unreachable.\nThe broker URL comes from --url, else $AMQP_URL, else amqp://localhost.");

  CallArgs call;
  auto* call_cmd = app.add_subcommand("call", "call QUEUE with BODY and print the reply");
  call_cmd->add_option("queue", call.queue, "queue the server consumes")->required();
  call_cmd->add_option("body", call.body, "request body (or --stdin)")
      ->each([&](const std::string&) { call.body_given = true; });
  tools::add_url_option(*call_cmd, call.url, "broker URI (amqp:// or amqps://)");
  call_cmd->add_option("--timeout", call.timeout_s, "seconds to wait for the reply")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));
  call_cmd->add_option("-H,--header", call.headers, "request header NAME=VALUE (repeatable)")
      ->allow_extra_args(false);
  call_cmd->add_flag("--stdin", call.from_stdin, "read the body from standard input");
  call_cmd->add_flag("--json", call.as_json,
                     "print status, headers, body, timing and metrics as JSON");
  call_cmd->add_option("--content-type", call.content_type, "request content type");
  call_cmd
      ->add_option("--reply-mode", call.reply_mode, "direct (amq.rabbitmq.reply-to) or exclusive")
      ->capture_default_str()
      ->check(CLI::IsMember({"direct", "exclusive"}));

  ServeArgs serve;
  auto* serve_cmd = app.add_subcommand("serve", "serve a queue with a built-in handler");
  serve_cmd->add_option("--queue", serve.options.queue, "queue to serve")->capture_default_str();
  serve_cmd->add_option("--handler", serve.handler, "fib or echo")
      ->capture_default_str()
      ->check(CLI::IsMember({"fib", "echo"}));
  tools::add_url_option(*serve_cmd, serve.url, "broker URI (amqp:// or amqps://)");
  serve_cmd->add_option("--workers", serve.options.workers, "handler threads (0: I/O thread)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  serve_cmd->add_option("--prefetch", serve.options.prefetch, "requests held unacked at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  serve_cmd->add_option("--fib-limit", serve.fib_limit, "largest n the fib handler serves")
      ->capture_default_str();
  serve_cmd->add_flag("--durable", serve.options.durable, "declare the queue durable");
  serve_cmd->add_flag("--quorum", serve.quorum, "declare a quorum queue (replicated)");
  serve_cmd->add_flag("--stats", serve.stats, "print stats periodically and as JSON at exit");
  serve_cmd->add_option("--stats-interval", serve.stats_interval_s, "seconds between stats lines")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  serve_cmd->add_flag("-q,--quiet", serve.quiet, "no connection log lines");

  std::vector<std::string> bench_args;
  auto* bench_cmd = app.add_subcommand(
      "bench", "benchmark raw rabbitmq-c, amqp-rpc and the seed's pika client in one run");
  bench_cmd->prefix_command();  // everything after `bench` goes to amqp-rpc-bench (try --help)
  bench_cmd->allow_extras();

  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;
  if (*call_cmd) return run_call(call);
  if (*serve_cmd) return run_serve(serve);
  if (*bench_cmd) return run_bench(bench_cmd->remaining(), argv[0]);
  return kUsage;
}
