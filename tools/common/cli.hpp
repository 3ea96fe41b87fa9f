// The command-line options every program has, on CLI11.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

namespace amqprpc::tools {

// --url: the broker URI, else $AMQP_URL, else a local broker (see default_url()).
CLI::Option* add_url_option(
    CLI::App& app, std::string& url,
    const std::string& help = "broker URI (default: $AMQP_URL, else localhost)");

// Parses the command line. Returns the exit code to leave with when the program should not go
// on: 0 after --help, kUsage after a bad command line (CLI11 has said why).
std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv);

}  // namespace amqprpc::tools
