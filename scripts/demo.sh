#!/usr/bin/env bash
# The Fibonacci demo end to end: installs what is missing, builds, starts a private RabbitMQ
# node (unless AMQP_URL names a broker), starts fib_server, calls fib(30) with fib_client
# (prints 832040), then stops the server and the node.
#   scripts/demo.sh [N...]     # default: 30
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
amqprpc_deps_install

echo "==> build" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target fib_server fib_client >/dev/null

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  if [[ -n "${STARTED_BROKER:-}" ]]; then scripts/broker.sh stop >&2 || true; fi
}
trap cleanup EXIT

if [[ -z "${AMQP_URL:-}" ]]; then
  export AMQPRPC_BROKER_NAME=amqprpc-demo AMQPRPC_BROKER_PORT=11700
  echo "==> private RabbitMQ node" >&2
  STARTED_BROKER=1
  AMQP_URL="$(scripts/broker.sh start)"
  export AMQP_URL
fi

echo "==> fib_server" >&2
build/examples/fib/fib_server >&2 &
SERVER_PID=$!

echo "==> fib_client ${*:-30}" >&2
# The server declares rpc_queue as it starts; until then a call fails fast with "no route".
for _ in $(seq 1 100); do
  if build/examples/fib/fib_client --timeout 10 "${@:-30}" 2>/dev/null; then exit 0; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "fib_server died" >&2; exit 1; }
  sleep 0.1
done
build/examples/fib/fib_client --timeout 10 "${@:-30}"
