#include "amqprpc/status.hpp"

#include <gtest/gtest.h>

using amqprpc::Result;
using amqprpc::RpcError;
using amqprpc::Status;
using amqprpc::StatusCode;

TEST(Status, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.to_string(), "ok");
}

TEST(Status, CodesRoundTripThroughTheirWireNames) {
  for (auto code :
       {StatusCode::ok, StatusCode::cancelled, StatusCode::invalid_argument,
        StatusCode::deadline_exceeded, StatusCode::not_found, StatusCode::permission_denied,
        StatusCode::resource_exhausted, StatusCode::failed_precondition, StatusCode::unavailable,
        StatusCode::internal, StatusCode::unknown}) {
    auto name = amqprpc::to_string(code);
    auto back = amqprpc::status_code_from_string(name);
    ASSERT_TRUE(back.has_value()) << name;
    EXPECT_EQ(*back, code);
  }
  EXPECT_EQ(amqprpc::to_string(StatusCode::deadline_exceeded), "deadline_exceeded");
  EXPECT_FALSE(amqprpc::status_code_from_string("DEADLINE").has_value());
}

TEST(Status, ToStringJoinsCodeAndMessage) {
  Status s{StatusCode::unavailable, "no route"};
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.to_string(), "unavailable: no route");
}

TEST(Result, HoldsAValueOrAStatus) {
  Result<int> good = 42;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  EXPECT_TRUE(good.status().ok());

  Result<int> bad = Status{StatusCode::not_found, "gone"};
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::not_found);
  try {
    (void)bad.value();
    FAIL() << "value() of an error must throw";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), StatusCode::not_found);
    EXPECT_STREQ(e.what(), "not_found: gone");
  }
}
