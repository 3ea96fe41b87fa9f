// amqp-rpc: the command line for AMQP RPC, like grpcurl for gRPC.
//   amqp-rpc call QUEUE [BODY]      call a server, print the reply (or --json); with --method,
//                                   a method of its service, JSON in and out for typed methods
//   amqp-rpc describe QUEUE         the service on a queue: methods, message types (or --json)
//   amqp-rpc health QUEUE           serving or not_serving (exit 0 only when serving)
//   amqp-rpc gather QUEUE [BODY]    every server instance's reply, one per line (or --json)
//   amqp-rpc serve --queue Q        serve with a built-in handler (fib, echo)
//   amqp-rpc bench [OPTIONS]        the benchmark (raw rabbitmq-c, amqp-rpc, the peers, the seed)
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
#include <set>
#include <sstream>
#include <thread>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "common/cli.hpp"
#include "common/common.hpp"
#include "common/describe.hpp"
#include "fib.hpp"

namespace {

using json = nlohmann::json;
namespace tools = amqprpc::tools;
using tools::kError;
using tools::kOk;
using tools::kTimeout;
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

// ---- talking to one queue: what call, describe and health share ----

std::string seconds_text(double s) {
  std::ostringstream out;
  out << s;
  return out.str() + " s";
}

// --timeout as milliseconds; nullopt (said why) when it is not a number.
std::optional<std::chrono::milliseconds> timeout_of(std::string_view program, double s) {
  if (!std::isfinite(s)) {  // CLI11's range check lets NaN through
    std::cerr << program << ": --timeout must be a number of seconds, got " << s << "\n";
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<long long>(std::ceil(s * 1000)));
}

amqprpc::Result<std::unique_ptr<amqprpc::Client>> connect_client(
    const amqprpc::ConnectionOptions& conn, const std::string& reply_mode = "direct") {
  amqprpc::ClientOptions options;
  options.connection = conn;
  options.reconnect.enabled = false;  // one command: report, do not retry
  options.reply_mode = reply_mode == "direct" ? amqprpc::ReplyMode::direct_reply_to
                                              : amqprpc::ReplyMode::exclusive_queue;
  options.logger = [](amqprpc::LogLevel, std::string_view) {};  // errors are reported by callers
  return amqprpc::Client::connect(options);
}

// The service on `queue`, from its reply to amqprpc.describe; else nullopt, with the exit code
// in `exit_code` and the reason in `why` (unimplemented: the server does not describe itself).
// `raw` gets the reply's body.
std::optional<tools::Description> fetch_description(amqprpc::Client& client,
                                                    const std::string& queue,
                                                    std::chrono::milliseconds timeout,
                                                    int& exit_code, amqprpc::Status& why,
                                                    std::string* raw = nullptr) {
  amqprpc::CallOptions o;
  o.method = std::string(amqprpc::kDescribeMethod);
  o.timeout = timeout;
  amqprpc::Reply reply = client.try_call(queue, "", o);
  const std::string does_not = "the server on '" + queue + "' does not describe itself: ";
  if (!reply.status.ok()) {
    exit_code = tools::exit_code_for_reply(reply);
    if (reply.status.code() == amqprpc::StatusCode::deadline_exceeded) {
      why = {reply.status.code(), "no server on '" + queue + "' answered " +
                                      std::string(amqprpc::kDescribeMethod) + " within " +
                                      seconds_text(static_cast<double>(timeout.count()) / 1000)};
    } else if (reply.headers.count("x-rpc-status") != 0) {
      exit_code = kError;
      why = {reply.status.code(), does_not + "it answers " + std::string(amqprpc::kDescribeMethod) +
                                      " with " + reply.status.to_string()};
    } else {
      why = {reply.status.code(), reply.status.to_string()};
    }
    return std::nullopt;
  }
  if (raw != nullptr) *raw = reply.body;
  auto d = tools::parse_description(reply.content_type, reply.body);
  if (!d) {
    exit_code = kError;
    why = {amqprpc::StatusCode::unimplemented, does_not + "its reply to " +
                                                   std::string(amqprpc::kDescribeMethod) + " is " +
                                                   d.status().message()};
    return std::nullopt;
  }
  return std::move(*d);
}

// ---- call ----

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
  std::string method;
  bool wait_for_ready = false;
  bool stream = false;
};

