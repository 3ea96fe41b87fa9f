# What the CLI test scripts share: a scratch directory, the processes they start (ended on
# exit), and check/run. Source it after setting -euo pipefail.
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
passed=0
failed=0
check() { # NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then
    echo "ok   - $1"
    passed=$((passed + 1))
  else
    echo "FAIL - $1: expected $(printf '%q' "$2"), got $(printf '%q' "$3")"
    failed=$((failed + 1))
  fi
}
run() { # prints "rc|stdout|stderr"
  local out err rc=0
  out=$("$@" 2>"$WORK/err") || rc=$?
  err=$(cat "$WORK/err")
  printf '%s|%s|%s' "$rc" "$out" "$err"
}
