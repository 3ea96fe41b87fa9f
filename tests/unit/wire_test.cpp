#include "protocol/wire.hpp"

#include <gtest/gtest.h>

using namespace amqprpc;
namespace wire = amqprpc::detail::wire;

TEST(Wire, SuccessReplyIsTheBodyAloneLikeTheSeed) {
  detail::amqp::Properties props;
  std::string body;
  wire::encode_reply(Reply::ok("832040"), "corr-1", props, body);
  EXPECT_EQ(body, "832040");
  EXPECT_EQ(props.correlation_id, "corr-1");
  EXPECT_TRUE(props.headers.empty());
  EXPECT_TRUE(props.content_type.empty());
}

TEST(Wire, ErrorReplyCarriesCodeAndMessage) {
  detail::amqp::Properties props;
  std::string body;
  wire::encode_reply(Reply::error(StatusCode::invalid_argument, "bad n"), "c", props, body);
  EXPECT_EQ(props.headers.at("x-rpc-status"), "invalid_argument");
  EXPECT_EQ(props.headers.at("x-rpc-message"), "bad n");
  EXPECT_EQ(props.content_type, "text/plain");
  EXPECT_EQ(body, "bad n");

  Reply back = wire::decode_reply(std::move(props), std::move(body));
  EXPECT_EQ(back.status.code(), StatusCode::invalid_argument);
  EXPECT_EQ(back.status.message(), "bad n");
}

TEST(Wire, PlainReplyFromASeedServerIsOk) {
  Reply r = wire::decode_reply(detail::amqp::Properties{}, "55");
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.body, "55");
}

TEST(Wire, UnknownStatusNameBecomesUnknownAndSaysSo) {
  detail::amqp::Properties props;
  props.headers["x-rpc-status"] = "quota_blown";
  Reply r = wire::decode_reply(std::move(props), "over quota");
  EXPECT_EQ(r.status.code(), StatusCode::unknown);
  EXPECT_NE(r.status.message().find("quota_blown"), std::string::npos);
  EXPECT_NE(r.status.message().find("over quota"), std::string::npos);
}

TEST(Wire, UserHeadersSurviveBothWays) {
  detail::amqp::Properties props;
  std::string body;
  Reply reply = Reply::ok("x");
  reply.headers["trace-id"] = "abc";
  wire::encode_reply(std::move(reply), "c", props, body);
  Reply back = wire::decode_reply(std::move(props), std::move(body));
  EXPECT_EQ(back.headers.at("trace-id"), "abc");
}

TEST(Wire, ARequestCarriesTheCallersOptionsAndItsDeadlineTwice) {
  CallOptions o;
  o.headers["tenant"] = "t1";
  o.content_type = "application/json";
  o.priority = 4;
  const std::int64_t before = wire::epoch_ms();
  const std::string correlation_id = "corr";
  const std::string reply_to = "reply-q";
  wire::OutgoingRequest request(o, correlation_id, reply_to, std::chrono::milliseconds(1500));
  auto props = detail::amqp::to_properties(request.props());
  EXPECT_EQ(props.correlation_id, "corr");
  EXPECT_EQ(props.reply_to, "reply-q");
  EXPECT_EQ(props.content_type, "application/json");
  EXPECT_EQ(props.priority, 4);
  EXPECT_EQ(props.expiration, "1500");
  EXPECT_EQ(props.headers.at("tenant"), "t1");
  auto deadline = wire::int_header(props.headers, wire::kDeadlineHeader);
  ASSERT_TRUE(deadline.has_value());
  EXPECT_GE(*deadline, before + 1500);
  EXPECT_LE(*deadline, wire::epoch_ms() + 1500);
}

TEST(Wire, ARequestsOwnHeadersWinOverTheCallersAndViewItsStringsUncopied) {
  CallOptions o;
  o.headers["x-rpc-deadline"] = "1";  // the caller's cannot pass for the library's
  o.headers["tenant"] = "t1";
  o.method = "Add";
  const std::string correlation_id = "corr";
  TraceContext trace;
  trace.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  trace.span_id = "00f067aa0ba902b7";
  trace.tracestate = "vendor=1";
  wire::OutgoingRequest request(o, correlation_id, "q", std::chrono::milliseconds(100), false,
                                trace);
  EXPECT_EQ(request.props().correlation_id.data(), correlation_id.data()) << "a view, no copy";
  const std::string credit = "32";
  request.add_header(wire::kStreamCreditHeader, credit);
  request.add_header(wire::kStreamCreditHeader, std::string_view("64"));  // replaces
  request.set_user_id(std::string_view("guest"));
  auto props = detail::amqp::to_properties(request.props());
  EXPECT_GT(wire::int_header(props.headers, wire::kDeadlineHeader).value_or(0), 1);
  EXPECT_EQ(props.headers.at("tenant"), "t1");
  EXPECT_EQ(props.headers.at("x-rpc-method"), "Add");
  EXPECT_EQ(props.headers.at("traceparent"), trace.traceparent());
  EXPECT_EQ(props.headers.at("tracestate"), "vendor=1");
  EXPECT_EQ(props.headers.at("x-rpc-stream-credit"), "64");
  EXPECT_EQ(props.user_id, "guest");
  EXPECT_EQ(props.headers.size(), 6u);
  // What is written is what the server reads back.
  auto read = wire::trace_of(props.headers);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->trace_id, trace.trace_id);
  EXPECT_EQ(read->span_id, trace.span_id);
  EXPECT_TRUE(read->sampled);
  trace.sampled = false;
  wire::OutgoingRequest unsampled(o, correlation_id, "q", std::chrono::milliseconds(100), false,
                                  trace);
  EXPECT_EQ(detail::amqp::to_properties(unsampled.props()).headers.at("traceparent"),
            trace.traceparent());
}

