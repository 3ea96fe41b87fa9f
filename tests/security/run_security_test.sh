#!/usr/bin/env bash
# Security, tried as a user would with the amqp-rpc command, against a private node of its own
# with a TLS listener and certificates made here with openssl:
#   - a verified amqps:// call succeeds (and with a client certificate too);
#   - a wrong CA, a missing CA file, and plain amqp:// to the TLS port fail with clear errors;
#   - a user without permission on a queue or a vhost gets permission_denied, not a crash;
#   - no password ever appears in what the commands print.
# Usage: run_security_test.sh AMQP_RPC_BINARY
set -euo pipefail

CLI="$(realpath "$1")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d)"
export AMQPRPC_BROKER_NAME=amqprpc-tls AMQPRPC_BROKER_PORT=11830
TLS_PORT=11831
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/broker.sh" clean >/dev/null 2>&1 || true  # stop, and forget users and vhosts
  rm -rf "$WORK"
}
trap cleanup EXIT
passed=0
failed=0
# Waits (bounded: 60 s) until a `serve` writing to FILE says it is serving; fails otherwise.
wait_serving() {
  for _ in $(seq 1 600); do
    grep -q "serving" "$1" && return 0
    sleep 0.1
  done
  echo "FAIL - no 'serving' in $1 within 60 s:" >&2
  cat "$1" >&2
  return 1
}
check() { # NAME CONDITION-RESULT(yes/no) [DETAIL]
  if [[ "$2" == yes ]]; then
    echo "ok   - $1"
    passed=$((passed + 1))
  else
    echo "FAIL - $1 ${3:-}"
    failed=$((failed + 1))
  fi
}

# --- certificates: a CA, the broker's (localhost), a client's, and an unrelated CA ---
cd "$WORK"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=amqprpc test CA" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj "/CN=someone else" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=amqprpc-client" 2>/dev/null
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>/dev/null
chmod 644 ./*.key

cat >tls.conf <<CONF
listeners.ssl.1 = 127.0.0.1:$TLS_PORT
listeners.ssl.2 = 127.0.0.2:$TLS_PORT
ssl_options.cacertfile = $WORK/ca.pem
ssl_options.certfile = $WORK/server.pem
ssl_options.keyfile = $WORK/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
"$ROOT/scripts/broker.sh" clean >/dev/null 2>&1 || true  # a fresh node: no users from a past run
AMQPRPC_BROKER_EXTRA_CONF="$WORK/tls.conf" "$ROOT/scripts/broker.sh" start >/dev/null
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
TLS="amqps://guest:guest@localhost:$TLS_PORT/%2F?cacertfile=$(enc "$WORK/ca.pem")"

# --- TLS ---
"$CLI" serve -q --queue tls-echo --url "$TLS" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
wait_serving "$WORK/serve.log"
out=$("$CLI" call --timeout 10 --url "$TLS" tls-echo "over tls" 2>&1) && rc=0 || rc=$?
check "verified amqps:// call succeeds" "$([[ $rc == 0 && $out == "over tls" ]] && echo yes || echo no)" "(rc $rc: $out)"

WITH_CERT="$TLS&certfile=$(enc "$WORK/client.pem")&keyfile=$(enc "$WORK/client.key")"
out=$("$CLI" call --timeout 10 --url "$WITH_CERT" tls-echo "with client cert" 2>&1) && rc=0 || rc=$?
check "amqps:// with a client certificate succeeds" "$([[ $rc == 0 && $out == "with client cert" ]] && echo yes || echo no)" "(rc $rc: $out)"

# A broker addressed by IP: its certificate names IP 127.0.0.1 (subjectAltName), not 127.0.0.2.
BY_IP="amqps://guest:guest@127.0.0.1:$TLS_PORT/%2F?cacertfile=$(enc "$WORK/ca.pem")"
out=$("$CLI" call --timeout 10 --url "$BY_IP" tls-echo "by ip" 2>&1) && rc=0 || rc=$?
check "amqps:// to an IP the certificate names is verified and succeeds" "$([[ $rc == 0 && $out == "by ip" ]] && echo yes || echo no)" "(rc $rc: $out)"
OTHER_IP="amqps://guest:guest@127.0.0.2:$TLS_PORT/%2F?cacertfile=$(enc "$WORK/ca.pem")"
out=$("$CLI" call --timeout 10 --url "$OTHER_IP" tls-echo x 2>&1) && rc=0 || rc=$?
check "amqps:// to an IP the certificate does not name fails verification (exit 4, says SSL)" \
  "$([[ $rc == 4 && $out == *unavailable* && ($out == *SSL* || $out == *certificate*) ]] && echo yes || echo no)" "(rc $rc: $out)"

WRONG="amqps://guest:guest@localhost:$TLS_PORT/%2F?cacertfile=$(enc "$WORK/other-ca.pem")"
out=$("$CLI" call --timeout 10 --url "$WRONG" tls-echo x 2>&1) && rc=0 || rc=$?
check "a wrong CA fails with exit 4 and says why" \
  "$([[ $rc == 4 && $out == *unavailable* && ($out == *SSL* || $out == *TLS* || $out == *certificate*) ]] && echo yes || echo no)" "(rc $rc: $out)"

MISSING="amqps://guest:guest@localhost:$TLS_PORT/%2F?cacertfile=%2Fno%2Fsuch%2Fca.pem"
out=$("$CLI" call --timeout 10 --url "$MISSING" tls-echo x 2>&1) && rc=0 || rc=$?
check "a missing CA file is a usage error naming the file" \
  "$([[ $rc == 2 && $out == */no/such/ca.pem* ]] && echo yes || echo no)" "(rc $rc: $out)"

