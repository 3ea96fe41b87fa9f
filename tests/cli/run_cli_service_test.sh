#!/usr/bin/env bash
# amqp-rpc on services, like grpcurl on gRPC services: describe (human and --json), health (a
# readiness probe, also while a server stops gracefully), call --method (JSON in and out of
# protobuf methods through the server's descriptor set, JSON methods, error details, bad bodies,
# unknown methods), raw calls beside them, and a tutorial-style server that does not describe.
#   Usage: run_cli_service_test.sh AMQP_RPC_BINARY TEST_SERVER_BINARY  (needs AMQP_URL, pika)
set -euo pipefail
CLI="$(realpath "$1")"
SERVER="$(realpath "$2")"
PY=/usr/bin/python3
: "${AMQP_URL:?AMQP_URL must point at a broker}"
export AMQP_URL
# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rc_of() { # the exit code alone
  local rc=0
  "$@" >/dev/null 2>&1 || rc=$?
  echo "$rc"
}
wait_for_line() { # FILE TEXT; bounded: 60 s
  for _ in $(seq 1 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "never saw '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}
py() { "$PY" -c "$@"; }

Q="cli-svc-$$"
"$SERVER" --queue "$Q" --typed 1 >"$WORK/svc.out" 2>"$WORK/svc.err" &
PIDS+=($!)
wait_for_line "$WORK/svc.out" ready

# ---- describe ----
"$CLI" describe "$Q" >"$WORK/describe.txt"
for line in "service amqprpc.test.Echo" "queue: $Q" "default handler: yes" \
  "  Say(amqprpc.test.EchoRequest) returns (amqprpc.test.EchoReply) [protobuf]" \
  "  Check(amqprpc.test.EchoRequest) returns (amqprpc.test.EchoReply) [protobuf]" \
  "  Flip(json) returns (json) [json]" "  Slow(bytes) returns (bytes) [bytes]" \
  "  Count(bytes) returns (stream bytes) [bytes]" \
  "  message amqprpc.test.EchoRequest {" "    int32 repeat = 2;" \
  "    repeated string parts = 2;" "reserved: amqprpc.describe amqprpc.health"; do
  check "describe prints '$line'" "yes" "$(grep -qxF -- "$line" "$WORK/describe.txt" && echo yes || cat "$WORK/describe.txt")"
done
check "describe --json: the service, its methods, a descriptor set of the types" "amqprpc.test.Echo Check,Count,Flip,Say,Slow yes" \
  "$("$CLI" describe --json "$Q" | py '
import base64, json, sys
j = json.load(sys.stdin)
fds = base64.b64decode(j["file_descriptor_set"], validate=True)
print(j["service"], ",".join(m["name"] for m in j["methods"]), "yes" if b"amqprpc.test.EchoRequest" in fds or b"EchoRequest" in fds else "no", end="")')"

# ---- a streaming method: items as they arrive, then the status ----
check "call -m of a streaming method prints each item" "0|0 1 2|" \
  "$(r=$(run "$CLI" call -m Count "$Q" 3); echo "${r%%|*}|$(echo "${r#*|}" | cut -d'|' -f1 | xargs)|${r##*|}")"
check "call --json of a stream: a line per item, then the status" "3|0|1|ok 2" \
  "$("$CLI" call --json -m Count "$Q" 2 | py '
import json, sys
lines = [json.loads(l) for l in sys.stdin]
last = lines[-1]
print("%d|%s|%s|%s %d" % (len(lines), lines[0]["body"], lines[1]["body"], last["status"], last["items"]), end="")')"
check "a stream that fails: its status, exit 1" "1" "$(rc_of "$CLI" call -m Count "$Q" nope)"

# ---- health ----
check "health of a serving server: serving, exit 0" "0|serving|" "$(run "$CLI" health "$Q")"

# ---- call --method ----
check "a protobuf method takes JSON and prints its reply as JSON" "hi hi,hi" \
  "$("$CLI" call "$Q" '{"text":"hi","repeat":2}' --method Say | py '
import json, sys; j = json.load(sys.stdin); print(j["text"], ",".join(j["parts"]), end="")')"
check "a JSON method: JSON in, JSON out" "0|[3,2,1]|" "$(run "$CLI" call -m Flip "$Q" '[1,2,3]')"
check "--stdin with --method" "0|{\"text\":\"in\",\"parts\":[\"in\"]}|" \
  "$(echo '{"text":"in"}' | run "$CLI" call --stdin -m Say "$Q")"
r=$(run "$CLI" call -m Say "$Q" '{"text":')
check "a body that is not JSON exits 2, naming the method and its type" "2|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"method 'Say'"*"amqprpc.test.EchoRequest"* ]] && echo yes || echo "$r")")"
r=$(run "$CLI" call -m Say "$Q" '{"txt":"hi"}')
check "a field the type lacks exits 2, naming it" "2|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"amqprpc.test.EchoRequest"*"txt"* ]] && echo yes || echo "$r")")"
check "a JSON method with a body that is not JSON exits 2" "2" "$(rc_of "$CLI" call -m Flip "$Q" 'not json')"
r=$(run "$CLI" call -m Sya "$Q" '{}')
check "an unknown method exits 2, naming the methods there are" "2|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"no method 'Sya'"*"Check, Count, Flip, Say, Slow"* ]] && echo yes || echo "$r")")"
r=$(run "$CLI" call -m Check "$Q" '{"text":""}')
check "an error reply exits 1 with its status and its detail as JSON" \
  '1||amqp-rpc call: invalid_argument: text is empty
