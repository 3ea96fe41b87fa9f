// A server process for tests that need a real process to kill: echoes the body (after an
// optional delay), crashes (abort) on a chosen body, counts what it served, stops gracefully on
// SIGTERM. Prints "ready" when consuming and "served N" when it exits.
//   amqprpc_test_server --queue Q [--name N] [--delay-ms D] [--crash-on BODY] [--workers W]
//                       [--prefetch P] [--max-attempts A] [--typed 1]
// --typed 1 serves the service amqprpc.test.Echo (tests/proto/test_messages.proto) on Q, for the
// command line's describe, health and typed calls; the echo above stays its default handler:
//   Say    EchoRequest -> EchoReply: text back, and `repeat` (at least 1) copies of it in parts
//   Check  EchoRequest -> EchoReply: invalid_argument with an ErrorInfo detail when text is
//          empty, else like Say
//   Flip   JSON -> JSON: an array or a string reversed, anything else as it came
//   Slow   bytes: prints "slow started" (flushed) then sleeps --delay-ms and echoes the body
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "amqprpc/json.hpp"
#include "amqprpc/protobuf.hpp"
#include "amqprpc/server.hpp"
#include "common/common.hpp"
#include "proto/test_messages.pb.h"

namespace tools = amqprpc::tools;

namespace {

amqprpc::Service typed_service(const std::string& queue, amqprpc::Handler echo, int delay_ms) {
  namespace test = amqprpc::test;
  auto say = [](const test::EchoRequest& r) {
    test::EchoReply reply;
    reply.set_text(r.text());
    for (int i = 0; i < std::clamp(r.repeat(), 1, 100); ++i) reply.add_parts(r.text());
    return reply;
  };
  amqprpc::Service s(queue, "amqprpc.test.Echo");
  s.default_handler(std::move(echo));
  s.method<test::EchoRequest, test::EchoReply>("Say", say);
  s.method<test::EchoRequest, test::EchoReply>(
      "Check", [say](const test::EchoRequest& r) -> amqprpc::Result<test::EchoReply> {
        if (r.text().empty()) {
          test::ErrorInfo info;
          info.set_field("text");
          info.set_reason("empty");
          return amqprpc::error_with_detail(amqprpc::StatusCode::invalid_argument, "text is empty",
                                            info);
        }
        return say(r);
      });
  s.method<nlohmann::json, nlohmann::json>("Flip", [](const nlohmann::json& j) {
    nlohmann::json out = j;
    if (out.is_array()) std::reverse(out.begin(), out.end());
    if (out.is_string()) {
      auto text = out.get<std::string>();
      std::reverse(text.begin(), text.end());
      out = text;
    }
    return out;
  });
  // A stream of the numbers 0..n-1, n the body.
  s.stream_method("Count", [](const amqprpc::Request& r, amqprpc::StreamWriter& w) {
    long n = 0;
    try {
      n = std::stol(r.body);
    } catch (const std::exception&) {
      return amqprpc::Status{amqprpc::StatusCode::invalid_argument, "not a number: " + r.body};
    }
    for (long i = 0; i < n; ++i) {
      if (!w.write(std::to_string(i))) break;
    }
    return amqprpc::Status{};
  });
  s.method("Slow", [delay_ms](const amqprpc::Request& r) {
    std::printf("slow started\n");
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    return amqprpc::Reply::ok(r.body);
  });
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  amqprpc::ServerOptions options;
  std::string name = "server";
  std::string crash_on;
  int delay_ms = 0;
  bool typed = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--queue") {
      options.queue = value;
    } else if (flag == "--name") {
      name = value;
    } else if (flag == "--delay-ms") {
      delay_ms = std::atoi(value.c_str());
    } else if (flag == "--crash-on") {
      crash_on = value;
    } else if (flag == "--workers") {
      options.workers = static_cast<std::size_t>(std::atoi(value.c_str()));
    } else if (flag == "--prefetch") {
      options.prefetch = static_cast<std::uint16_t>(std::atoi(value.c_str()));
    } else if (flag == "--max-attempts") {
      options.max_attempts = std::atoi(value.c_str());
    } else if (flag == "--typed") {
      typed = value == "1";
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return tools::kUsage;
    }
  }
  auto conn = tools::parse_broker_url("amqprpc_test_server", tools::default_url());
  if (!conn) return tools::kUsage;
  options.connection = *conn;

  tools::block_stop_signals();

  std::atomic<int> served{0};
  amqprpc::Handler echo = [&](const amqprpc::Request& r) {
    if (!crash_on.empty() && r.body == crash_on) std::abort();
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    served++;
    amqprpc::Reply reply = amqprpc::Reply::ok(r.body);
    reply.headers["x-served-by"] = name;
    return reply;
  };
  auto server = typed
                    ? amqprpc::Server::start(options, typed_service(options.queue, echo, delay_ms))
                    : amqprpc::Server::start(options, echo);
  if (!server) {
    std::fprintf(stderr, "%s\n", server.status().to_string().c_str());
    return tools::kError;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  tools::wait_for_stop(**server);
  auto stats = (*server)->stats();
  std::printf("served %d requeued %llu\n", served.load(),
              static_cast<unsigned long long>(stats.requeued));
  std::fflush(stdout);
  return tools::kOk;
}
