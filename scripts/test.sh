#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting, builds normal, sanitizer
# (ASan + UBSan), fuzzing (clang, libFuzzer) and ThreadSanitizer trees, runs unit, integration,
# interop, fault, CLI, security, package and build-type tests in the first two, unit and
# integration tests in the ThreadSanitizer tree, each fuzz target for a bounded time
# (AMQPRPC_FUZZ_SECONDS, default 15), and stops every node it started.
#
# Where the time goes, and how it is kept short on a 2-core machine:
#   - compiling, mostly: the trees carry line tables, not full debug information, link with
#     lld when installed, and compile the test files in unity groups (tests/CMakeLists.txt);
#     the sanitizer trees build only what their tests run;
#   - the private nodes (the test broker, the fault node, the three-node cluster) boot in the
#     background while the normal tree builds, and are awaited (bounded) before the tests;
#   - the normal tree's tests run while the sanitizer trees build (the builds run under
#     `nice`, so the tests keep their CPU); when those are built, a lane builds the fuzzing
#     tree (under nice too) and runs its fuzzers, one at a time, into the last phase;
#   - then two more lanes: the sanitizer tree's fault scenarios; its other tests, then the
#     ThreadSanitizer tree's.
# Two lanes never share a node: the fault scenarios of both trees run in one lane, one tree
# after the other, and the TLS node's security test never runs twice at once. Each phase's
# time is printed at the end.
#
# Environment: AMQP_URL (use that broker instead of a private node), AMQPRPC_TEST_BROKER_NAME
# and AMQPRPC_TEST_BROKER_PORT (the private test node, default amqprpc-test on 11672),
# AMQPRPC_FUZZ_SECONDS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SUITE_START=$SECONDS
PHASES=()
phase_done() { # NAME START_SECONDS
  PHASES+=("$(printf '%-44s %4d s' "$1" "$((SECONDS - $2))")")
}
step() { printf '\n==> %s\n' "$*"; }

t=$SECONDS
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
amqprpc_deps_install
phase_done "packages (apt, when missing)" "$t"

JOBS="$(nproc)"
LOGS="$ROOT/build/suite-logs"

# What the suite's four trees share. Debug information is line tables and function names
# (GCC's -g1, clang's -gline-tables-only), which is what the sanitizers' symbolized stack
# traces and a debugger's backtrace use: the variable locations of a full -g cost GCC about a
# third of its -O2 compile time. The generated code is the same either way.
RELWITHDEBINFO_GCC=-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG"
DEBUG_GCC=-DCMAKE_CXX_FLAGS_DEBUG=-g1
RELWITHDEBINFO_CLANG=-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG"
# lld links the sanitizer trees' test programs (100 MB and more) two to three times faster than
# GNU ld; used when installed (scripts/deps.sh installs it).
LINKER=()
if command -v ld.lld >/dev/null; then
  LINKER=(-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld)
fi
mkdir -p "$LOGS"

# ------------------------------------------------------------------ private nodes, in background
FAULT_NODE=(env AMQPRPC_BROKER_NAME=amqprpc-faults AMQPRPC_BROKER_PORT=11800)
BG_PIDS=()
STARTED_TEST_BROKER=0
cleanup() {
  local pid
  # A lane is a process group of its own (ctest and its tests): end all of it.
  for pid in "${BG_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${BG_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Stop every node this run may have started, side by side.
  local -a stops=()
  if [[ $STARTED_TEST_BROKER -eq 1 ]]; then
    scripts/broker.sh stop >/dev/null 2>&1 &
    stops+=($!)
  fi
  "${FAULT_NODE[@]}" scripts/broker.sh stop >/dev/null 2>&1 &
  stops+=($!)
  scripts/cluster.sh stop >/dev/null 2>&1 &
  stops+=($!)
  for pid in "${stops[@]}"; do wait "$pid" || true; done
}
trap cleanup EXIT

step "private RabbitMQ nodes boot in the background (logs in $LOGS)"
if [[ -z "${AMQP_URL:-}" ]]; then
  export AMQPRPC_BROKER_NAME="${AMQPRPC_TEST_BROKER_NAME:-amqprpc-test}"
  export AMQPRPC_BROKER_PORT="${AMQPRPC_TEST_BROKER_PORT:-11672}"
  STARTED_TEST_BROKER=1
  scripts/broker.sh start >"$LOGS/test-broker.log" 2>&1 &
  TEST_BROKER_PID=$!
  BG_PIDS+=("$TEST_BROKER_PID")
  AMQP_URL="$(scripts/broker.sh url)"
  export AMQP_URL
  echo "test node $AMQPRPC_BROKER_NAME: $AMQP_URL"
