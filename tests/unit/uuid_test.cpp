#include "uuid.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <set>

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
