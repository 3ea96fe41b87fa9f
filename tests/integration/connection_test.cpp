// Connecting: every way it can fail ends in a clear status, within the connect timeout.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amqprpc/client.hpp"
#include "amqprpc/server.hpp"
#include "support/broker.hpp"

using namespace amqprpc;
using namespace std::chrono_literals;

namespace {

Result<std::unique_ptr<Client>> connect_with(ConnectionOptions o) {
  ClientOptions c;
  c.connection = std::move(o);
  return Client::connect(c);
}

// A TCP listener that accepts connections into its backlog and never says a word.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 4) != 0) {
      throw std::runtime_error("cannot listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

 private:
  int fd_;
  std::uint16_t port_;
};

}  // namespace

TEST(Connection, GoodCredentialsConnect) {
  auto c = connect_with(testbroker::options());
  ASSERT_TRUE(c.ok()) << c.status().to_string();
}

TEST(Connection, WrongPasswordIsPermissionDeniedAndNotEchoed) {
  auto o = testbroker::options();
  o.password = "definitely-wrong-pw";
  auto c = connect_with(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::permission_denied) << c.status().to_string();
  EXPECT_EQ(c.status().message().find("definitely-wrong-pw"), std::string::npos);
  EXPECT_NE(c.status().message().find("****"), std::string::npos) << c.status().message();
}

TEST(Connection, UnknownVhostIsPermissionDenied) {
  auto o = testbroker::options();
  o.vhost = "no-such-vhost";
  auto c = connect_with(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::permission_denied) << c.status().to_string();
  EXPECT_NE(c.status().message().find("no-such-vhost"), std::string::npos) << c.status().message();
}

TEST(Connection, NothingListeningIsUnavailable) {
  auto o = testbroker::options();
  o.host = "127.0.0.1";
  o.port = 1;  // nothing listens on port 1 here
  auto c = connect_with(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::unavailable);
  EXPECT_NE(c.status().message().find("127.0.0.1:1"), std::string::npos) << c.status().message();
}

TEST(Connection, APeerThatNeverSpeaksAmqpTimesOutInsteadOfHanging) {
  SilentListener silent;
  auto o = testbroker::options();
  o.host = "127.0.0.1";
  o.port = silent.port();
  o.connect_timeout = 500ms;
  auto start = std::chrono::steady_clock::now();
  auto c = connect_with(o);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::unavailable);
  EXPECT_NE(c.status().message().find("no AMQP handshake within 500 ms"), std::string::npos)
      << c.status().message();
  EXPECT_LT(took, 10s) << "connect must be bounded by connect_timeout";
}

TEST(Connection, UnresolvableHostIsUnavailable) {
  auto o = testbroker::options();
  o.host = "no-such-host.invalid";
  auto c = connect_with(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::unavailable);
}

TEST(Connection, ServerReportsConnectFailuresToo) {
  ServerOptions s;
  s.connection = testbroker::options();
  s.connection.password = "nope";
  auto server = Server::start(s, [](const Request&) { return Reply::ok(""); });
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), StatusCode::permission_denied);
}
