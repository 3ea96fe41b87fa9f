// The checkout demo, in one process: shop.Prices and shop.Checkout served side by side, and a
// coroutine client asking shop.Checkout for a cart's total; shop.Checkout's coroutine handler
// asks shop.Prices for each item on the caller's behalf. It shows what travels: the caller's
// deadline (shop.Prices sees the client's, not a fresh one), one trace across all the calls
// (every span in the JSON-lines file, with its parent), and a method restricted to one user.
//
//   checkout_demo --url amqp://... --spans spans.jsonl
//
// Exit codes: 0 all shown as expected, 1 something did not hold (said on stderr), 2 usage,
// 4 broker unreachable.
#include <CLI/CLI.hpp>
#include <amqprpc/asio.hpp>
#include <amqprpc/client.hpp>
#include <amqprpc/server.hpp>
#include <amqprpc/tracing.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "checkout.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"

namespace tools = amqprpc::tools;
using namespace std::chrono_literals;

namespace {

// The client's side: a coroutine awaiting the total (named variables: GCC 12, see asio.hpp).
// A failed call throws RpcError out of the coroutine, as Asio code expects.
asio::awaitable<checkout::Total> ask_total(amqprpc::Client& client, const checkout::Cart& cart,
                                           const amqprpc::CallOptions& options) {
  const std::string method = "Total";
  amqprpc::Result<checkout::Total> total = co_await amqprpc::async_typed_call<checkout::Total>(
      client, checkout::kCheckoutQueue, method, cart, options, asio::use_awaitable);
  if (!total.ok()) throw amqprpc::RpcError(total.status());
  co_return *total;
}

int fail(const std::string& why) {
  std::cerr << "checkout_demo: " << why << "\n";
  return tools::kError;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"checkout_demo: a coroutine handler calling another service, with tracing"};
  std::string url;
  std::string spans_path = "spans.jsonl";
  tools::add_url_option(app, url);
  app.add_option("--spans", spans_path, "where spans go, as JSON lines")->capture_default_str();
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;
  auto conn = tools::parse_broker_url("checkout_demo", url);
  if (!conn) return tools::kUsage;

  // One tracing interceptor for every client and server: spans as JSON lines.
  std::remove(spans_path.c_str());
  auto exporter = std::make_shared<amqprpc::JsonLinesExporter>(spans_path);
  if (!exporter->ok().ok()) return fail(exporter->ok().to_string());
  auto tracing = std::make_shared<amqprpc::TracingInterceptor>(exporter);

  amqprpc::ClientOptions co;
  co.connection = *conn;
  co.interceptors = {tracing};
  co.default_timeout = 60s;  // a fresh call's deadline: not what a nested call gets
  auto prices_client = amqprpc::Client::connect(co);
  auto client = amqprpc::Client::connect(co);
  if (!prices_client || !client) {
    auto st = !prices_client ? prices_client.status() : client.status();
    std::cerr << "checkout_demo: " << st.to_string() << "\n";
    return tools::exit_code_for_connect(st);
  }

  // shop.Prices, noting the deadline each request arrived with.
  std::mutex mutex;
  std::optional<std::chrono::milliseconds> prices_saw_left;
  std::string prices_saw_deadline;
  amqprpc::ServerOptions so;
  so.connection = *conn;
  so.interceptors = {tracing};
  auto prices = amqprpc::Server::start(so, checkout::prices_service([&](const amqprpc::Request& r) {
                                         std::lock_guard lock(mutex);
                                         prices_saw_left = r.context.remaining();
                                         prices_saw_deadline = r.headers.count("x-rpc-deadline")
                                                                   ? r.headers.at("x-rpc-deadline")
                                                                   : "";
                                       }));
  // shop.Checkout: its coroutines run on one thread of their own; one worker dispatches.
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&io] { io.run(); });
  const std::string refund_user = "admin";
  auto shop = amqprpc::Server::start(
      so, checkout::checkout_service(**prices_client, io.get_executor(), refund_user));
  auto stop_all = [&] {
    if (shop) (*shop)->stop();
    if (prices) (*prices)->stop();
    work.reset();
    io_thread.join();
  };
  if (!prices || !shop) {
    stop_all();
    return fail((!prices ? prices.status() : shop.status()).to_string());
  }

  // The client: a coroutine on the same io_context, with a 5 s deadline.
  const checkout::Cart cart{{"apple", "bread", "cheese"}};
  amqprpc::CallOptions options;
  options.timeout = 5s;
  const auto sent = std::chrono::system_clock::now();
  auto future = asio::co_spawn(io, ask_total(**client, cart, options), asio::use_future);
  checkout::Total total;
  try {
    total = future.get();
  } catch (const amqprpc::RpcError& e) {
    stop_all();
    return fail(std::string("Total: ") + e.what());
  }
  std::cout << "total: " << total.cents << " cents for " << cart.items.size() << " items\n";

  int problems = 0;
  {
    std::lock_guard lock(mutex);
    const long long client_deadline =
        std::chrono::duration_cast<std::chrono::milliseconds>((sent + 5s).time_since_epoch())
            .count();
    const long long seen = prices_saw_deadline.empty() ? 0 : std::stoll(prices_saw_deadline);
    std::cout << "deadline: shop.prices saw x-rpc-deadline " << seen << ", "
              << (seen - client_deadline) << " ms from the client's own (5 s), with "
              << (prices_saw_left ? prices_saw_left->count() : -1)
              << " ms left; a fresh call would have had 60000\n";
    if (std::llabs(seen - client_deadline) > 1000) ++problems;
  }

  // Refund is for `admin` only: this demo logs in as someone else.
  auto refund =
      amqprpc::typed_call<checkout::Total>(**client, checkout::kCheckoutQueue, "Refund", total);
  std::cout << "refund as '" << conn->user
            << "': " << (refund.ok() ? std::string("allowed") : refund.status().to_string())
            << "\n";
  if (refund.ok() || refund.status().code() != amqprpc::StatusCode::permission_denied) ++problems;

  stop_all();

  // The spans: one trace, each server span a child of its caller's span.
  std::ifstream in(spans_path);
  std::map<std::string, nlohmann::json> by_id;
  std::vector<nlohmann::json> spans;
  for (std::string line; std::getline(in, line);) {
    spans.push_back(nlohmann::json::parse(line));
    by_id[spans.back().at("span_id").get<std::string>()] = spans.back();
  }
  const std::string trace = spans.empty() ? "" : spans.front().at("trace_id").get<std::string>();
  std::size_t in_trace = 0;
  for (const auto& s : spans) {
    if (s.at("trace_id") != trace) continue;
    ++in_trace;
    const std::string parent = s.value("parent_span_id", "");
    std::string parent_name = "-";
    if (!parent.empty()) {
      auto p = by_id.find(parent);
      if (p == by_id.end()) {
        ++problems;
        parent_name = "missing!";
      } else {
        parent_name =
            p->second.at("kind").get<std::string>() + " " + p->second.at("name").get<std::string>();
      }
    }
    std::cout << "  span " << s.at("span_id").get<std::string>() << " "
              << s.at("kind").get<std::string>() << " " << s.at("name").get<std::string>() << " ("
              << s.at("status").get<std::string>() << ") <- " << parent_name << "\n";
  }
  std::cout << "spans: " << spans.size() << " in " << spans_path << ", " << in_trace
            << " of them in trace " << trace << "\n";
  // The total: a client span, a server span, and a client and a server span per item.
  if (in_trace != 2 + 2 * cart.items.size()) ++problems;
  if (problems > 0) return fail(std::to_string(problems) + " thing(s) did not hold");
  return tools::kOk;
}
