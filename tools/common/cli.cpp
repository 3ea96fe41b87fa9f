#include "common/cli.hpp"

#include "common/common.hpp"

namespace amqprpc::tools {

CLI::Option* add_url_option(CLI::App& app, std::string& url, const std::string& help) {
  url = default_url();
  return app.add_option("--url", url, help);
}

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;  // --help is fine; anything else is a usage error
  }
  return std::nullopt;
}

}  // namespace amqprpc::tools
