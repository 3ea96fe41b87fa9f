// W3C trace context, the span exporter, and the built-in interceptors, without a broker: calls
// and requests are built by hand as the client and the server would hand them over.
#include "amqprpc/tracing.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "amqprpc/interceptor.hpp"
#include "framework/context_state.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;

namespace {

// The W3C specification's own example.
constexpr const char* kTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kSpanId = "00f067aa0ba902b7";
constexpr const char* kTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

class CapturingExporter : public SpanExporter {
 public:
  void export_span(const Span& span) override {
    std::lock_guard lock(mutex_);
    spans_.push_back(span);
  }
  std::vector<Span> spans() const {
    std::lock_guard lock(mutex_);
    return spans_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Span> spans_;
};

TraceContext trace(std::string trace_id, std::string span_id, bool sampled = true) {
  TraceContext t;
  t.trace_id = std::move(trace_id);
  t.span_id = std::move(span_id);
  t.sampled = sampled;
  return t;
}

ClientCall client_call(std::string method, bool sampled = true) {
  ClientCall call;
  call.queue = "rpc_queue";
  call.options.method = std::move(method);
  call.trace = trace(kTraceId, "1111111111111111", sampled);
  call.parent_span_id = "2222222222222222";
  call.start = std::chrono::system_clock::now();
  return call;
}

// A request as the server hands it to interceptors: its context carries the server span.
Request served_request(TraceContext server_span, std::string parent_span_id = "1111111111111111") {
  auto state = std::make_shared<detail::ContextState>();
  state->trace = std::move(server_span);
  state->parent_span_id = std::move(parent_span_id);
  state->caller = "alice";
  Request r;
  r.queue = "rpc_queue";
  r.method = "Fib";
  r.correlation_id = "corr-1";
  r.caller = "alice";
  r.context = Context(std::move(state));
  return r;
}

}  // namespace

// ---- TraceContext ----

TEST(TraceContext, ParsesVersion00AndWritesTheSameHeaderBack) {
  auto t = TraceContext::parse(kTraceparent, "congo=t61rcWkgMzE");
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->valid());
  EXPECT_EQ(t->trace_id, kTraceId);
  EXPECT_EQ(t->span_id, kSpanId);
  EXPECT_TRUE(t->sampled);
  EXPECT_EQ(t->tracestate, "congo=t61rcWkgMzE");
  EXPECT_EQ(t->traceparent(), kTraceparent);

  const std::string unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
  auto u = TraceContext::parse(unsampled);
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->sampled);
  EXPECT_EQ(u->traceparent(), unsampled);
}