fi
"${FAULT_NODE[@]}" scripts/broker.sh start >"$LOGS/fault-node.log" 2>&1 &
FAULT_NODE_PID=$!
BG_PIDS+=("$FAULT_NODE_PID")
scripts/cluster.sh start >"$LOGS/cluster.log" 2>&1 &
CLUSTER_PID=$!
BG_PIDS+=("$CLUSTER_PID")
NODES_START=$SECONDS

# Waits for a background start (each bounded by broker.sh's own timeouts); shows its log if it
# failed.
await_start() { # PID WHAT LOG
  if ! wait "$1"; then
    echo "could not start $2:" >&2
    cat "$3" >&2
    return 1
  fi
}

# ------------------------------------------------------------------ format, normal build
t=$SECONDS
step "format check (clang-format)"
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find include src examples tests bench tools -name '*.[ch]pp')
clang-format --dry-run --Werror "${sources[@]}"
phase_done "format check" "$t"

t=$SECONDS
step "build (RelWithDebInfo) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo "$RELWITHDEBINFO_GCC" "${LINKER[@]}" \
  -DAMQPRPC_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"
phase_done "build: normal" "$t"

t=$SECONDS
step "awaiting the private nodes"
if [[ $STARTED_TEST_BROKER -eq 1 ]]; then
  await_start "$TEST_BROKER_PID" "the test node" "$LOGS/test-broker.log"
fi
await_start "$FAULT_NODE_PID" "the fault node" "$LOGS/fault-node.log"
await_start "$CLUSTER_PID" "the cluster" "$LOGS/cluster.log"
BG_PIDS=()
echo "nodes ready $((SECONDS - NODES_START)) s after they were launched"
phase_done "awaiting nodes (after the normal build)" "$t"

# Each fault scenario appends its report line here; they are shown at the end.
export AMQPRPC_FAULT_REPORT="$ROOT/build/fault-report.txt"
rm -f "$AMQPRPC_FAULT_REPORT"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# The fault scenarios keep their nodes between scenarios and trees; cleanup() stops them.
NO_NODE_STOP=(-E '^faults\.stop_' -FC fault_nodes)
status=0

# A lane: a command run in the background with its output in $LOGS/NAME.log. Sets LANE_PID.
lane() { # NAME CMD...
  local name=$1
  shift
  set -m # its own process group, so that cleanup() can end it with its children
  (
    t0=$SECONDS
    rc=0
    "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    echo "$((SECONDS - t0))" >"$LOGS/$name.seconds"
    exit "$rc"
  ) &
  LANE_PID=$!
  set +m
}
# Waits for a lane, prints its log and notes its time; a failed lane fails the suite.
finish_lane() { # PID NAME
  local rc=0
  wait "$1" || rc=$?
  step "$2 (exit $rc)"
  cat "$LOGS/$2.log"
  PHASES+=("$(printf '%-44s %4d s' "  lane: $2" "$(cat "$LOGS/$2.seconds" 2>/dev/null || echo 0)")")
  if [[ $rc -ne 0 ]]; then status=1; fi
}

# ------------------------------------------------------------------ normal tests | other trees
t=$SECONDS
step "tests of the normal build, while the sanitizer trees build, then the fuzzing tree"
lane tests-normal ctest --test-dir build --output-on-failure --timeout 300 "${NO_NODE_STOP[@]}"
NORMAL=$LANE_PID
BG_PIDS+=("$NORMAL")
builds_ok=1
b=$SECONDS
step "build (ASan + UBSan) in build-asan/"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug "$DEBUG_GCC" "${LINKER[@]}" \
  -DAMQPRPC_SANITIZE=ON -DAMQPRPC_WERROR=ON \
  -DAMQPRPC_BUILD_BENCH=OFF >/dev/null
