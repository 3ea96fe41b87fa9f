// A program built against the installed amqprpc package: serves a queue and calls it once.
#include <amqprpc/client.hpp>
#include <amqprpc/server.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  const char* url = std::getenv("AMQP_URL");
  auto conn = amqprpc::ConnectionOptions::from_uri(url ? url : "amqp://");
  if (!conn) return 2;
  std::string queue = argc > 1 ? argv[1] : "package-test";
  amqprpc::ServerOptions so;
  so.connection = *conn;
  so.queue = queue;
  auto server = amqprpc::Server::start(
      so, [](const amqprpc::Request& r) { return amqprpc::Reply::ok("installed:" + r.body); });
  if (!server) return 3;
  amqprpc::ClientOptions co;
  co.connection = *conn;
  auto client = amqprpc::Client::connect(co);
  if (!client) return 4;
  std::printf("%s\n", (*client)->call(queue, "ok").c_str());
  return 0;
}