TEST(TraceContext, SampledIsFlagsBitZeroAndOnlyThatBitIsWritten) {
  auto odd = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
  ASSERT_TRUE(odd);
  EXPECT_TRUE(odd->sampled);
  EXPECT_EQ(odd->traceparent(), kTraceparent);
  auto even = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe");
  ASSERT_TRUE(even);
  EXPECT_FALSE(even->sampled);
  EXPECT_EQ(even->traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

TEST(TraceContext, RejectsEveryMalformedTraceparent) {
  const std::vector<std::string> invalid = {
      "",
      "00",
      // uppercase hex, anywhere
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
      "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // all-zero ids
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      // version ff is forbidden, even in the version-00 layout
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // wrong lengths: one digit short or long in each field
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
      "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // version 00 allows nothing after the flags
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
      // a later version's extra data must start a new field
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01xyz",
      // bad separators
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
      " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      // not hex
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\x80\x80",
  };
  for (const auto& header : invalid) {
    EXPECT_FALSE(TraceContext::parse(header)) << "'" << header << "'";
  }
}

TEST(TraceContext, ReadsALaterVersionByItsFirstFourFields) {
  auto more = TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz");
  ASSERT_TRUE(more);
  EXPECT_EQ(more->trace_id, kTraceId);
  EXPECT_EQ(more->span_id, kSpanId);
  EXPECT_TRUE(more->sampled);
  // Passed on as the version we speak.
  EXPECT_EQ(more->traceparent(), kTraceparent);

  auto exact = TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(exact);
  EXPECT_FALSE(exact->sampled);
}

TEST(TraceContext, DropsATracestateOver512BytesButKeepsTheTrace) {
  const std::string limit(512, 'a');
  auto kept = TraceContext::parse(kTraceparent, limit);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->tracestate, limit);

  auto dropped = TraceContext::parse(kTraceparent, limit + "a");
  ASSERT_TRUE(dropped);
  EXPECT_EQ(dropped->trace_id, kTraceId);
  EXPECT_EQ(dropped->tracestate, "");
}

TEST(TraceContext, IsValidOnlyWithWellFormedNonZeroIds) {
  EXPECT_FALSE(TraceContext{}.valid());
  EXPECT_TRUE(trace(kTraceId, kSpanId).valid());
  EXPECT_FALSE(trace("4BF92F3577B34DA6A3CE929D0E0E4736", kSpanId).valid());
  EXPECT_FALSE(trace(kTraceId, "0000000000000000").valid());
  EXPECT_FALSE(trace(kTraceId, "00f067aa0ba902b").valid());
  EXPECT_FALSE(trace(std::string(32, '0'), kSpanId).valid());
}

TEST(TraceContext, AnIdIsValidExactlyWhenEveryCharacterIsLowercaseHexAndOneIsNotZero) {
  // Every byte value at every place of both ids, against the definition character by character
  // (the check reads eight at a time).
  auto lower_hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  for (const std::string& base : {std::string(kTraceId), std::string(32, '0')}) {
    for (std::size_t at = 0; at < base.size(); ++at) {
      for (int b = 0; b < 256; ++b) {
        std::string id = base;
        id[at] = static_cast<char>(b);
        const bool expected = std::all_of(id.begin(), id.end(), lower_hex) &&
                              id.find_first_not_of('0') != std::string::npos;
        ASSERT_EQ(trace(id, kSpanId).valid(), expected) << "byte " << b << " at " << at;
        ASSERT_EQ(
            trace(kTraceId, id.substr(at / 16 * 16, 16)).valid(),
            std::all_of(id.begin() + at / 16 * 16, id.begin() + at / 16 * 16 + 16, lower_hex) &&
                id.substr(at / 16 * 16, 16) != std::string(16, '0'))
            << "span id, byte " << b << " at " << at % 16;
      }
    }
  }
}

// ---- JsonLinesExporter ----

TEST(JsonLinesExporter, WritesOneParsableObjectPerLineWithEveryField) {
  std::ostringstream out;
  JsonLinesExporter exporter(out);
  EXPECT_TRUE(exporter.ok().ok());

  Span span;
  span.kind = Span::Kind::server;
  span.name = "rpc_queue/Fib";
  span.trace_id = kTraceId;
  span.span_id = kSpanId;
  span.parent_span_id = "1111111111111111";
  span.start = std::chrono::system_clock::time_point(1'700'000'000'123'456'789ns);
  span.duration = 1'500'000ns;
  span.status = Status{StatusCode::invalid_argument, "n must be at most 90"};
  span.attributes = {{"rpc.system", "amqp-rpc"}, {"rpc.method", "Fib"}};
  exporter.export_span(span);
  Span root;
  root.name = "rpc_queue";
  root.trace_id = kTraceId;
  root.span_id = "2222222222222222";
  exporter.export_span(root);

  std::istringstream lines(out.str());
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  EXPECT_EQ(line, JsonLinesExporter::to_json(span));
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["trace_id"], kTraceId);
  EXPECT_EQ(j["span_id"], kSpanId);
  EXPECT_EQ(j["parent_span_id"], "1111111111111111");
  EXPECT_EQ(j["name"], "rpc_queue/Fib");
  EXPECT_EQ(j["kind"], "server");
  EXPECT_EQ(j["start_unix_nano"].get<std::int64_t>(), 1'700'000'000'123'456'789);
  EXPECT_EQ(j["duration_nano"].get<std::int64_t>(), 1'500'000);
  EXPECT_EQ(j["status"], "invalid_argument");
  EXPECT_EQ(j["status_message"], "n must be at most 90");
  EXPECT_EQ(j["attributes"], (nlohmann::json{{"rpc.system", "amqp-rpc"}, {"rpc.method", "Fib"}}));

  ASSERT_TRUE(std::getline(lines, line));
  auto r = nlohmann::json::parse(line);
  EXPECT_EQ(r["kind"], "client");
  EXPECT_EQ(r["status"], "ok");
  EXPECT_EQ(r["parent_span_id"], "");
  EXPECT_TRUE(r["attributes"].is_object());
  EXPECT_TRUE(r["attributes"].empty());
  EXPECT_FALSE(std::getline(lines, line));
  EXPECT_EQ(out.str().back(), '\n');
}

