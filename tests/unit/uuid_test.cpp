#include "uuid.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>
#include <vector>

TEST(Uuid, IsAVersion4UuidInCanonicalForm) {
  amqprpc::detail::UuidGenerator gen;
  const std::regex v4("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  for (int i = 0; i < 1000; ++i) {
    std::string id = gen.next();
    ASSERT_TRUE(std::regex_match(id, v4)) << id;
  }
}

TEST(Uuid, TwoGeneratorsNeverRepeatEachOther) {
  amqprpc::detail::UuidGenerator a, b;
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) {
    ASSERT_TRUE(seen.insert(a.next()).second);
    ASSERT_TRUE(seen.insert(b.next()).second);
  }
}

TEST(Uuid, TraceAndSpanIdsAreLowercaseHexOfTheirSizeAndEveryDigitVaries) {
  amqprpc::detail::UuidGenerator gen;
  const std::regex trace("^[0-9a-f]{32}$");
  const std::regex span("^[0-9a-f]{16}$");
  std::vector<std::set<char>> trace_digits(32), span_digits(16);
  for (int i = 0; i < 1000; ++i) {
    const std::string t = gen.trace_id();
    const std::string s = gen.span_id();
    ASSERT_TRUE(std::regex_match(t, trace)) << t;
    ASSERT_TRUE(std::regex_match(s, span)) << s;
    for (std::size_t k = 0; k < t.size(); ++k) trace_digits[k].insert(t[k]);
    for (std::size_t k = 0; k < s.size(); ++k) span_digits[k].insert(s[k]);
  }
  // Random ids: in 1000 draws every position takes (nearly) all 16 digits.
  for (const auto& d : trace_digits) EXPECT_GE(d.size(), 12u);
  for (const auto& d : span_digits) EXPECT_GE(d.size(), 12u);
}
