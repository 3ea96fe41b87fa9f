#!/usr/bin/env bash
# The benchmark in one run: raw rabbitmq-c baseline, amqp-rpc, the peers a user would pick
# instead (the official Java client's RpcClient/RpcServer, Node's rabbitmq-client, pika as the
# seed has it, aio-pika), amqp-rpc's other forms and the seed's pika client, against one private
# RabbitMQ node (unless AMQP_URL names a broker). Writes docs/BENCHMARKS.md.
#   scripts/bench.sh [amqp-rpc-bench options...]
#   e.g. --peers java,node --concurrency 1 16 --sizes 16 --no-forms --seconds 1 --repeat 1
# Installs the peers' Debian packages and npm package (scripts/deps.sh's
# amqprpc_bench_deps_install), compiles the Java peer into build/bench-peers/java.
# With AMQP_URL set, the broker's pid (for its CPU and the disturbance filter) is
# AMQPRPC_BROKER_PID, else `scripts/broker.sh pid` for AMQPRPC_BROKER_NAME/PORT when set.
# AMQPRPC_BENCH_OUT: where to write the report (default docs/BENCHMARKS.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
amqprpc_deps_install

# The peers asked for (--peers a,b or --peers=a,b; default all), to install only theirs.
peers=(java node pika aio-pika)
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --peers=*) IFS=', ' read -r -a peers <<<"${args[$i]#--peers=}" ;;
    --peers)
      peers=()
      for ((j = i + 1; j < ${#args[@]}; j++)); do
        [[ "${args[$j]}" == -* ]] && break
        IFS=', ' read -r -a more <<<"${args[$j]}"
        peers+=("${more[@]}")
      done
      ;;
  esac
done

echo "==> build (RelWithDebInfo)" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target amqp-rpc-bench >/dev/null

echo "==> the peers: ${peers[*]}" >&2
amqprpc_bench_deps_install "$ROOT/build" "${peers[@]}"
if [[ " ${peers[*]} " == *" java "* ]]; then
  rm -rf build/bench-peers/java
  mkdir -p build/bench-peers/java
  javac -d build/bench-peers/java \
    -cp /usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar \
    bench/peers/java/BenchClient.java bench/peers/java/BenchServer.java
fi

report=""
started_broker=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  if [[ -n "$report" ]]; then rm -f "$report"; fi
  if [[ "$started_broker" -eq 1 ]]; then scripts/broker.sh stop >&2 || true; fi
}
trap cleanup EXIT

broker_pid="${AMQPRPC_BROKER_PID:-}"
if [[ -z "${AMQP_URL:-}" ]]; then
  export AMQPRPC_BROKER_NAME=amqprpc-bench AMQPRPC_BROKER_PORT=11710
  started_broker=1
  AMQP_URL="$(scripts/broker.sh start)"
  export AMQP_URL
  broker_pid="$(scripts/broker.sh pid)"
elif [[ -z "$broker_pid" && -n "${AMQPRPC_BROKER_NAME:-}" ]]; then
  broker_pid="$(scripts/broker.sh pid 2>/dev/null || true)"
fi
pid_args=()
if [[ -n "$broker_pid" ]]; then
  pid_args=(--broker-pid "$broker_pid")
else
  echo "bench.sh: the broker's pid is unknown (set AMQPRPC_BROKER_PID): no broker CPU, no disturbance filter" >&2
fi

OUT="${AMQPRPC_BENCH_OUT:-docs/BENCHMARKS.md}"
mkdir -p "$(dirname "$OUT")"
report="$(mktemp)"
status=0
build/bench/amqp-rpc-bench "$@" "${pid_args[@]}" --out "$report" || status=$?
version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
{
  echo "# Benchmarks"
  echo
  echo "Reproduce with \`scripts/bench.sh${*:+ $*}\` (installs the peers, builds, starts a private"
  echo "RabbitMQ node, runs \`build/bench/amqp-rpc-bench\`, writes this file). All implementations run"
  echo "in the same run against the same broker; cells alternate between them and each shows its"
  echo "median run."
  echo
  echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  echo "- RabbitMQ $(version rabbitmq-server), rabbitmq-c $(version librabbitmq-dev); peers: Java client $(version librabbitmq-client-java) on $(java -version 2>&1 | head -1 | tr -d '"' || echo "no java"), Node $(node --version 2>/dev/null || echo "none") with rabbitmq-client $(node -p "require('$ROOT/build/bench-peers/node/node_modules/rabbitmq-client/package.json').version" 2>/dev/null || echo "none"), pika $(version python3-pika), aio-pika $(version python3-aio-pika) (aiormq $(version python3-aiormq)), Python $(/usr/bin/python3 -c 'import platform; print(platform.python_version())')"
  echo "- Date: $(date -u +%Y-%m-%d)"
  echo "- Broker, servers and clients share the machine's cores: each number includes the others' load."
  echo "- Every measured client is a process of its own, started for its run; it prints a mark"
  echo "  when its measured window opens and when it closes, and the orchestrator reads"
  echo "  utime+stime from /proc/<pid>/stat of the client, its server and the broker (the Erlang"
  echo "  VM) at both marks: CPU per call covers the window alone, not start-up, warm-up (JIT"
  echo "  compilation that goes on inside the window is counted) or teardown. The counters tick"
  echo "  every 10 ms: over a 1.5 s window, ±1.3 µs per call at 5,000 calls/s, ±7 µs at 1,000."
  echo "- Latency is per call, from submit to completion; peak RSS is the client process's."
  echo "- raw rabbitmq-c: an echo server and a pipelined client written directly on the C API (one"
  echo "  thread each, direct reply-to), the broker's practical ceiling here."
  echo "- amqp-rpc: \`Server\` (echo handler on 1 worker thread, the default) and"
  echo "  \`Client::async_call\` keeping N calls in flight, every call with a deadline (expiration +"
  echo "  header), mandatory publishing, a UUID correlation id, direct reply-to."
  echo "- The peers (bench/peers/), each written the way its library's documentation shows, all"
  echo "  servers with prefetch 512, echoing, replying to reply_to with the correlation id, then"
  echo "  acking (tutorial 6's wire contract):"
  echo "  - Java: the official client's \`RpcClient\` (direct reply-to, its default) shared by N"
  echo "    threads each making blocking \`primitiveCall\`s; \`RpcServer\` (one delivery at a time on"
  echo "    its mainloop thread)."
  echo "  - Node: rabbitmq-client's \`RPCClient\` (direct reply-to, no publisher confirms: its"
  echo "    defaults) with N async callers awaiting \`send()\`; its \`createConsumer\` with"
  echo "    \`reply()\` as server. Both with \`noDelay: true\`: the library's default leaves Nagle's"
  echo "    algorithm on, which holds a lone call about 40 ms (about 40 calls/s at 1 in flight);"
  echo "    every other client here sets TCP_NODELAY."
  echo "  - pika: the seed's \`BlockingConnection\` client (exclusive reply queue, one call at a"
  echo "    time: it runs at 1 in flight only) and server, echoing instead of computing fib."
  echo "  - aio-pika: aio-pika's own tutorial 6 client (exclusive reply queue, a future per"
  echo "    correlation id, N tasks) and server (the queue's iterator, one message at a time,"
  echo "    \`message.process()\`), on channels with aio-pika's default publisher confirms, so each"
  echo "    publish waits for the broker's ack. (\`aio_pika.patterns.RPC\` speaks a protocol of its"
  echo "    own, pickled, and cannot call tutorial 6's servers.)"
  echo "- The other forms of amqp-rpc: an inline handler (\`workers = 0\`); a coroutine handler"
  echo "  (\`coroutine_default_handler\` on an \`asio::io_context\` run by one thread, dispatched inline"
  echo "  with \`workers = 0\`); a coroutine client (N coroutines on one \`io_context\` thread, each"
  echo "  awaiting \`amqprpc::async_call(..., asio::use_awaitable)\` in a loop) and a future client (one"
  echo "  thread keeping N \`std::future<Reply>\` in flight, waiting for the oldest: a call's latency"
  echo "  ends when its future is waited for), both calling the 1-worker server (the callback"
  echo "  client's \"1 worker thread\" row); tracing on: \`TracingInterceptor\` on client and server"
  echo "  (1 worker), spans written as JSON lines to /dev/null. Trace context (traceparent on every"
  echo "  request and reply) is always on; \"tracing on\" adds making and exporting spans."
  echo "- Policies: calls marked idempotent under a \`RetryPolicy\` (3 attempts) or a \`HedgingPolicy\`"
  echo "  (2 attempts, 1 s delay) that never trigger (every first attempt succeeds), calling the"
  echo "  1-worker server: what carrying a call through the retry engine costs a call that needs none."
  echo "- seed: tutorial 6's pika client and server (\`tests/interop/\`), sequential, without the sleep."
  echo "- To keep the default run near 12 minutes, the forms run at 16 B with 1 and 256 in flight"
  echo "  (\`--forms-sizes\`, \`--forms-concurrency\`) and the memory run makes 200,000 calls"
  echo "  (\`--long-calls\`); the peers' table has every cell."
  echo
  cat "$report"
} >"$OUT"
echo "==> wrote $OUT" >&2
exit "$status"