TEST(Wire, ARequestWithNoTimeLeftStillExpiresInOneMillisecond) {
  const CallOptions none;
  wire::OutgoingRequest request(none, "c", "r", std::chrono::milliseconds(-20));
  EXPECT_EQ(request.props().expiration, "1");
}

TEST(Wire, AServerSeesTheDeliveryAsARequest) {
  detail::amqp::Delivery d;
  d.body = "10";
  d.redelivered = true;
  d.props.correlation_id = "c";
  d.props.reply_to = "r";
  d.props.content_type = "text/plain";
  d.props.headers["h"] = "v";
  Request req = wire::decode_request(std::move(d), "rpc_queue");
  EXPECT_EQ(req.queue, "rpc_queue");
  EXPECT_EQ(req.body, "10");
  EXPECT_TRUE(req.redelivered);
  EXPECT_EQ(req.correlation_id, "c");
  EXPECT_EQ(req.reply_to, "r");
  EXPECT_EQ(req.content_type, "text/plain");
  EXPECT_EQ(req.headers.at("h"), "v");
}

TEST(Wire, ExpiredOnlyWhenTheDeadlineHeaderIsANumberInThePast) {
  Headers h;
  EXPECT_FALSE(wire::expired(h, 1000));
  h["x-rpc-deadline"] = "999";
  EXPECT_TRUE(wire::expired(h, 1000));
  h["x-rpc-deadline"] = "1000";
  EXPECT_FALSE(wire::expired(h, 1000));
  h["x-rpc-deadline"] = "-5";
  EXPECT_FALSE(wire::expired(h, 1000));
}

TEST(Wire, AMethodAndAOneWayMarkTravelInHeaders) {
  CallOptions o;
  o.method = "Divide";
  wire::OutgoingRequest request(o, "c", "", std::chrono::milliseconds(100), /*oneway=*/true);
  auto props = detail::amqp::to_properties(request.props());
  EXPECT_EQ(props.headers.at("x-rpc-method"), "Divide");
  EXPECT_EQ(props.headers.at("x-rpc-oneway"), "1");
  EXPECT_TRUE(props.reply_to.empty());
  detail::amqp::Delivery d;
  d.props = props;
  Request req = wire::decode_request(std::move(d), "q");
  EXPECT_EQ(req.method, "Divide");
  EXPECT_TRUE(req.oneway);

  const CallOptions none;
  wire::OutgoingRequest plain_request(none, "c", "r", std::chrono::milliseconds(100));
  auto plain = detail::amqp::to_properties(plain_request.props());
  EXPECT_EQ(plain.headers.count("x-rpc-method"), 0u) << "no method: the seed's request";
  EXPECT_EQ(plain.headers.count("x-rpc-oneway"), 0u);
}

TEST(Wire, AnErrorDetailIsTheBodyAndComesBackWithItsType) {
  detail::amqp::Properties props;
  std::string body;
  Status with_detail{StatusCode::invalid_argument, "divide by zero",
                     StatusDetail{"calc.MathError", "application/protobuf", "\x0a\x01x"}};
  wire::encode_reply(Reply{with_detail, {}, {}, {}}, "c", props, body);
  EXPECT_EQ(props.headers.at("x-rpc-detail-type"), "calc.MathError");
  EXPECT_EQ(props.headers.at("x-rpc-message"), "divide by zero");
  EXPECT_EQ(props.content_type, "application/protobuf");
  EXPECT_EQ(body, "\x0a\x01x");
  Reply back = wire::decode_reply(std::move(props), std::move(body));
  EXPECT_EQ(back.status, with_detail);
  ASSERT_NE(back.status.detail(), nullptr);
  EXPECT_EQ(back.status.detail()->type, "calc.MathError");
}

TEST(Wire, UnimplementedHasItsWireName) {
  EXPECT_EQ(to_string(StatusCode::unimplemented), "unimplemented");
  EXPECT_EQ(status_code_from_string("unimplemented"), StatusCode::unimplemented);
}

