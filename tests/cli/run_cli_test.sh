#!/usr/bin/env bash
# The amqp-rpc command as a user meets it: call (plain, --json, headers, --stdin), serve with
# the fib and echo handlers and --stats, exit codes for ok / error reply / usage / timeout /
# unreachable, --help on every command.   Usage: run_cli_test.sh AMQP_RPC_BINARY  (needs AMQP_URL)
set -euo pipefail
CLI="$(realpath "$1")"
: "${AMQP_URL:?AMQP_URL must point at a broker}"
export AMQP_URL
# shellcheck source=tests/cli/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
wait_serving() { # bounded: 60 s
  for _ in $(seq 1 600); do
    grep -q "serving" "$1" && return 0
    sleep 0.1
  done
  cat "$1" >&2
  return 1
}

rc_of() { # the exit code alone
  local rc=0
  "$@" >/dev/null 2>&1 || rc=$?
  echo "$rc"
}

Q="cli-fib-$$"
E="cli-echo-$$"
"$CLI" serve -q --queue "$Q" --handler fib --stats --stats-interval 0.5 >"$WORK/fib.out" 2>"$WORK/fib.err" &
FIB=$!
PIDS+=("$FIB")
"$CLI" serve -q --queue "$E" >"$WORK/echo.out" 2>"$WORK/echo.err" &
PIDS+=($!)
wait_serving "$WORK/fib.err"
wait_serving "$WORK/echo.err"

check "call prints the reply" "0|832040|" "$(run "$CLI" call "$Q" 30)"
r=$(run "$CLI" call "$Q" abc)
check "an error reply exits 1 and says why" "1||amqp-rpc call: invalid_argument: not a decimal number: 'abc'" "$r"
check "--stdin sends standard input" "0|55|" "$(echo 10 | "$CLI" call --stdin "$Q" 2>&1 | { read -r x; echo "0|$x|"; })"
json=$("$CLI" call --json -H trace=abc -H tenant=acme --content-type text/plain "$E" hi)
check "--json: status, body, headers both ways, timing, metrics" "ok hi abc text/plain 1" \
  "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["status"], j["body"], j["headers"]["trace"], j["content_type"], j["metrics"]["replies"], end="") if "connect" in j["timing_ms"] and "latency" in j["metrics"] else print("missing")' "$json")"
json=$("$CLI" call --json "$Q" -- -5 2>/dev/null) || true
check "--json on an error reply: status and message" "invalid_argument" \
  "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["status"] if "n must be" in j["message"] else "bad", end="")' "$json")"
# gather: two fib servers of their own queue both answer one request, each named.
G="cli-gather-$$"
GATHERERS=()
for n in 1 2; do
  "$CLI" serve -q --queue "$G" --handler fib >"$WORK/gather$n.out" 2>"$WORK/gather$n.err" &
  GATHERERS+=($!)
  PIDS+=($!)
done
wait_serving "$WORK/gather1.err"
wait_serving "$WORK/gather2.err"
r=$("$CLI" gather "$G" 30 2>"$WORK/gather.err") && rc=0 || rc=$?
check "gather: every fib server answers, one line each, exit 0" "0|2|2|yes" \
  "$rc|$(echo "$r" | wc -l)|$(echo "$r" | cut -f1 | sort -u | wc -l)|$(grep -q '2 of 2 instances answered' "$WORK/gather.err" && echo yes)"
check "gather: each line is <instance> TAB <reply>" "832040 832040" "$(echo "$r" | cut -f2 | xargs)"
json=$("$CLI" gather --json --method amqprpc.health "$G" 2>/dev/null)
check "gather --json --method: one object, each instance's health" "ok 2 2 0 serving" \
  "$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["status"], j["expected"], j["answered"], j["missing"], "serving" if all("serving" in r["body"] for r in j["replies"]) else "no", end="")' "$json")"