// What a typed call knows beyond the raw call: the method's description and the schema.
struct Typed {
  std::optional<tools::Description> description;
  const tools::DescribedMethod* method = nullptr;
};

using amqprpc::kJsonContentType;
using amqprpc::kProtobufContentType;

bool is_protobuf_type(const std::string& type) {
  return type != "json" && type != "bytes";
}

// Turns BODY into the request `typed.method` takes (JSON: checked; a protobuf type: JSON to
// binary through the schema) and sets the call's content type and type header. 0, or the exit
// code after saying why.
int encode_typed_request(const Typed& typed, std::string& body, amqprpc::CallOptions& call) {
  const tools::DescribedMethod& m = *typed.method;
  const std::string& type = m.request_type;
  if (type == "json") {
    if (!nlohmann::json::accept(body)) {
      std::cerr << "amqp-rpc call: method '" << m.name << "' takes JSON; the body is not JSON\n";
      return kUsage;
    }
    call.content_type = std::string(kJsonContentType);
    return 0;
  }
  if (!is_protobuf_type(type)) return 0;  // bytes: as given
  const tools::Schema* schema = typed.description->schema.get();
  if (schema == nullptr) {
    std::cerr << "amqp-rpc call: method '" << m.name << "' takes " << type
              << " but the server sends no descriptor set to build it with\n";
    return kError;
  }
  auto descriptor = schema->find(type);
  if (!descriptor) {
    std::cerr << "amqp-rpc call: method '" << m.name << "': " << descriptor.status().message()
              << "\n";
    return kError;
  }
  auto binary = schema->json_to_binary(*descriptor, body);
  if (!binary) {
    std::cerr << "amqp-rpc call: method '" << m.name << "': the body is not JSON for " << type
              << ": " << binary.status().message() << "\n";
    return kUsage;
  }
  body = std::move(*binary);
  call.content_type = std::string(kProtobufContentType);
  call.headers.insert_or_assign(std::string(amqprpc::kTypeHeader), type);
  return 0;
}

// A protobuf body as JSON when the schema has its type; nullopt when it is not protobuf.
std::optional<amqprpc::Result<std::string>> protobuf_as_json(const Typed& typed,
                                                             const std::string& content_type,
                                                             const std::string& type,
                                                             const std::string& body) {
  if (!typed.description || content_type != kProtobufContentType || !is_protobuf_type(type)) {
    return std::nullopt;
  }
  const tools::Schema* schema = typed.description->schema.get();
  if (schema == nullptr) {
    return amqprpc::Result<std::string>(
        amqprpc::Status{amqprpc::StatusCode::not_found, "the server sends no descriptor set"});
  }
  auto descriptor = schema->find(type);
  if (!descriptor) return amqprpc::Result<std::string>(descriptor.status());
  return schema->binary_to_json(*descriptor, body);
}

// How deeply JSON text nests (brackets outside strings): parsed JSON from a server is only put
// in the --json output when shallow, as printing it recurses.
std::size_t json_depth(std::string_view text) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

// A streaming call: each item printed as it arrives (a line of JSON with --json), then the
// stream's status (a last JSON line). Items of a protobuf method print as JSON.
int print_stream(amqprpc::Client& client, const CallArgs& a, std::string body,
                 const amqprpc::CallOptions& call, const Typed& typed) {
  auto stream = client.stream(a.queue, a.method, std::move(body), call);
  std::uint64_t n = 0;
  while (auto item = stream->next()) {
    std::string shown = item->body;
    if (typed.method != nullptr) {
      auto type = item->headers.find(std::string(amqprpc::kTypeHeader));
      auto as_json = protobuf_as_json(
          typed, item->content_type,
          type != item->headers.end() ? type->second : typed.method->reply_type, item->body);
      if (as_json && as_json->ok()) shown = **as_json;
    }
    if (a.as_json) {
      json j{{"item", n}, {"body", shown}};
      if (!item->content_type.empty()) j["content_type"] = item->content_type;
      std::cout << dump(j) << "\n";
    } else {
      std::cout << shown;
      if (shown.empty() || shown.back() != '\n') std::cout << "\n";
    }
    std::cout.flush();  // as it arrives, also into a pipe
    ++n;
  }
  const amqprpc::Status st = stream->status();
  if (a.as_json) {
    json j{{"status", amqprpc::to_string(st.code())}, {"items", n}, {"queue", a.queue}};
    if (!a.method.empty()) j["method"] = a.method;
    if (!st.ok()) j["message"] = st.message();
    std::cout << dump(j) << "\n";
  }
  if (!st.ok()) std::cerr << "amqp-rpc call: " << st.to_string() << " (after " << n << " items)\n";
  return tools::exit_code_for_call(st);
}