TEST(JsonLinesExporter, WritesTextThatIsNotUtf8WithoutThrowing) {
  Span span;
  span.status = Status{StatusCode::internal, "bad \xff\xfe bytes"};
  span.attributes["enduser.id"] = "\xc3";
  std::string line;
  ASSERT_NO_THROW(line = JsonLinesExporter::to_json(span));
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["status"], "internal");
  EXPECT_NE(j["status_message"].get<std::string>().find("bad "), std::string::npos);
}

TEST(JsonLinesExporter, AppendsToAFileAndSaysWhenItCannotOpenOne) {
  const std::string path = testing::TempDir() + "amqprpc_spans_test.jsonl";
  std::remove(path.c_str());
  Span span;
  span.name = "q";
  {
    JsonLinesExporter first(path);
    ASSERT_TRUE(first.ok().ok()) << first.ok().to_string();
    first.export_span(span);
  }
  {
    JsonLinesExporter second(path);
    second.export_span(span);
    // Flushed at once: readable before the exporter is gone.
    std::ifstream in(path);
    std::string a, b;
    ASSERT_TRUE(std::getline(in, a));
    ASSERT_TRUE(std::getline(in, b));
    EXPECT_EQ(nlohmann::json::parse(a)["name"], "q");
    EXPECT_EQ(a, b);
  }
  std::remove(path.c_str());

  JsonLinesExporter nowhere("/nonexistent-dir/amqprpc/spans.jsonl");
  EXPECT_EQ(nowhere.ok().code(), StatusCode::unavailable);
  EXPECT_NE(nowhere.ok().message().find("/nonexistent-dir/amqprpc/spans.jsonl"), std::string::npos);
  nowhere.export_span(span);  // does nothing, does not crash
}

TEST(JsonLinesExporter, LinesFromConcurrentThreadsNeverInterleave) {
  std::ostringstream out;
  JsonLinesExporter exporter(out);
  constexpr int kThreads = 4;
  constexpr int kSpans = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Span span;
      span.name = "thread-" + std::to_string(t) + std::string(200, 'x');
      for (int i = 0; i < kSpans; ++i) exporter.export_span(span);
    });
  }
  for (auto& t : threads) t.join();
  std::istringstream lines(out.str());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ASSERT_TRUE(nlohmann::json::accept(line)) << line;
    EXPECT_EQ(nlohmann::json::parse(line)["name"].get<std::string>().substr(0, 7), "thread-");
    ++n;
  }
  EXPECT_EQ(n, kThreads * kSpans);
}

// ---- TracingInterceptor ----

TEST(TracingInterceptor, ExportsAClientSpanForASampledCall) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  ClientCall call = client_call("Fib");
  std::any state;
  ASSERT_TRUE(tracing.before_call(call, state).ok());
  EXPECT_TRUE(exporter->spans().empty());

  Reply reply = Reply::error(StatusCode::invalid_argument, "too big");
  reply.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-3333333333333333-01";
  tracing.after_call(call, reply, 2ms, state);

  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 1u);
  const Span& s = spans[0];
  EXPECT_EQ(s.kind, Span::Kind::client);
  EXPECT_EQ(s.name, "rpc_queue/Fib");
  EXPECT_EQ(s.trace_id, kTraceId);
  EXPECT_EQ(s.span_id, "1111111111111111");
  EXPECT_EQ(s.parent_span_id, "2222222222222222");
  EXPECT_EQ(s.start, call.start);
  EXPECT_EQ(s.duration, 2ms);
  EXPECT_EQ(s.status, (Status{StatusCode::invalid_argument, "too big"}));
  EXPECT_EQ(s.attributes, (std::map<std::string, std::string>{
                              {"rpc.system", "amqp-rpc"},
                              {"rpc.service", "rpc_queue"},
                              {"rpc.method", "Fib"},
                              {"amqprpc.reply.span_id", "3333333333333333"},
                          }));
  // The interceptor does not touch the outcome.
  EXPECT_EQ(reply.status.code(), StatusCode::invalid_argument);
}

