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