amqp-rpc call: detail amqprpc.test.ErrorInfo: {"field":"text","reason":"empty"}' "$r"
check "--json with --method: the reply's JSON in the envelope" "ok Say hi" \
  "$("$CLI" call --json -m Say "$Q" '{"text":"hi"}' | py '
import json, sys; j = json.load(sys.stdin); print(j["status"], j["method"], json.loads(j["body"])["text"], end="")')"
check "--json on an error reply: the detail as JSON" "invalid_argument amqprpc.test.ErrorInfo text" \
  "$( ("$CLI" call --json -m Check "$Q" '{}' 2>/dev/null || true) | py '
import json, sys; j = json.load(sys.stdin); d = j["detail"]; print(j["status"], d["type"], d["value"]["field"], end="")')"
check "a bytes method: the body as it is" "0|raw \"bytes\"|" "$(run "$CLI" call -m Slow "$Q" 'raw "bytes"')"
check "a reserved method through call" "0|{\"status\":\"serving\"}|" "$(run "$CLI" call -m amqprpc.health "$Q")"
check "without --method: the raw call of today (the default handler)" "0|plain|" "$(run "$CLI" call "$Q" plain)"

# ---- a server that does not describe itself (a tutorial server: echoes whatever comes) ----
P="cli-pika-$$"
"$PY" - "$P" >"$WORK/pika.out" 2>&1 <<'EOF' &
import os, sys, pika
c = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
ch = c.channel()
ch.queue_declare(queue=sys.argv[1])
def on_request(ch, method, props, body):
    ch.basic_publish(exchange="", routing_key=props.reply_to, body=body,
                     properties=pika.BasicProperties(correlation_id=props.correlation_id))
    ch.basic_ack(delivery_tag=method.delivery_tag)
ch.basic_consume(queue=sys.argv[1], on_message_callback=on_request)
print("ready", flush=True)
ch.start_consuming()
EOF
PIKA=$!
PIDS+=("$PIKA")
wait_for_line "$WORK/pika.out" ready
r=$(run "$CLI" describe "$P")
check "describe of a server that does not describe: exit 1, saying so" "1|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"does not describe itself"* ]] && echo yes || echo "$r")")"
check "describe --json of it: exit 1" "1" "$(rc_of "$CLI" describe --json "$P")"
check "health of it: exit 1" "1" "$(rc_of "$CLI" health "$P")"
r=$(run "$CLI" call -m Say "$P" '{}')
check "call --method to it: exit 1, suggesting a raw call" "1|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"does not describe itself"*"without --method"* ]] && echo yes || echo "$r")")"
check "a raw call to it still works" "0|hello|" "$(run "$CLI" call "$P" hello)"
kill -TERM "$PIKA"
wait "$PIKA" 2>/dev/null || true
# Its queue stays, with nobody consuming it.
# The broker drops the consumer of a process that ended soon, not at once: wait (bounded).
for _ in $(seq 1 60); do
  [[ "$(run "$CLI" health --timeout 1 "$P")" == *"no server is consuming"* ]] && break
  sleep 0.5
done
check "health with no server consuming: not_serving, the reason, exit 3" \
  "3|not_serving|amqp-rpc health: no server is consuming queue '$P'" "$(run "$CLI" health --timeout 30 "$P")"
check "describe with no server consuming: exit 4 at once" "4" "$(rc_of "$CLI" describe --timeout 30 "$P")"
check "health of a queue that does not exist: exit 4 at once" "4" "$(rc_of "$CLI" health "no-such-queue-$$")"
check "describe of a queue that does not exist: exit 4" "4" "$(rc_of "$CLI" describe "no-such-queue-$$")"
check "health with the broker unreachable: exit 4" "4" "$(rc_of "$CLI" health --url amqp://127.0.0.1:1/ "$Q")"

# ---- health while a server stops gracefully ----
S="cli-stop-$$"
"$SERVER" --queue "$S" --typed 1 --delay-ms 8000 >"$WORK/stop.out" 2>"$WORK/stop.err" &
STOPPING=$!
PIDS+=("$STOPPING")
wait_for_line "$WORK/stop.out" ready
check "the stopping test's server is serving first" "0" "$(rc_of "$CLI" health "$S")"
("$CLI" call -m Slow "$S" slowbody >"$WORK/slow.out" 2>"$WORK/slow.err"; echo $? >"$WORK/slow.rc") &
SLOW=$!
wait_for_line "$WORK/stop.out" "slow started"
kill -TERM "$STOPPING"
# Its stop waits for the running handler; meanwhile health must stop saying serving.
health="0|serving|"
for _ in $(seq 1 60); do
  health=$(run "$CLI" health --timeout 1 "$S")
  [[ "${health%%|*}" != 0 ]] && break
done
check "health during a graceful stop: not_serving, non-zero exit" "yes|not_serving" \
  "$([[ "${health%%|*}" != 0 ]] && echo yes || echo no)|$(echo "$health" | cut -d'|' -f2)"
wait "$SLOW"
check "the call running during the stop still gets its reply" "0|slowbody" "$(cat "$WORK/slow.rc")|$(cat "$WORK/slow.out")"
wait "$STOPPING" || true

for cmd in describe health; do
  check "amqp-rpc $cmd --help" "0" "$(rc_of "$CLI" "$cmd" --help)"
done
check "describe without a queue exits 2" "2" "$(rc_of "$CLI" describe)"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
