#!/usr/bin/env bash
# Interop with the seed (RabbitMQ tutorial 6, pika 1.x) and the demo binaries as processes:
#   1. the seed's pika client is served by our fib_server;
#   2. our fib_client calls the seed's pika server (both reply modes);
#   3. two fib_server processes share rpc_queue, every call gets its own right answer;
#   4. bad input to fib_client/fib_server: clear errors and exit codes, serving goes on;
#   5. a pika client calls methods (x-rpc-method, JSON bodies), health and describe.
# Usage: run_interop.sh FIB_SERVER FIB_CLIENT   (needs AMQP_URL)
set -euo pipefail

FIB_SERVER=$1
FIB_CLIENT=$2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
: "${AMQP_URL:?AMQP_URL must point at a broker (scripts/test.sh starts a private one)}"
export AMQP_URL

WORK="$(mktemp -d)"
PIDS=()
passed=0
failed=0

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

check() {  # check NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then
    echo "ok   - $1"
    passed=$((passed + 1))
  else
    echo "FAIL - $1"
    echo "       expected: $(printf '%q' "$2")"
    echo "       actual:   $(printf '%q' "$3")"
    failed=$((failed + 1))
  fi
}

# Waits (bounded: 60 s) until FILE contains TEXT.
wait_for() {
  local file=$1 text=$2 i
  for ((i = 0; i < 1200; i++)); do
    if grep -q -- "$text" "$file" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for '$text' in $file:" >&2
  cat "$file" >&2 || true
  return 1
}