TEST(TracingInterceptor, NamesADefaultHandlerCallByItsQueueAndIgnoresABadReplyTraceparent) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  ClientCall call = client_call("");
  std::any state;
  Reply reply = Reply::ok("55");
  reply.headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
  tracing.after_call(call, reply, 1ms, state);
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].name, "rpc_queue");
  EXPECT_TRUE(spans[0].status.ok());
  EXPECT_EQ(spans[0].attributes.count("rpc.method"), 0u);
  EXPECT_EQ(spans[0].attributes.count("amqprpc.reply.span_id"), 0u);
}

TEST(TracingInterceptor, ExportsNothingForAnUnsampledCall) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  ClientCall call = client_call("Fib", /*sampled=*/false);
  std::any state;
  ASSERT_TRUE(tracing.before_call(call, state).ok());
  Reply reply = Reply::ok("1");
  tracing.after_call(call, reply, 1ms, state);
  EXPECT_TRUE(exporter->spans().empty());
}

TEST(TracingInterceptor, ExportsAServerSpanFromTheRequestsContext) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  Request request = served_request(trace(kTraceId, kSpanId));
  std::any state;
  auto before = std::chrono::system_clock::now();
  ASSERT_TRUE(tracing.before_handler(request, state).ok());
  auto after = std::chrono::system_clock::now();
  Reply reply = Reply::ok("55");
  tracing.after_handler(request, reply, 3ms, state);

  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 1u);
  const Span& s = spans[0];
  EXPECT_EQ(s.kind, Span::Kind::server);
  EXPECT_EQ(s.name, "rpc_queue/Fib");
  EXPECT_EQ(s.trace_id, kTraceId);
  EXPECT_EQ(s.span_id, kSpanId);
  EXPECT_EQ(s.parent_span_id, "1111111111111111");
  EXPECT_GE(s.start, before);
  EXPECT_LE(s.start, after);
  EXPECT_EQ(s.duration, 3ms);
  EXPECT_TRUE(s.status.ok());
  EXPECT_EQ(s.attributes, (std::map<std::string, std::string>{
                              {"rpc.system", "amqp-rpc"},
                              {"rpc.service", "rpc_queue"},
                              {"rpc.method", "Fib"},
                              {"messaging.message.conversation_id", "corr-1"},
                              {"enduser.id", "alice"},
                          }));
}

TEST(TracingInterceptor, AServerSpanOfANewTraceIsARootAndAnUnknownCallerIsLeftOut) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  Request request = served_request(trace(kTraceId, kSpanId), /*parent_span_id=*/"");
  request.caller.clear();
  std::any state;
  ASSERT_TRUE(tracing.before_handler(request, state).ok());
  Reply reply = Reply::error(StatusCode::internal, "boom");
  tracing.after_handler(request, reply, 1ms, state);
  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].parent_span_id, "");
  EXPECT_EQ(spans[0].status.code(), StatusCode::internal);
  EXPECT_EQ(spans[0].attributes.count("enduser.id"), 0u);
}

