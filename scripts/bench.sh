#!/usr/bin/env bash
# The benchmark in one run: raw rabbitmq-c baseline, amqp-rpc, and the seed's pika client, against
# one private RabbitMQ node (unless AMQP_URL names a broker). Writes docs/BENCHMARKS.md.
#   scripts/bench.sh [amqp-rpc-bench options...]    e.g. --seconds 5 --repeat 5
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
amqprpc_deps_install

echo "==> build (RelWithDebInfo)" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target amqp-rpc-bench >/dev/null

if [[ -z "${AMQP_URL:-}" ]]; then
  export AMQPRPC_BROKER_NAME=amqprpc-bench AMQPRPC_BROKER_PORT=11710
  trap 'scripts/broker.sh stop >&2 || true' EXIT
  AMQP_URL="$(scripts/broker.sh start)"
  export AMQP_URL
fi

OUT="${AMQPRPC_BENCH_OUT:-docs/BENCHMARKS.md}"
mkdir -p "$(dirname "$OUT")"
report="$(mktemp)"
trap 'rm -f "$report"; if [[ -n "${AMQPRPC_BROKER_NAME:-}" ]]; then scripts/broker.sh stop >&2 || true; fi' EXIT
build/bench/amqp-rpc-bench "$@" --out "$report"
{
  echo "# Benchmarks"
  echo
  echo "Reproduce with \`scripts/bench.sh${*:+ $*}\` (builds, starts a private RabbitMQ node, runs"
  echo "\`build/bench/amqp-rpc-bench\`, writes this file). All implementations run in the same run"
  echo "against the same broker; cells alternate between them and each shows its median run."
  echo
  echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "- RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server), rabbitmq-c $(dpkg-query -W -f='${Version}' librabbitmq-dev), pika $(dpkg-query -W -f='${Version}' python3-pika)"
  echo "- Date: $(date -u +%Y-%m-%d)"
  echo "- Broker, servers and clients share the machine's cores: each number includes the others' load."
  echo "- raw rabbitmq-c: an echo server and a pipelined client written directly on the C API (one"
  echo "  thread each, direct reply-to), the broker's practical ceiling here."
  echo "- amqp-rpc: \`Server\` (echo handler on 1 worker thread, or inline on the I/O thread with"
  echo "  \`workers = 0\`) and \`Client::async_call\` keeping N calls in flight, every call with a"
  echo "  deadline (expiration + header), mandatory publishing, a UUID correlation id."
  echo "- The other forms: a coroutine handler (\`coroutine_default_handler\` on an \`asio::io_context\`"
  echo "  run by one thread, dispatched inline with \`workers = 0\`); a coroutine client (N coroutines on"
  echo "  one \`io_context\` thread, each awaiting \`amqprpc::async_call(..., asio::use_awaitable)\` in a"
  echo "  loop) and a future client (one thread keeping N \`std::future<Reply>\` in flight, waiting for"
  echo "  the oldest: a call's latency ends when its future is waited for), both calling the 1-worker"
  echo "  server (the callback client's \"1 worker thread\" row); tracing on: \`TracingInterceptor\` on"
  echo "  client and server (1 worker), spans written as JSON lines to /dev/null. Trace context"
  echo "  (traceparent on every request and reply) is always on; \"tracing on\" adds making and"
  echo "  exporting spans. Tracing off is the \"1 worker thread\" row."
  echo "- Policies: calls marked idempotent under a \`RetryPolicy\` (3 attempts) or a \`HedgingPolicy\`"
  echo "  (2 attempts, 1 s delay) that never trigger (every first attempt succeeds), calling the"
  echo "  1-worker server: what carrying a call through the retry engine costs a call that needs none."
  echo "- seed: tutorial 6's pika client and server (\`tests/interop/\`), sequential, without the sleep."
  echo "- Latency is per call, from submit to completion; CPU and RSS are the client process's."
  echo
  cat "$report"
} >"$OUT"
echo "==> wrote $OUT" >&2