# Only what this tree's tests run (ctest names a program missing): not the benchmark nor the
# calculator demo's programs, which no test runs (the normal tree builds them).
nice -n 10 cmake --build build-asan -j "$JOBS" --target unit_tests typed_tests integration_tests \
  fault_tests amqprpc_test_server fib_server fib_client checkout_demo amqp-rpc \
  protoc-gen-amqprpc || builds_ok=0
PHASES+=("$(printf '%-44s %4d s' "  build: sanitizer" "$((SECONDS - b))")")
b=$SECONDS
step "build (ThreadSanitizer: unit and integration tests) in build-tsan/"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo "$RELWITHDEBINFO_GCC" "${LINKER[@]}" \
  -DAMQPRPC_TSAN=ON -DAMQPRPC_WERROR=ON -DAMQPRPC_BUILD_BENCH=OFF >/dev/null
nice -n 10 cmake --build build-tsan -j "$JOBS" --target unit_tests integration_tests \
  amqprpc_test_server || builds_ok=0
PHASES+=("$(printf '%-44s %4d s' "  build: thread sanitizer" "$((SECONDS - b))")")
# The fuzzing lane starts as soon as the builds above are done, whether the normal tests are or
# not: the fuzzing tree is built (under nice, after them: a build beside theirs would only slow
# both), then its fuzzers run one at a time (a core, at the usual priority, so that each gets
# its whole time), beside the tests, which mostly wait on brokers. It ends in the next phase.
# shellcheck disable=SC2317 # run through `lane`
fuzzing() {
  cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DAMQPRPC_FUZZ=ON -DAMQPRPC_WERROR=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo "$RELWITHDEBINFO_CLANG" "${LINKER[@]}" \
    -DAMQPRPC_FUZZ_SECONDS="${AMQPRPC_FUZZ_SECONDS:-15}" >/dev/null || return 1
  nice -n 10 cmake --build build-fuzz -j "$JOBS" || return 1
  ctest --test-dir build-fuzz --output-on-failure --timeout 600 -j 1
}
FUZZ=
if [[ $builds_ok -eq 1 ]]; then
  lane fuzzing fuzzing
  FUZZ=$LANE_PID
  BG_PIDS+=("$FUZZ")
fi
finish_lane "$NORMAL" tests-normal
BG_PIDS=()
if [[ -n $FUZZ ]]; then BG_PIDS+=("$FUZZ"); fi
phase_done "normal tests | sanitizer builds, fuzzing" "$t"
if [[ $builds_ok -ne 1 ]]; then
  step "A BUILD FAILED"
  exit 1
fi

# ------------------------------------------------------------------ sanitizer faults | the rest
t=$SECONDS
step "sanitizer build: fault scenarios beside the other tests, and the fuzzers end (each runs ${AMQPRPC_FUZZ_SECONDS:-15} s)"
lane tests-asan-faults ctest --test-dir build-asan --output-on-failure --timeout 300 -L faults \
  "${NO_NODE_STOP[@]}"
FAULTS=$LANE_PID
BG_PIDS+=("$FAULTS")
# shellcheck disable=SC2317 # run through `lane`
rest() {
  local rc=0
  ctest --test-dir build-asan --output-on-failure --timeout 300 -LE faults || rc=1
  echo
  echo "==> thread sanitizer: unit and integration tests"
  TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}" \
    ctest --test-dir build-tsan --output-on-failure --timeout 300 -L 'unit|integration' || rc=1
  return "$rc"
}
lane tests-asan-rest-and-tsan rest
REST=$LANE_PID
BG_PIDS+=("$REST")
finish_lane "$REST" tests-asan-rest-and-tsan
finish_lane "$FUZZ" fuzzing
finish_lane "$FAULTS" tests-asan-faults
BG_PIDS=()
phase_done "sanitizer tests and fuzzing" "$t"

if [[ -s "$AMQPRPC_FAULT_REPORT" ]]; then
  step "fault reports (normal and sanitizer builds)"
  cat "$AMQPRPC_FAULT_REPORT"
fi
t=$SECONDS
cleanup
trap - EXIT
phase_done "stopping the nodes" "$t"
step "time per phase"
printf '%s\n' "${PHASES[@]}"
printf '%-44s %4d s\n' "total" "$((SECONDS - SUITE_START))"
if [[ $status -eq 0 ]]; then step "all tests passed"; else step "SOME TESTS FAILED"; fi
exit "$status"
