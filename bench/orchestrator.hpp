// The benchmark's orchestrator: starts the echo servers, runs every measured client in a
// process of its own, cell after cell (body size x calls in flight), implementations
// alternating, and writes the Markdown report.
//
// Two tables share one run and one raw rabbitmq-c baseline:
//  - peers: the clients and servers a user would pick instead of amqp-rpc (the official Java
//    client's RpcClient/RpcServer, Node's rabbitmq-client, pika as the seed has it, aio-pika),
//    each client against its own server and against the raw rabbitmq-c server, beside amqp-rpc's
//    own pair and the raw pair; CPU per call of client, server and broker;
//  - forms: amqp-rpc's other forms (inline and coroutine handlers, methods, typed codecs,
//    coroutine and future clients, gathers, streams, policies, tracing).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

struct Options {
  std::string exe;  // amqp-rpc-bench itself: its client and serve modes
  std::string url;
  double seconds = 1.5;
  double warmup = 0.5;
  double jit_warmup = 2;  // the Java and Node clients' warm-up, at least
  std::vector<int> concurrency{1, 16, 256};
  std::vector<std::size_t> sizes{16, 4096};
  bool forms = true;
  std::vector<int> forms_concurrency{1, 256};
  std::vector<std::size_t> forms_sizes{16};
  std::vector<std::string> peers{"java", "node", "pika", "aio-pika"};
  int repeat = 3;
  std::uint64_t long_calls = 200'000;
  int pika_calls = 2000;
  std::string seed_dir;     // seed_rpc_client.py and seed_rpc_server.py
  std::string peers_src;    // bench/peers: the Node and Python programs, the Java sources
  std::string peers_build;  // java/ (compiled classes) and node/node_modules
  std::string out_file;
  pid_t broker_pid = -1;  // the broker's Erlang VM; unknown: no broker CPU, no filter
  double max_other_cpu = 0.10;
  double max_steal = 0.05;
  int retries = 3;             // re-runs of a disturbed run, at most
  double rerun_budget = 0.25;  // re-runs in all, at most, as a share of the runs planned
};

// Runs the benchmark; prints the report on stdout (and to out_file). Exit status: 0, or 1 when
// a run failed or the servers did not come up.
int orchestrate(const Options& options);

}  // namespace bench
