#include <gtest/gtest.h>

#include "amqprpc/options.hpp"

using amqprpc::ConnectionOptions;
using amqprpc::StatusCode;

TEST(Uri, FullUriSetsEveryPart) {
  auto o = ConnectionOptions::from_uri("amqp://alice:s3cret@broker.example:5673/prod");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->user, "alice");
  EXPECT_EQ(o->password, "s3cret");
  EXPECT_EQ(o->host, "broker.example");
  EXPECT_EQ(o->port, 5673);
  EXPECT_EQ(o->vhost, "prod");
  EXPECT_FALSE(o->tls.enabled);
}

TEST(Uri, DefaultsFollowTheSpec) {
  auto o = ConnectionOptions::from_uri("amqp://");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->host, "localhost");
  EXPECT_EQ(o->port, 5672);
  EXPECT_EQ(o->user, "guest");
  EXPECT_EQ(o->password, "guest");
  EXPECT_EQ(o->vhost, "/");

  auto tls = ConnectionOptions::from_uri("amqps://host");
  ASSERT_TRUE(tls.ok());
  EXPECT_TRUE(tls->tls.enabled);
  EXPECT_EQ(tls->port, 5671);
  EXPECT_TRUE(tls->tls.verify_peer);
}

TEST(Uri, PercentDecodingInEveryPart) {
  auto o = ConnectionOptions::from_uri("amqp://us%40er:p%3Aa%2Fss@h%6Fst/%2F");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->user, "us@er");
  EXPECT_EQ(o->password, "p:a/ss");
  EXPECT_EQ(o->host, "host");
  EXPECT_EQ(o->vhost, "/");
  auto v = ConnectionOptions::from_uri("amqp://h/a%2fb");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->vhost, "a/b");
}

TEST(Uri, UserWithoutPasswordKeepsDefaultPassword) {
  auto o = ConnectionOptions::from_uri("amqp://bob@h");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->user, "bob");
  EXPECT_EQ(o->password, "guest");
  auto empty = ConnectionOptions::from_uri("amqp://bob:@h");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->password, "");
}

TEST(Uri, Ipv6LiteralWithAndWithoutPort) {
  auto o = ConnectionOptions::from_uri("amqp://[::1]:5999/v");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->port, 5999);
  auto p = ConnectionOptions::from_uri("amqp://[fe80::1]");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->host, "fe80::1");
  EXPECT_EQ(p->port, 5672);
}

TEST(Uri, EmptyPathMeansDefaultVhost) {
  auto o = ConnectionOptions::from_uri("amqp://h:1234/");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->vhost, "/");
  EXPECT_EQ(o->port, 1234);
}

TEST(Uri, QueryParameters) {
  auto o =
      ConnectionOptions::from_uri("amqp://h/?heartbeat=5&connection_timeout=2500&frame_max=8192");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->heartbeat, std::chrono::seconds(5));
  EXPECT_EQ(o->connect_timeout, std::chrono::milliseconds(2500));
  EXPECT_EQ(o->frame_max, 8192);

  auto tls = ConnectionOptions::from_uri(
      "amqps://h?cacertfile=%2Ftmp%2Fca.pem&certfile=c.pem&keyfile=k.pem&verify=verify_none");
  ASSERT_TRUE(tls.ok()) << tls.status().to_string();
  EXPECT_EQ(tls->tls.ca_file, "/tmp/ca.pem");
  EXPECT_EQ(tls->tls.cert_file, "c.pem");
  EXPECT_EQ(tls->tls.key_file, "k.pem");
  EXPECT_FALSE(tls->tls.verify_peer);
}

// Each bad URI must be refused with invalid_argument and a message naming the problem.
struct BadUri {
  const char* uri;
  const char* mentions;
};

class BadUriTest : public testing::TestWithParam<BadUri> {};