for pid in "${GATHERERS[@]}"; do kill -TERM "$pid"; done
for pid in "${GATHERERS[@]}"; do wait "$pid" || true; done
check "gather where nobody takes part exits 4 at once" "4" "$(rc_of "$CLI" gather --timeout 30 "$G" x)"
check "no such queue exits 4 at once" "4" "$(run "$CLI" call --timeout 30 "no-such-queue-$$" x | cut -d'|' -f1)"
check "unreachable broker exits 4" "4" "$(run "$CLI" call --url amqp://127.0.0.1:1/ "$Q" 1 | cut -d'|' -f1)"
check "a bad URI exits 2 without echoing the password" "2" "$(run "$CLI" call --url 'amqp://u:hunter2@h:bad/' "$Q" 1 | cut -d'|' -f1)"
check "...and does not print it" "no" "$("$CLI" call --url 'amqp://u:hunter2@h:bad/' "$Q" 1 2>&1 | grep -c hunter2 | sed 's/^0$/no/')"
check "a bad --header exits 2" "2" "$(run "$CLI" call -H novalue "$Q" 1 | cut -d'|' -f1)"
check "no queue given exits 2" "2" "$("$CLI" call >/dev/null 2>&1; echo $?)"
check "--timeout nan exits 2" "2" "$(run "$CLI" call --timeout nan "$Q" 1 | cut -d'|' -f1)"
BIG=$(head -c 70000 /dev/zero | tr '\0' x)  # two of them: more than a 128 KiB frame
check "headers too big for a frame exit 2, nothing sent" "2|yes" \
  "$("$CLI" call -H "a=$BIG" -H "b=$BIG" "$Q" 1 2>"$WORK/big.err" >/dev/null; echo "$?|$(grep -q 'nothing was sent' "$WORK/big.err" && echo yes)")"
LONGQ=$(head -c 300 /dev/zero | tr '\0' q)
check "a 300-byte queue name exits 2, saying so" "2|yes" \
  "$("$CLI" call "$LONGQ" 1 2>"$WORK/longq.err" >/dev/null; echo "$?|$(grep -q '255 bytes' "$WORK/longq.err" && echo yes)")"

# A queue nobody consumes: stop the echo server, its queue stays.
kill -TERM "${PIDS[1]}"
wait "${PIDS[1]}" || true
r=$(run "$CLI" call --timeout 30 "$E" x)
check "a call to a queue nobody consumes exits 4 at once, saying so" "4|yes" \
  "$(echo "${r%%|*}|$([[ "$r" == *"no server is consuming queue '$E'"* ]] && echo yes || echo "$r")")"
start=$(date +%s%N)
check "a timeout exits 3 (--wait-for-ready: sent for a server that never comes)" "3" \
  "$(run "$CLI" call --wait-for-ready --timeout 0.3 "$E" x | cut -d'|' -f1)"
check "...after the timeout, not before and not much after" "yes" \
  "$(python3 -c 'import sys; ms=(int(sys.argv[1])-int(sys.argv[2]))/1e6; print("yes" if 300 <= ms < 5000 else ms, end="")' "$(date +%s%N)" "$start")"

for cmd in "" call gather serve bench; do
  # shellcheck disable=SC2086
  check "amqp-rpc $cmd --help" "0" "$("$CLI" $cmd --help >/dev/null 2>&1; echo $?)"
done

# A stats line (every 0.5 s), waited for, bounded.
for _ in $(seq 1 600); do
  grep -q 'stats: received' "$WORK/fib.err" && break
  sleep 0.1
done
kill -TERM "$FIB"
wait "$FIB" || true
check "serve --stats prints stats lines" "yes" "$(grep -q 'stats: received' "$WORK/fib.err" && echo yes || echo no)"
check "serve --stats prints JSON at exit with the counts" "yes" \
  "$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["stats"]; print("yes" if j["replied_ok"] == 2 and j["errors"].get("invalid_argument", 0) == 2 and j["handler_latency"]["count"] == 4 else j, end="")' "$WORK/fib.out")"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
