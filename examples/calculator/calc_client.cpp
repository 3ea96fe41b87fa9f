// The calculator demo's client: `calc_client divide 1 0` calls calc.Calculator's Divide through
// the generated stub, calc::CalculatorClient, and prints the value, or the error with its
// MathError detail (exit code 1; see tools/common/common.hpp for the others).
#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>
#include <map>

#include "amqprpc/client.hpp"
#include "calculator.amqprpc.h"
#include "common/cli.hpp"
#include "common/common.hpp"

namespace tools = amqprpc::tools;

int main(int argc, char** argv) {
  CLI::App app{"calc_client: asks a calc_server to add, subtract, multiply or divide"};
  std::string url;
  std::string queue = calc::CalculatorClient::kDefaultQueue;
  double timeout_s = 30;
  std::string operation;
  double a = 0;
  double b = 0;
  tools::add_url_option(app, url);
  app.add_option("--queue", queue, "queue the server consumes")->capture_default_str();
  app.add_option("--timeout", timeout_s, "seconds to wait for the reply")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 30.0 * 24 * 3600));
  app.add_option("operation", operation, "add, subtract, multiply or divide")
      ->required()
      ->check(CLI::IsMember({"add", "subtract", "multiply", "divide"}));
  app.add_option("a", a, "first operand")->required();
  app.add_option("b", b, "second operand")->required();
  app.footer(
      "Exit codes: 0 ok, 1 error reply, 2 usage, 3 timeout, 4 broker or server unreachable.");
  if (auto exit_code = tools::parse_command_line(app, argc, argv)) return *exit_code;

  auto conn = tools::parse_broker_url("calc_client", url);
  if (!conn) return tools::kUsage;
  amqprpc::ClientOptions options;
  options.connection = *conn;
  auto client = amqprpc::Client::connect(options);
  if (!client) {
    std::cerr << "calc_client: " << client.status().to_string() << "\n";
    return tools::exit_code_for_connect(client.status());
  }

  calc::CalculatorClient calculator(**client, queue);
  calc::Operands operands;
  operands.set_a(a);
  operands.set_b(b);
  amqprpc::CallOptions call;
  call.timeout = std::chrono::milliseconds(static_cast<long long>(std::ceil(timeout_s * 1000)));
  using Method = amqprpc::Result<calc::Value> (calc::CalculatorClient::*)(const calc::Operands&,
                                                                          amqprpc::CallOptions);
  const std::map<std::string, Method> methods = {{"add", &calc::CalculatorClient::Add},
                                                 {"subtract", &calc::CalculatorClient::Subtract},
                                                 {"multiply", &calc::CalculatorClient::Multiply},
                                                 {"divide", &calc::CalculatorClient::Divide}};
  amqprpc::Result<calc::Value> result = (calculator.*methods.at(operation))(operands, call);
  if (result.ok()) {
    std::cout << result->value() << std::endl;
    return tools::kOk;
  }
  std::cerr << "calc_client: " << operation << "(" << a << ", " << b
            << "): " << result.status().to_string();
  if (auto why = amqprpc::detail_as<calc::MathError>(result.status())) {
    std::cerr << " [calc.MathError: operation " << why->operation() << ", reason " << why->reason()
              << "]";
  }
  std::cerr << "\n";
  return tools::exit_code_for_call(result.status());
}