# Waits (bounded: 30 s) for a process we started; sets EXIT to its exit code ("timeout" if it
# runs on). Not in a subshell: only this shell can wait for its children.
wait_exit() {
  local pid=$1 i
  EXIT=timeout
  for ((i = 0; i < 600; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      EXIT=0
      wait "$pid" || EXIT=$?
      return 0
    fi
    sleep 0.05
  done
}

fib_py() { "$PY" -c "import sys; sys.set_int_max_str_digits(0)
a,b=0,1
for _ in range($1): a,b=b,a+b
print(a)"; }

# Start from an empty rpc_queue: an earlier interrupted run may have left requests behind.
"$PY" - <<'PYEOF'
import os, pika
c = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
ch = c.channel()
ch.queue_declare(queue="rpc_queue")
ch.queue_purge(queue="rpc_queue")
c.close()
PYEOF

echo "# 1. the seed's pika client, served by our fib_server"
"$FIB_SERVER" >"$WORK/server1.log" 2>&1 &
S1=$!
PIDS+=("$S1")
wait_for "$WORK/server1.log" "Awaiting RPC requests"
check "seed client, seed's default call fib(6)" "8" "$("$PY" "$HERE/seed_rpc_client.py" --timeout 10)"
check "seed client, several n" "$(printf '0\n1\n55\n832040\n354224848179261915075')" \
  "$("$PY" "$HERE/seed_rpc_client.py" --timeout 10 0 1 10 30 100)"
check "seed client, fib(10000) exact" "$(fib_py 10000)" "$("$PY" "$HERE/seed_rpc_client.py" --timeout 10 10000)"
kill -TERM "$S1"
wait_exit "$S1"
check "fib_server exits 0 on SIGTERM" "0" "$EXIT"

echo "# 2. our fib_client, calling the seed's pika server"
"$PY" -u "$HERE/seed_rpc_server.py" --count 4 >"$WORK/seed_server.log" 2>&1 &
S2=$!
PIDS+=("$S2")
wait_for "$WORK/seed_server.log" "Awaiting RPC requests"
check "fib_client 30 via direct reply-to" "832040" "$("$FIB_CLIENT" --timeout 10 30)"
check "fib_client via the seed's exclusive reply queue" "$(printf '55\n354224848179261915075')" \
  "$("$FIB_CLIENT" --timeout 10 --reply-mode exclusive 10 100)"
check "fib_client fib(1000) exact" "$(fib_py 1000)" "$("$FIB_CLIENT" --timeout 10 1000)"
wait_exit "$S2"
check "seed server served all 4 and exited" "0" "$EXIT"

echo "# 3. two fib_server processes share rpc_queue"
"$FIB_SERVER" --prefetch 1 >"$WORK/a.log" 2>&1 &
A=$!
PIDS+=("$A")
"$FIB_SERVER" --prefetch 1 >"$WORK/b.log" 2>&1 &
B=$!
PIDS+=("$B")
wait_for "$WORK/a.log" "Awaiting RPC requests"
wait_for "$WORK/b.log" "Awaiting RPC requests"
ns=$(seq 0 39 | tr '\n' ' ')
expected=$(for n in $ns; do fib_py "$n"; done)
# shellcheck disable=SC2086
check "seed client: 40 calls, each its own right answer" "$expected" \
  "$("$PY" "$HERE/seed_rpc_client.py" --timeout 10 $ns)"
# shellcheck disable=SC2086
check "fib_client: 40 calls, each its own right answer" "$expected" "$("$FIB_CLIENT" --timeout 10 $ns)"
kill -TERM "$A" "$B"
wait_exit "$A"
wait_exit "$B"
served_a=$(grep -c ' \[\.\] fib(' "$WORK/a.log" || true)
served_b=$(grep -c ' \[\.\] fib(' "$WORK/b.log" || true)
check "the two servers served 80 calls between them" "80" "$((served_a + served_b))"
check "both servers took a share (a=$served_a b=$served_b)" "yes" \
  "$([[ $served_a -gt 0 && $served_b -gt 0 ]] && echo yes || echo no)"

echo "# 4. bad input: clear errors, exit codes, the server goes on"
"$FIB_SERVER" --limit 5000 >"$WORK/server4.log" 2>&1 &
S4=$!
PIDS+=("$S4")
wait_for "$WORK/server4.log" "Awaiting RPC requests"
rc=0
err=$("$FIB_CLIENT" --timeout 10 abc 2>&1 >/dev/null) || rc=$?
check "fib_client abc exits 1 (error reply)" "1" "$rc"
check "fib_client abc says why" "fib_client: fib(abc): invalid_argument: not a decimal number: 'abc'" "$err"
rc=0
err=$("$FIB_CLIENT" --timeout 10 5001 2>&1 >/dev/null) || rc=$?
check "over the limit exits 1" "1" "$rc"
check "over the limit says so" "fib_client: fib(5001): invalid_argument: n=5001 is over this server's limit of 5000" "$err"
rc=0
"$FIB_CLIENT" --timeout 10 -- -1 >/dev/null 2>&1 || rc=$?
check "negative n exits 1" "1" "$rc"
check "still serving after bad input" "832040" "$("$FIB_CLIENT" --timeout 10 30)"
rc=0
"$FIB_CLIENT" --timeout 10 --queue no-such-queue-$$ 5 >/dev/null 2>&1 || rc=$?
check "unknown queue exits 4 (no route), fast" "4" "$rc"
rc=0
"$FIB_CLIENT" --url "amqp://guest:guest@127.0.0.1:1/" 5 >/dev/null 2>&1 || rc=$?
check "unreachable broker exits 4" "4" "$rc"
rc=0
err=$("$FIB_CLIENT" --url "amqp://guest:secretpw@127.0.0.1:notaport/" 5 2>&1) || rc=$?
check "bad URI exits 2" "2" "$rc"
check "bad URI error does not show the password" "no" "$([[ $err == *secretpw* ]] && echo yes || echo no)"
rc=0
"$FIB_CLIENT" >/dev/null 2>&1 || rc=$?
check "no n is a usage error" "2" "$rc"
# A seed client sending junk gets an error body instead of a hang (it then fails to int() it).
rc=0
"$PY" - >/dev/null 2>&1 <<'PYEOF' || rc=$?
import os, sys, uuid, pika
c = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
ch = c.channel()
q = ch.queue_declare(queue="", exclusive=True).method.queue
got = []
ch.basic_consume(queue=q, on_message_callback=lambda c_, m, p, b: got.append((p, b)), auto_ack=True)
cid = str(uuid.uuid4())
ch.basic_publish(exchange="", routing_key="rpc_queue", body="abc",
                 properties=pika.BasicProperties(reply_to=q, correlation_id=cid))
c.process_data_events(time_limit=10)
while not got:
    c.process_data_events(time_limit=10)
props, body = got[0]
ok = (props.correlation_id == cid and props.headers.get("x-rpc-status") == "invalid_argument"
      and b"not a decimal number" in body)
sys.exit(0 if ok else 1)
PYEOF
check "pika client sending 'abc' gets an error reply with x-rpc-status" "0" "$rc"

echo "# 5. a pika client calls methods: the x-rpc-method header and JSON bodies"
call() { "$PY" "$HERE/pika_method_call.py" --timeout 30 rpc_queue "$@"; }
check "pika calls the typed method Fib in JSON" 'ok|application/json|{"fib":"832040","n":30}' \
  "$(call Fib '{"n": 30}')"
check "a bad JSON body is invalid_argument naming the method" "invalid_argument|'Fib'" \
  "$(call Fib '{"n": "x"}' | cut -d'|' -f1 | tr -d '\n')|$(call Fib '{"n": "x"}' | grep -o "'Fib'")"
check "an unknown method is unimplemented" "unimplemented" "$(call Nope '1' | cut -d'|' -f1)"
check "pika asks the framework's health method" 'ok|application/json|{"status":"serving"}' \
  "$(call amqprpc.health '')"
check "describe lists Fib" "yes" \
  "$(call amqprpc.describe '' | grep -q '"name":"Fib"' && echo yes || echo no)"

echo "# 6. verified callers: the broker refuses a forged user_id"
rc=0
out=$(
  "$PY" - 2>&1 <<'PYEOF'

import os, sys, pika
c = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))  # logged in as guest
ch = c.channel()
ch.confirm_delivery()  # so that the publish itself learns the broker's answer
try:
    ch.basic_publish(exchange="", routing_key="rpc_queue", body=b"5",
                     properties=pika.BasicProperties(user_id="someone-else"))
    print("published: the broker did not refuse the forged user_id")
    sys.exit(1)
except pika.exceptions.ChannelClosedByBroker as e:
    print(e.reply_code, e.reply_text)
PYEOF
) || rc=$?
check "a forged user_id closes the pika caller's channel with 406" "0|406" "$rc|${out%% *}"
check "the broker says why" "yes" "$([[ $out == *user_id* ]] && echo yes || echo no)"
kill -TERM "$S4"
wait_exit "$S4"
check "fib_server exits 0 after bad input" "0" "$EXIT"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