TEST(WireNames, AreTheQueueNamePlusASuffixWhenTheyFit) {
  EXPECT_EQ(wire::gather_exchange_for("rpc_queue"), "rpc_queue.gather");
  EXPECT_EQ(wire::roster_queue_for("rpc_queue"), "rpc_queue.roster");
  EXPECT_EQ(wire::dead_letter_queue_for("rpc_queue"), "rpc_queue.dead-letter");
  EXPECT_EQ(wire::derived_name("q", ".x"), "q.x");
  const std::string exact(255 - 7, 'a');  // ".gather" and ".roster" are 7 bytes
  EXPECT_EQ(wire::gather_exchange_for(exact), exact + ".gather");
  EXPECT_EQ(wire::roster_queue_for(exact), exact + ".roster");
}

TEST(WireNames, TooLongAreCutAndMarkedWithAHashOfTheWholeNameAndFitIn255Bytes) {
  const std::string longest(255, 'q');
  for (const std::string& name :
       {wire::gather_exchange_for(longest), wire::roster_queue_for(longest),
        wire::dead_letter_queue_for(longest)}) {
    EXPECT_EQ(name.size(), 255u) << name;
    EXPECT_EQ(name.find('~'), 255u - 17 - (name.size() - name.rfind('.')));
  }
  const std::string exchange = wire::gather_exchange_for(longest);
  EXPECT_EQ(exchange, std::string(231, 'q') + "~" + exchange.substr(232, 16) + ".gather");
  // The same prefix, a different name: a different hash, so no two services share a roster.
  const std::string other = std::string(254, 'q') + "r";
  EXPECT_NE(wire::roster_queue_for(other), wire::roster_queue_for(longest));
  EXPECT_NE(wire::gather_exchange_for(other), wire::gather_exchange_for(longest));
  // One byte over: cut as well (256 would not do).
  EXPECT_LE(wire::roster_queue_for(std::string(255 - 6, 'a')).size(), 255u);
}

TEST(WireNames, TheHashIsFnv1a64OfTheWholeQueueNameInLowercaseHex) {
  // Servers and clients in other languages must derive the same names: pinned here.
  // FNV-1a 64 of 255 'q' bytes, computed independently (the Python of docs/PROTOCOL.md).
  const std::string longest(255, 'q');
  const std::string roster = wire::roster_queue_for(longest);
  const std::string hash = roster.substr(roster.find('~') + 1, 16);
  EXPECT_EQ(hash, "97924f37c92622b6");
  EXPECT_EQ(hash, wire::gather_exchange_for(longest).substr(232, 16))
      << "one hash per queue name, whatever the suffix";
}

TEST(WireNames, ACutNeverSplitsAUtf8Character) {
  std::string accents;
  while (accents.size() < 254) accents += "\xC3\xA9";  // é, two bytes each
  for (const std::string& name :
       {wire::gather_exchange_for(accents), wire::roster_queue_for(accents)}) {
    EXPECT_LE(name.size(), 255u);
    const std::string prefix = name.substr(0, name.find('~'));
    EXPECT_EQ(prefix.size() % 2, 0u) << "cut between characters";
    EXPECT_EQ(accents.rfind(prefix, 0), 0u);
  }
}

TEST(WireNames, AnInstanceQueueIsNamedAfterItsServiceAndFitsToo) {
  EXPECT_EQ(wire::instance_queue_for("rpc_queue", "0123456789abcdef"),
            "rpc_queue.instance.0123456789abcdef");
  const std::string name = wire::instance_queue_for(std::string(255, 'q'), "0123456789abcdef");
  EXPECT_EQ(name.size(), 255u);
  EXPECT_TRUE(name.ends_with(".instance.0123456789abcdef")) << name;
}

TEST(Wire, ANewSpanOfAParentKeepsItsTraceFlagsAndStateAndTakesASpanIdOfItsOwn) {
  amqprpc::detail::UuidGenerator ids;
  amqprpc::TraceContext parent;
  parent.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  parent.span_id = "00f067aa0ba902b7";
  parent.sampled = false;
  parent.tracestate = "congo=t61rcWkgMzE";
  const amqprpc::TraceContext copied = amqprpc::detail::wire::new_span(&parent, ids);
  const amqprpc::TraceContext moved =
      amqprpc::detail::wire::new_span(std::optional<amqprpc::TraceContext>(parent), ids);
  for (const auto& span : {copied, moved}) {
    EXPECT_EQ(span.trace_id, parent.trace_id);
    EXPECT_EQ(span.sampled, parent.sampled);
    EXPECT_EQ(span.tracestate, parent.tracestate);
    EXPECT_NE(span.span_id, parent.span_id);
    EXPECT_TRUE(span.valid());
  }
  EXPECT_NE(copied.span_id, moved.span_id);

  const amqprpc::TraceContext root = amqprpc::detail::wire::new_span(std::nullopt, ids);
  EXPECT_TRUE(root.valid());
  EXPECT_NE(root.trace_id, parent.trace_id) << "no parent: a new trace";
  EXPECT_TRUE(root.sampled);
  EXPECT_TRUE(root.tracestate.empty());
}