int run_call(const CallArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc call", a.url);
  if (!conn) return kUsage;
  if (a.from_stdin && a.body_given) {
    std::cerr << "amqp-rpc call: give the body as an argument or with --stdin, not both\n";
    return kUsage;
  }
  auto timeout = timeout_of("amqp-rpc call", a.timeout_s);
  if (!timeout) return kUsage;
  amqprpc::CallOptions call;
  call.timeout = *timeout;
  call.content_type = a.content_type;
  call.method = a.method;
  call.wait_for_ready = a.wait_for_ready;
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

  auto started = std::chrono::steady_clock::now();
  auto client = connect_client(*conn, a.reply_mode);
  auto connected = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  auto fail_json = [&](const amqprpc::Status& why) {
    if (!a.as_json) return;
    json j{{"status", amqprpc::to_string(why.code())},
           {"message", why.message()},
           {"url", conn->to_string()},
           {"queue", a.queue},
           {"timing_ms", {{"connect", ms(connected - started)}}}};
    if (!a.method.empty()) j["method"] = a.method;
    std::cout << dump(j) << "\n";
  };
  if (!client) {
    fail_json(client.status());
    std::cerr << "amqp-rpc call: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }

  // A method of the service (not a reserved one, not with a content type of the caller's
  // choosing): what it takes comes from the server's describe.
  Typed typed;
  if (!a.method.empty() && !a.method.starts_with(amqprpc::kReservedMethodPrefix) &&
      a.content_type.empty()) {
    int code = kOk;
    amqprpc::Status why;
    typed.description = fetch_description(**client, a.queue, *timeout, code, why);
    if (!typed.description) {
      fail_json(why);
      std::cerr << "amqp-rpc call: " << why.message()
                << (code == kError ? " (call without --method for a raw call)" : "") << "\n";
      return code;
    }
    typed.method = typed.description->find(a.method);
    if (typed.method == nullptr) {
      const std::string why = "the service '" + typed.description->service + "' on '" + a.queue +
                              "' has no method '" + a.method +
                              "' (its methods: " + typed.description->method_names() + ")";
      fail_json({amqprpc::StatusCode::unimplemented, why});
      std::cerr << "amqp-rpc call: " << why << "\n";
      return kUsage;
    }
    if (int code = encode_typed_request(typed, body, call); code != 0) return code;
    // One deadline for both calls.
    auto left = *timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::steady_clock::now() - connected);
    call.timeout = std::max(left, std::chrono::milliseconds(1));
  }

  if (a.stream || (typed.method != nullptr && typed.method->streaming)) {
    return print_stream(**client, a, std::move(body), call, typed);
  }
  amqprpc::Reply reply = (*client)->try_call(a.queue, body, call);
  auto done = std::chrono::steady_clock::now();
  int code = tools::exit_code_for_reply(reply);

  // A protobuf reply or detail, as JSON.
  std::string shown = reply.body;
  if (reply.status.ok() && typed.method != nullptr) {
    auto type = reply.headers.find(std::string(amqprpc::kTypeHeader));
    auto as_json = protobuf_as_json(
        typed, reply.content_type,
        type != reply.headers.end() ? type->second : typed.method->reply_type, reply.body);
    if (as_json && !as_json->ok()) {
      reply.status = {
          amqprpc::StatusCode::internal,
          "method '" + a.method + "': the reply does not decode: " + as_json->status().message()};
      code = kError;
    } else if (as_json) {
      shown = **as_json;
    }
  }
  json detail_json;
  std::string detail_text;
  if (const amqprpc::StatusDetail* d = reply.status.detail()) {
    auto as_json = protobuf_as_json(typed, d->content_type, d->type, d->data);
    if (as_json && as_json->ok()) {
      detail_text = **as_json;
      detail_json = {{"type", d->type}, {"value", json::parse(**as_json, nullptr, false)}};
    } else if (d->content_type == kJsonContentType && json_depth(d->data) <= 100 &&
               json::accept(d->data)) {
      detail_text = d->data;
      detail_json = {{"type", d->type}, {"value", json::parse(d->data)}};
    } else {
      detail_text = "(" + std::to_string(d->data.size()) + " bytes of " +
                    (d->content_type.empty() ? "?" : d->content_type) + ")";
      detail_json = {{"type", d->type}, {"content_type", d->content_type}};
    }
  }

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
    if (!a.method.empty()) j["method"] = a.method;
    if (reply.status.ok()) {
      j["body"] = shown;
    } else {
      j["message"] = reply.status.message();
      if (!detail_json.is_null()) j["detail"] = detail_json;
    }
    std::cout << dump(j) << "\n";
  } else if (reply.status.ok()) {
    std::cout << shown;
    if (isatty(STDOUT_FILENO) || shown.empty() || shown.back() != '\n') std::cout << "\n";
  }
  if (code == kUsage) {
    std::cerr << "amqp-rpc call: " << reply.status.message() << " (nothing was sent)\n";
  } else if (!reply.status.ok()) {
    std::cerr << "amqp-rpc call: " << reply.status.to_string() << "\n";
    if (const amqprpc::StatusDetail* d = reply.status.detail()) {
      std::cerr << "amqp-rpc call: detail " << d->type << ": " << detail_text << "\n";
    }
  }
  return code;
}