TEST(TracingInterceptor, ExportsNoServerSpanWithoutASampledTrace) {
  auto exporter = std::make_shared<CapturingExporter>();
  TracingInterceptor tracing(exporter);
  Reply reply = Reply::ok("1");

  Request untraced;  // a default Context: no trace at all
  untraced.queue = "rpc_queue";
  std::any state;
  ASSERT_TRUE(tracing.before_handler(untraced, state).ok());
  tracing.after_handler(untraced, reply, 1ms, state);

  Request unsampled = served_request(trace(kTraceId, kSpanId, /*sampled=*/false));
  std::any state2;
  ASSERT_TRUE(tracing.before_handler(unsampled, state2).ok());
  tracing.after_handler(unsampled, reply, 1ms, state2);

  EXPECT_TRUE(exporter->spans().empty());
}

TEST(TracingInterceptor, ClientAndServerSpansOfOneCallFormOneTrace) {
  // The server's context as the server would build it from the request's traceparent.
  auto exporter = std::make_shared<CapturingExporter>();
  auto tracing = std::make_shared<TracingInterceptor>(exporter);
  ClientCall call = client_call("Fib");
  auto parsed = TraceContext::parse(call.trace.traceparent());
  ASSERT_TRUE(parsed);
  Request request = served_request(trace(parsed->trace_id, "4444444444444444"), parsed->span_id);

  std::any client_state, server_state;
  ASSERT_TRUE(tracing->before_call(call, client_state).ok());
  ASSERT_TRUE(tracing->before_handler(request, server_state).ok());
  Reply reply = Reply::ok("55");
  reply.headers["traceparent"] = request.context.trace().traceparent();
  tracing->after_handler(request, reply, 1ms, server_state);
  tracing->after_call(call, reply, 2ms, client_state);

  auto spans = exporter->spans();
  ASSERT_EQ(spans.size(), 2u);
  const Span& server = spans[0];
  const Span& client = spans[1];
  EXPECT_EQ(server.trace_id, client.trace_id);
  EXPECT_EQ(server.parent_span_id, client.span_id);
  EXPECT_EQ(client.attributes.at("amqprpc.reply.span_id"), server.span_id);
}

// ---- MetricsInterceptor ----

TEST(MetricsInterceptor, CountsCallsAndErrorsByMethodOnBothSides) {
  MetricsInterceptor metrics;
  std::any state;
  ClientCall fib = client_call("Fib");
  ClientCall plain = client_call("");
  Reply ok = Reply::ok("1");
  Reply bad = Reply::error(StatusCode::invalid_argument, "no");
  Reply late = Reply::error(StatusCode::deadline_exceeded, "late");

  metrics.after_call(fib, ok, 100us, state);
  metrics.after_call(fib, bad, 200us, state);
  metrics.after_call(plain, late, 5ms, state);
  Request served = served_request(trace(kTraceId, kSpanId));
  metrics.after_handler(served, bad, 300us, state);  // the same instance on a server: summed

  auto snap = metrics.snapshot();
  ASSERT_EQ(snap.size(), 2u);  // by "<queue>/<method>"
  const auto& f = snap.at("rpc_queue/Fib");
  EXPECT_EQ(f.count, 3u);
  EXPECT_EQ(f.errors, (std::map<StatusCode, std::uint64_t>{{StatusCode::invalid_argument, 2}}));
  EXPECT_EQ(f.latency.count(), 3u);
  EXPECT_EQ(f.latency.max(), 300us);
  const auto& d = snap.at("rpc_queue");
  EXPECT_EQ(d.count, 1u);
  EXPECT_EQ(d.errors, (std::map<StatusCode, std::uint64_t>{{StatusCode::deadline_exceeded, 1}}));
  EXPECT_EQ(d.latency.max(), 5ms);
}

