#include "fib.hpp"

#include <gtest/gtest.h>

using amqprpc::StatusCode;

TEST(Fib, SmallValuesMatchTheSequence) {
  const char* expected[] = {"0", "1", "1", "2", "3", "5", "8", "13", "21", "34", "55"};
  for (std::uint64_t n = 0; n <= 10; ++n) EXPECT_EQ(fib::fibonacci(n), expected[n]) << n;
  EXPECT_EQ(fib::fibonacci(30), "832040");
}

TEST(Fib, BigValuesAreExact) {
  EXPECT_EQ(fib::fibonacci(90), "2880067194370816120");   // fits in 64 bits
  EXPECT_EQ(fib::fibonacci(93), "12200160415121876738");  // just over int64
  EXPECT_EQ(fib::fibonacci(94), "19740274219868223167");  // over uint64
  EXPECT_EQ(fib::fibonacci(100), "354224848179261915075");
  EXPECT_EQ(fib::fibonacci(300), "222232244629420445529739893461909967206666939096499764990979600");
}

TEST(Fib, TenThousandHasTheKnownDigits) {
  std::string f = fib::fibonacci(10'000);
  EXPECT_EQ(f.size(), 2090u);
  EXPECT_EQ(f.substr(0, 20), "33644764876431783266");
  EXPECT_EQ(f.substr(f.size() - 20), "66073310059947366875");
}

TEST(Fib, SatisfiesTheRecurrenceAtLargeN) {
  // fib(n) + fib(n+1) == fib(n+2), checked by decimal addition independent of the limb code.
  auto add = [](const std::string& a, const std::string& b) {
    std::string r;
    int carry = 0;
    for (std::size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
      int d = carry;
      if (i < a.size()) d += a[a.size() - 1 - i] - '0';
      if (i < b.size()) d += b[b.size() - 1 - i] - '0';
      r.insert(r.begin(), static_cast<char>('0' + d % 10));
      carry = d / 10;
    }
    return r;
  };
  for (std::uint64_t n : {500u, 1234u, 9998u}) {
    EXPECT_EQ(add(fib::fibonacci(n), fib::fibonacci(n + 1)), fib::fibonacci(n + 2)) << n;
  }
}

TEST(FibParse, AcceptsWhatIntWouldForPlainNumbers) {
  EXPECT_EQ(*fib::parse_n("30", 100), 30u);
  EXPECT_EQ(*fib::parse_n(" 7\n", 100), 7u);
  EXPECT_EQ(*fib::parse_n("+5", 100), 5u);
  EXPECT_EQ(*fib::parse_n("0", 100), 0u);
  EXPECT_EQ(*fib::parse_n("100", 100), 100u);
}

TEST(FibParse, RefusesBadInputWithClearErrors) {
  struct Case {
    std::string body;
    const char* mentions;
  };
  const Case cases[] = {
      {"abc", "not a decimal number: 'abc'"},
      {"", "empty request"},
      {"   ", "empty request"},
      {"-1", "n must be >= 0"},
      {"101", "over this server's limit of 100"},
      {"99999999999999999999999999", "over this server's limit"},
      {"1.5", "not a decimal number"},
      {"1e3", "not a decimal number"},
      {"+", "not a decimal number"},
      {std::string("1\0 2", 4), "not a decimal number"},
      {"\xff\xfe",
       "not a decimal number: '?"
       "?'"},
  };
  for (const auto& c : cases) {
    auto r = fib::parse_n(c.body, 100);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_EQ(r.status().code(), StatusCode::invalid_argument);
    EXPECT_NE(r.status().message().find(c.mentions), std::string::npos) << r.status().message();
  }
}

TEST(FibHandle, TurnsBadInputIntoAnErrorReply) {
  auto ok = fib::handle("10", 100);
  EXPECT_TRUE(ok.status.ok());
  EXPECT_EQ(ok.body, "55");
  auto bad = fib::handle("ten", 100);
  EXPECT_EQ(bad.status.code(), StatusCode::invalid_argument);
}