// ---- gather ----

struct GatherArgs {
  std::string url;
  std::string queue;
  std::string body;
  std::string method;
  bool as_json = false;
  double timeout_s = 5;
};

// One request to every server instance on QUEUE: each instance's reply, one per line.
// Exit 0: every instance counted at send time answered ok; 1: some answered with an error;
// 3: some did not answer in time; 4: none takes part, or the broker is out of reach.
int run_gather(const GatherArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc gather", a.url);
  if (!conn) return kUsage;
  auto timeout = timeout_of("amqp-rpc gather", a.timeout_s);
  if (!timeout) return kUsage;
  auto client = connect_client(*conn);
  if (!client) {
    std::cerr << "amqp-rpc gather: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }
  amqprpc::CallOptions o;
  o.timeout = *timeout;
  amqprpc::GatherResult g = (*client)->gather(a.queue, a.method, a.body, o);
  bool any_error = false;
  for (const auto& r : g.replies) any_error = any_error || !r.reply.status.ok();
  int code = kOk;
  if (g.status.code() == amqprpc::StatusCode::invalid_argument) {
    code = kUsage;
  } else if (g.status.code() == amqprpc::StatusCode::deadline_exceeded) {
    code = kTimeout;
  } else if (!g.status.ok()) {
    code = kUnreachable;
  } else if (any_error) {
    code = kError;
  }
  if (a.as_json) {
    json replies = json::array();
    for (const auto& r : g.replies) {
      json one{{"instance", r.instance}, {"status", amqprpc::to_string(r.reply.status.code())}};
      if (r.reply.status.ok()) {
        one["body"] = r.reply.body;
        if (!r.reply.content_type.empty()) one["content_type"] = r.reply.content_type;
      } else {
        one["message"] = r.reply.status.message();
      }
      replies.push_back(std::move(one));
    }
    json j{{"status", amqprpc::to_string(g.status.code())},
           {"queue", a.queue},
           {"expected", g.expected},
           {"answered", g.replies.size()},
           {"missing", g.missing()},
           {"silent", g.silent},
           {"replies", std::move(replies)}};
    if (!a.method.empty()) j["method"] = a.method;
    if (!g.status.ok()) j["message"] = g.status.message();
    std::cout << dump(j) << "\n";
  } else {
    for (const auto& r : g.replies) {
      std::string shown =
          r.reply.status.ok() ? r.reply.body : "error " + r.reply.status.to_string();
      if (!shown.empty() && shown.back() == '\n') shown.pop_back();
      std::cout << r.instance << "\t" << shown << "\n";
    }
  }
  if (code == kUsage) {
    std::cerr << "amqp-rpc gather: " << g.status.message() << " (nothing was sent)\n";
  } else if (g.status.ok()) {
    std::cerr << "amqp-rpc gather: " << g.replies.size() << " of " << g.expected
              << " instances answered\n";
  } else {
    std::cerr << "amqp-rpc gather: " << g.status.to_string() << "\n";
    if (!g.silent.empty()) {
      std::cerr << "amqp-rpc gather: not answering:";
      for (const auto& s : g.silent) std::cerr << " " << s;
      std::cerr << "\n";
    }
  }
  return code;
}

// ---- describe ----

struct DescribeArgs {
  std::string url;
  std::string queue;
  bool as_json = false;
  double timeout_s = 5;
};

std::string method_line(const tools::DescribedMethod& m) {
  return m.name + "(" + m.request_type + ") returns (" + (m.streaming ? "stream " : "") +
         m.reply_type + ") [" + m.encoding + "]";
}

int run_describe(const DescribeArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc describe", a.url);
  if (!conn) return kUsage;
  auto timeout = timeout_of("amqp-rpc describe", a.timeout_s);
  if (!timeout) return kUsage;
  auto client = connect_client(*conn);
  if (!client) {
    std::cerr << "amqp-rpc describe: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }
  int code = kOk;
  amqprpc::Status why;
  std::string raw;
  auto d = fetch_description(**client, a.queue, *timeout, code, why, &raw);
  if (!d) {
    std::cerr << "amqp-rpc describe: " << why.message() << "\n";
    return code;
  }
  if (a.as_json) {
    std::cout << raw << "\n";
    return kOk;
  }
  std::string out = "service " + d->service + "\n";
  out += "queue: " + d->queue + "\n";
  out += std::string("default handler: ") + (d->default_handler ? "yes" : "no") + "\n";
  out += "methods:" + std::string(d->methods.empty() ? " none" : "") + "\n";
  std::vector<std::string> types;  // the protobuf types the methods use, in order, once each
  std::set<std::string> seen;
  for (const auto& m : d->methods) {
    out += "  " + method_line(m) + "\n";
    for (const auto* t : {&m.request_type, &m.reply_type}) {
      if (is_protobuf_type(*t) && seen.insert(*t).second) types.push_back(*t);
    }
  }
  if (!types.empty()) out += "messages:\n";
  for (const auto& t : types) {
    if (d->schema == nullptr) {
      out += "  message " + t + ": no descriptor set\n";
      continue;
    }
    auto descriptor = d->schema->find(t);
    if (descriptor) {
      out += "  " + tools::message_definition(**descriptor, "  ") + "\n";
    } else {
      out += "  message " + t + ": " + descriptor.status().message() + "\n";
    }
  }
  if (!d->reserved.empty()) {
    out += "reserved:";
    for (const auto& r : d->reserved) out += " " + r;
    out += "\n";
  }
  std::cout << out;
  return kOk;
}

// ---- health ----

struct HealthArgs {
  std::string url;
  std::string queue;
  double timeout_s = 5;
};

// A readiness probe: exit 0 only when a server on the queue says it is serving.
int run_health(const HealthArgs& a) {
  auto conn = tools::parse_broker_url("amqp-rpc health", a.url);
  if (!conn) return kUsage;
  auto timeout = timeout_of("amqp-rpc health", a.timeout_s);
  if (!timeout) return kUsage;
  auto client = connect_client(*conn);
  if (!client) {
    std::cerr << "amqp-rpc health: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }
  amqprpc::CallOptions o;
  o.method = std::string(amqprpc::kHealthMethod);
  o.timeout = *timeout;
  amqprpc::Reply reply = (*client)->try_call(a.queue, "", o);
  if (reply.status.code() == amqprpc::StatusCode::deadline_exceeded) {
    std::cout << "not_serving\n";
    std::cerr << "amqp-rpc health: no server answered within " << seconds_text(a.timeout_s) << "\n";
    return kTimeout;
  }
  if ((*client)->stats().no_server != 0) {
    // The queue is there, nobody consumes it: as unready as a server that does not answer.
    std::cout << "not_serving\n";
    std::cerr << "amqp-rpc health: no server is consuming queue '" << a.queue << "'\n";
    return kTimeout;
  }
  const bool from_server = reply.headers.count("x-rpc-status") != 0;
  if (!reply.status.ok() && !from_server) {
    std::cerr << "amqp-rpc health: " << reply.status.to_string() << "\n";
    return tools::exit_code_for_reply(reply);
  }
  json j = reply.status.ok() ? json::parse(reply.body, nullptr, false) : json();
  auto status = j.is_object() ? j.find("status") : j.end();
  if (!reply.status.ok() || status == j.end() || !status->is_string()) {
    std::cerr << "amqp-rpc health: the server on '" << a.queue << "' does not answer "
              << amqprpc::kHealthMethod
              << (reply.status.ok() ? " (its reply is not a health reply)"
                                    : " (its reply: " + reply.status.to_string() + ")")
              << "\n";
    return kError;
  }
  std::cout << status->get<std::string>() << "\n";
  return status->get<std::string>() == "serving" ? kOk : kError;
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
  // fib: the demo's service (the seed's decimal bodies, and the typed JSON method Fib).
  amqprpc::Service service = fib::service(a.options.queue, a.fib_limit);
  if (a.handler != "fib") {
    service = amqprpc::Service(a.options.queue, "echo");
    service.default_handler([](const amqprpc::Request& r) {
      amqprpc::Reply reply = amqprpc::Reply::ok(r.body);
      reply.content_type = r.content_type;
      reply.headers = r.headers;
      reply.headers.erase("x-rpc-deadline");
      return reply;
    });
  }
  tools::block_stop_signals();

  if (!a.quiet) {
    a.options.logger = [](amqprpc::LogLevel level, std::string_view line) {
      if (level >= amqprpc::LogLevel::info) {
        std::fprintf(stderr, "amqp-rpc serve: %.*s\n", static_cast<int>(line.size()), line.data());
      }
    };
  }
  auto server = amqprpc::Server::start(a.options, std::move(service));
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
  call_cmd->add_flag("--stream", call.stream,
                     "read a streaming reply: print each item as it arrives, then the status "
                     "(automatic for methods whose describe says they stream)");
  call_cmd->add_flag("--wait-for-ready", call.wait_for_ready,
                     "wait (within --timeout) for a server when none consumes QUEUE, instead of "
                     "failing at once");
  call_cmd
      ->add_option("--reply-mode", call.reply_mode, "direct (amq.rabbitmq.reply-to) or exclusive")
      ->capture_default_str()
      ->check(CLI::IsMember({"direct", "exclusive"}));

  call_cmd->add_option("-m,--method", call.method,
                       "method of the queue's service; typed methods take and print JSON");

  GatherArgs gather;
  auto* gather_cmd = app.add_subcommand(
      "gather", "send BODY to every server instance on QUEUE; print each instance's reply");
  gather_cmd->add_option("queue", gather.queue, "queue of the service")->required();
  gather_cmd->add_option("body", gather.body, "request body")->capture_default_str();
  tools::add_url_option(*gather_cmd, gather.url, "broker URI (amqp:// or amqps://)");
  gather_cmd->add_option("-m,--method", gather.method, "method to call on every instance");
  gather_cmd->add_option("--timeout", gather.timeout_s, "seconds to wait for every instance")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));
  gather_cmd->add_flag("--json", gather.as_json, "print one JSON object: status, each reply");

  DescribeArgs describe;
  auto* describe_cmd =
      app.add_subcommand("describe", "describe the service on QUEUE: methods and message types");
  describe_cmd->add_option("queue", describe.queue, "queue the server consumes")->required();
  tools::add_url_option(*describe_cmd, describe.url, "broker URI (amqp:// or amqps://)");
  describe_cmd->add_option("--timeout", describe.timeout_s, "seconds to wait for the reply")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));
  describe_cmd->add_flag("--json", describe.as_json,
                         "print the server's describe reply (JSON, with its descriptor set)");

  HealthArgs health;
  auto* health_cmd = app.add_subcommand(
      "health", "print serving or not_serving for QUEUE; exit 0 only when serving");
  health_cmd->add_option("queue", health.queue, "queue the server consumes")->required();
  tools::add_url_option(*health_cmd, health.url, "broker URI (amqp:// or amqps://)");
  health_cmd->add_option("--timeout", health.timeout_s, "seconds to wait for an answer")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));

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
      "bench",
      "benchmark raw rabbitmq-c, amqp-rpc and its peers (Java RpcClient/RpcServer, Node "
      "rabbitmq-client, pika, aio-pika) in one run, with a progress line (scripts/bench.sh "
      "installs the peers)");
  bench_cmd->prefix_command();  // everything after `bench` goes to amqp-rpc-bench (try --help)
  bench_cmd->allow_extras();

  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;
  if (*call_cmd) return run_call(call);
  if (*describe_cmd) return run_describe(describe);
  if (*health_cmd) return run_health(health);
  if (*gather_cmd) return run_gather(gather);
  if (*serve_cmd) return run_serve(serve);
  if (*bench_cmd) return run_bench(bench_cmd->remaining(), argv[0]);
  return kUsage;
}
