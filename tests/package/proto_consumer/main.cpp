// Serves pkgtest.v1.Greeter through the generated base and calls it through the generated stub,
// against the installed package. Prints "generated:<greeting>:<Ping's status code>".
//   proto_consumer QUEUE           (needs AMQP_URL)
//   proto_consumer QUEUE --serve   serves until SIGTERM or SIGINT (prints "serving" when ready)
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "amqprpc/server.hpp"
#include "greeter.amqprpc.h"

namespace {

class Greeter : public pkgtest::v1::GreeterService {
 public:
  amqprpc::Result<pkgtest::v1::HelloReply> Hello(const pkgtest::v1::HelloRequest& request,
                                                 const amqprpc::Request&) override {
    pkgtest::v1::HelloReply reply;
    reply.set_greeting("hello, " + request.name());
    return reply;
  }
};

}  // namespace

int main(int argc, char** argv) {
  const char* url = std::getenv("AMQP_URL");
  const bool serve_only = argc == 3 && std::strcmp(argv[2], "--serve") == 0;
  if ((argc != 2 && !serve_only) || url == nullptr) {
    std::cerr << "usage: AMQP_URL=... proto_consumer QUEUE [--serve]\n";
    return 2;
  }
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before any thread starts
  auto connection = amqprpc::ConnectionOptions::from_uri(url);
  if (!connection) {
    std::cerr << connection.status().to_string() << "\n";
    return 2;
  }
  Greeter greeter;
  amqprpc::ServerOptions server_options;
  server_options.connection = *connection;
  auto server = amqprpc::Server::start(server_options, greeter.service(argv[1]));
  if (!server) {
    std::cerr << "server: " << server.status().to_string() << "\n";
    return 1;
  }
  if (serve_only) {
    std::cout << "serving" << std::endl;
    int signal = 0;
    sigwait(&stop_signals, &signal);
    (*server)->stop();
    return 0;
  }
  amqprpc::ClientOptions client_options;
  client_options.connection = *connection;
  auto client = amqprpc::Client::connect(client_options);
  if (!client) {
    std::cerr << "client: " << client.status().to_string() << "\n";
    return 1;
  }
  pkgtest::v1::GreeterClient stub(**client, argv[1]);
  pkgtest::v1::HelloRequest request;
  request.set_name("package");
  auto hello = stub.Hello(request);
  if (!hello) {
    std::cerr << "Hello: " << hello.status().to_string() << "\n";
    return 1;
  }
  auto ping = stub.Ping(google::protobuf::Empty{});
  std::cout << "generated:" << hello->greeting() << ":" << amqprpc::to_string(ping.status().code())
            << std::endl;
  (*server)->stop();
  return 0;
}