TEST_P(BadUriTest, IsRefusedWithAClearMessage) {
  auto o = ConnectionOptions::from_uri(GetParam().uri);
  ASSERT_FALSE(o.ok()) << GetParam().uri;
  EXPECT_EQ(o.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(o.status().message().find(GetParam().mentions), std::string::npos)
      << o.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Uri, BadUriTest,
    testing::Values(BadUri{"http://h", "scheme 'http'"}, BadUri{"localhost:5672", "no scheme"},
                    BadUri{"amqp://::1", "brackets"}, BadUri{"amqp://u:p%00w@h", "NUL"},
                    BadUri{"amqp://a b@h", "position 8"},
                    BadUri{"amqp://h%2Fx", "host name contains"},
                    BadUri{"amqp://[::1%25eth0]", "IPv6 address contains"},
                    BadUri{"amqp://u:pa/ss@h:5672/v", "percent-encode"},
                    BadUri{"amqp://h:port", "port 'port'"}, BadUri{"amqp://h:0", "port '0'"},
                    BadUri{"amqp://h:65536", "port '65536'"}, BadUri{"amqp://h/a/b", "%2F"},
                    BadUri{"amqp://h/%zz", "percent-escape '%zz'"},
                    BadUri{"amqp://h/%2", "truncated"}, BadUri{"amqp://u:p%@h", "password"},
                    BadUri{"amqp://[::1", "closing ']'"}, BadUri{"amqp://[::1]x", "after the IPv6"},
                    BadUri{"amqp://h?heartbeat=-1", "heartbeat"},
                    BadUri{"amqp://h?heartbeat=abc", "heartbeat 'abc'"},
                    BadUri{"amqp://h?bogus=1", "unknown query parameter 'bogus'"},
                    BadUri{"amqp://h?heartbeat", "has no value"},
                    BadUri{"amqp://h?cacertfile=x", "needs an amqps"},
                    BadUri{"amqps://h?verify=maybe", "verify_peer or verify_none"},
                    BadUri{"amqp://h#frag", "fragments"}));

TEST(Uri, ToStringMasksThePassword) {
  auto o = ConnectionOptions::from_uri("amqp://alice:topsecret@h:5/v");
  ASSERT_TRUE(o.ok());
  std::string shown = o->to_string();
  EXPECT_EQ(shown.find("topsecret"), std::string::npos);
  EXPECT_EQ(shown, "amqp://alice:****@h:5/v");
  auto d = ConnectionOptions::from_uri("amqp://h");
  EXPECT_EQ(d->to_string(), "amqp://guest:****@h:5672/%2F");
}

TEST(Uri, ErrorsDoNotEchoThePassword) {
  auto o = ConnectionOptions::from_uri("amqp://u:hunter2@h:notaport");
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().message().find("hunter2"), std::string::npos) << o.status().message();
}

TEST(Uri, SchemeIsCaseInsensitiveAndAnEmptyPortMeansTheDefault) {
  auto o = ConnectionOptions::from_uri("AMQPS://h:/v");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_TRUE(o->tls.enabled);
  EXPECT_EQ(o->port, 5671);
}

TEST(Uri, NoErrorEchoesAPassword) {
  for (const char* uri : {"amqp:/u:hunter2@h", "u:hunter2@h", "amqp://u:hun/ter2@h:1/v",
                          "amqp://u:hun?ter2@h", "amqp://u:hun#ter2@h", "amqp://u:hunter2@h:x"}) {
    auto o = ConnectionOptions::from_uri(uri);
    ASSERT_FALSE(o.ok()) << uri;
    EXPECT_EQ(o.status().message().find("hunter2"), std::string::npos) << o.status().message();
    EXPECT_EQ(o.status().message().find("ter2"), std::string::npos) << o.status().message();
  }
}

TEST(Uri, MaskingAPasswordMadeOfStarsTerminates) {
  // The mask itself contains the password's pieces: masking must not loop forever.
  auto o = ConnectionOptions::from_uri("amqp://u:**/**@h:x");
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().code(), StatusCode::invalid_argument);
}

TEST(Uri, APasswordCutByAnUnescapedSlashBeforeAPortIsRefusedNotTakenForAVhost) {
  // "hid:2024/Winter" is a password: the '/' ends the authority at "hid:2024" (host hid, port
  // 2024), and the rest would have been the vhost "Winter@host:port", printed everywhere.
  for (const char* uri : {"amqp://hid:2024/Winter@127.0.0.1:46672", "amqp://u:2024/Winter@h",
                          "amqps://u:1/Winter@h:5671/vh"}) {
    auto o = ConnectionOptions::from_uri(uri);
    ASSERT_FALSE(o.ok()) << uri << " parsed as " << o->to_string();
    EXPECT_EQ(o.status().code(), StatusCode::invalid_argument);
    EXPECT_EQ(o.status().message().find("Winter"), std::string::npos) << o.status().message();
    EXPECT_NE(o.status().message().find("%2F"), std::string::npos) << o.status().message();
  }
  auto escaped = ConnectionOptions::from_uri("amqp://hid:2024%2FWinter@127.0.0.1:46672/v%40h");
  ASSERT_TRUE(escaped.ok()) << escaped.status().to_string();
  EXPECT_EQ(escaped->password, "2024/Winter");
  EXPECT_EQ(escaped->vhost, "v@h");
  EXPECT_EQ(escaped->to_string().find("Winter"), std::string::npos);
}

TEST(Uri, MaxMessageSizeIsAQueryParameter) {
  auto o = ConnectionOptions::from_uri("amqp://h/?max_message_size=1048576");
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->max_message_size, 1048576u);
  EXPECT_EQ(ConnectionOptions::from_uri("amqp://h/").value().max_message_size, 16u << 20);
  EXPECT_FALSE(ConnectionOptions::from_uri("amqp://h/?max_message_size=0").ok());
  EXPECT_FALSE(ConnectionOptions::from_uri("amqp://h/?max_message_size=lots").ok());
}