TEST(MetricsInterceptor, CountsFromManyThreadsAddUp) {
  MetricsInterceptor metrics;
  constexpr int kThreads = 4;
  constexpr int kCalls = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::any state;
      ClientCall call = client_call(t % 2 == 0 ? "Even" : "Odd");
      Request request = served_request(trace(kTraceId, kSpanId));
      for (int i = 0; i < kCalls; ++i) {
        Reply reply = i % 10 == 0 ? Reply::error(StatusCode::unavailable, "x") : Reply::ok("");
        if (i % 2 == 0) {
          metrics.after_call(call, reply, 10us, state);
        } else {
          metrics.after_handler(request, reply, 10us, state);  // method "Fib"
        }
        if (i % 500 == 0) (void)metrics.snapshot();  // reading while others write
      }
    });
  }
  for (auto& t : threads) t.join();
  auto snap = metrics.snapshot();
  std::uint64_t total = 0, errors = 0, histogram = 0;
  for (const auto& [name, s] : snap) {
    total += s.count;
    histogram += s.latency.count();
    for (const auto& [code, n] : s.errors) errors += n;
  }
  EXPECT_EQ(total, std::uint64_t{kThreads * kCalls});
  EXPECT_EQ(histogram, total);
  EXPECT_EQ(errors, std::uint64_t{kThreads * kCalls / 10});
  EXPECT_EQ(snap.at("rpc_queue/Even").count, std::uint64_t{2 * kCalls / 2});
  EXPECT_EQ(snap.at("rpc_queue/Odd").count, std::uint64_t{2 * kCalls / 2});
  EXPECT_EQ(snap.at("rpc_queue/Fib").count, std::uint64_t{kThreads * kCalls / 2});
}

// ---- LoggingInterceptor ----

namespace {
struct LogLines {
  std::vector<std::pair<LogLevel, std::string>> lines;
  Logger logger() {
    return [this](LogLevel level, std::string_view line) { lines.emplace_back(level, line); };
  }
};
}  // namespace

TEST(LoggingInterceptor, LogsEachCallWithItsOutcomeAndLatency) {
  LogLines log;
  LoggingInterceptor logging(log.logger(), LogLevel::debug);
  std::any state;
  ClientCall fib = client_call("Fib");
  Reply ok = Reply::ok("55");
  logging.after_call(fib, ok, 1'234'567ns, state);
  Reply bad = Reply::error(StatusCode::deadline_exceeded, "no reply within 100 ms");
  logging.after_call(client_call(""), bad, 100ms, state);
  ClientCall notify = client_call("Log");
  notify.oneway = true;
  logging.after_call(notify, ok, 50us, state);

  ASSERT_EQ(log.lines.size(), 3u);
  EXPECT_EQ(log.lines[0].first, LogLevel::debug);
  EXPECT_EQ(log.lines[0].second, "call rpc_queue/Fib -> ok in 1.235 ms");
  EXPECT_EQ(log.lines[1].first, LogLevel::warning);
  EXPECT_EQ(log.lines[1].second,
            "call rpc_queue -> deadline_exceeded in 100.000 ms: no reply within 100 ms");
  EXPECT_EQ(log.lines[2].second, "notify rpc_queue/Log -> ok in 0.050 ms");
}

TEST(LoggingInterceptor, LogsEachRequestServedWithItsCaller) {
  LogLines log;
  LoggingInterceptor logging(log.logger());  // ok lines at info by default
  std::any state;
  Request request = served_request(trace(kTraceId, kSpanId));
  Reply bad = Reply::error(StatusCode::invalid_argument, "n must be at most 90");
  logging.after_handler(request, bad, 120us, state);
  request.caller.clear();
  request.method.clear();
  Reply ok = Reply::ok("1");
  logging.after_handler(request, ok, 2ms, state);

  ASSERT_EQ(log.lines.size(), 2u);
  EXPECT_EQ(log.lines[0].first, LogLevel::warning);
  EXPECT_EQ(
      log.lines[0].second,
      "served rpc_queue/Fib for 'alice' -> invalid_argument in 0.120 ms: n must be at most 90");
  EXPECT_EQ(log.lines[1].first, LogLevel::info);
  EXPECT_EQ(log.lines[1].second, "served rpc_queue -> ok in 2.000 ms");
}

TEST(LoggingInterceptor, WithoutALoggerLogsNothingNotEvenToStderr) {
  LoggingInterceptor logging{Logger{}};
  std::any state;
  Reply bad = Reply::error(StatusCode::internal, "boom");
  testing::internal::CaptureStderr();
  logging.after_call(client_call("Fib"), bad, 1ms, state);
  Request request = served_request(trace(kTraceId, kSpanId));
  logging.after_handler(request, bad, 1ms, state);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}