start=$(date +%s)
out=$("$CLI" call --timeout 10 --url "amqp://guest:guest@127.0.0.1:$TLS_PORT/%2F?connection_timeout=2000" tls-echo x 2>&1) && rc=0 || rc=$?
took=$(($(date +%s) - start))
check "plain amqp:// cannot talk to the TLS port: exit 4, clear message, bounded" \
  "$([[ $rc == 4 && $out == *handshake* && $took -le 8 ]] && echo yes || echo no)" "(rc $rc in ${took}s: $out)"

# --- permissions ---
ctl() { "$ROOT/scripts/broker.sh" ctl "$@" >/dev/null; }
SECRET=s3cret-Pa55
ctl add_user limited "$SECRET"
ctl add_vhost restricted
ctl set_permissions -p / limited '^lim-.*' '^lim-.*' '^lim-.*'
LIMITED="amqp://limited:$SECRET@127.0.0.1:$AMQPRPC_BROKER_PORT"

out=$("$CLI" serve -q --queue not-mine --url "$LIMITED/%2F" 2>&1) && rc=0 || rc=$?
check "serving a queue without permission: permission_denied, exit 4" \
  "$([[ $rc == 4 && $out == *permission_denied* && $out == *ACCESS_REFUSED* ]] && echo yes || echo no)" "(rc $rc: $out)"
all_output="$out"

out=$("$CLI" call --timeout 5 --url "$LIMITED/restricted" lim-q x 2>&1) && rc=0 || rc=$?
check "a vhost without permission: permission_denied, exit 4" \
  "$([[ $rc == 4 && $out == *permission_denied* && $out == *restricted* ]] && echo yes || echo no)" "(rc $rc: $out)"
all_output+="$out"

out=$("$CLI" call --timeout 5 --url "amqp://limited:wrong-$SECRET@127.0.0.1:$AMQPRPC_BROKER_PORT/%2F" lim-q x 2>&1) && rc=0 || rc=$?
check "a wrong password: permission_denied, exit 4" \
  "$([[ $rc == 4 && $out == *permission_denied* ]] && echo yes || echo no)" "(rc $rc: $out)"
all_output+="$out"

"$CLI" serve -q --queue lim-echo --url "$LIMITED/%2F" >"$WORK/lim-serve.log" 2>&1 &
PIDS+=($!)
wait_serving "$WORK/lim-serve.log"
out=$("$CLI" call --timeout 10 --url "$LIMITED/%2F" lim-echo "x" 2>&1) && rc=0 || rc=$?
check "publishing without write permission on the default exchange: permission_denied" \
  "$([[ $rc == 4 && $out == *permission_denied* && $out == *amq.default* ]] && echo yes || echo no)" "(rc $rc: $out)"
all_output+="$out"
ctl set_permissions -p / limited '^lim-.*' '^(lim-.*|amq\.default)$' '^lim-.*'
out=$("$CLI" call --json --timeout 10 --url "$LIMITED/%2F" lim-echo "allowed" 2>&1) && rc=0 || rc=$?
check "the same user on its own queues works" "$([[ $rc == 0 && $out == *'"body":"allowed"'* ]] && echo yes || echo no)" "(rc $rc: $out)"
all_output+="$out$(cat "$WORK/lim-serve.log" "$WORK/serve.log")"

check "no password appears in anything printed" \
  "$([[ $all_output != *"$SECRET"* && $all_output == *'****'* ]] && echo yes || echo no)"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
