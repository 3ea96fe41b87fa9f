#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting, builds normal, sanitizer
# (ASan + UBSan) and fuzzing (clang, libFuzzer) trees, starts a private RabbitMQ node (unless
# AMQP_URL names one), runs unit, integration and interop tests in the first two, runs each fuzz
# target for a bounded time (AMQPRPC_FUZZ_SECONDS, default 20), stops the node.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
amqprpc_deps_install

JOBS="$(nproc)"
step() { printf '\n==> %s\n' "$*"; }

step "format check (clang-format)"
mapfile -t sources < <(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find include src examples tests bench tools -name '*.[ch]pp')
clang-format --dry-run --Werror "${sources[@]}"

step "build (RelWithDebInfo) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMQPRPC_WERROR=ON >/dev/null
cmake --build build -j "$JOBS"

step "build (ASan + UBSan) in build-asan/"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAMQPRPC_SANITIZE=ON -DAMQPRPC_WERROR=ON >/dev/null
cmake --build build-asan -j "$JOBS"

step "build (libFuzzer targets, clang) in build-fuzz/"
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DAMQPRPC_FUZZ=ON -DAMQPRPC_WERROR=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMQPRPC_FUZZ_SECONDS="${AMQPRPC_FUZZ_SECONDS:-20}" >/dev/null
cmake --build build-fuzz -j "$JOBS"

if [[ -z "${AMQP_URL:-}" ]]; then
  export AMQPRPC_BROKER_NAME=amqprpc-test AMQPRPC_BROKER_PORT=35672
  step "private RabbitMQ node ($AMQPRPC_BROKER_NAME on 127.0.0.1:$AMQPRPC_BROKER_PORT)"
  trap 'scripts/broker.sh stop || true' EXIT
  AMQP_URL="$(scripts/broker.sh start)"
  export AMQP_URL
else
  step "using the broker at AMQP_URL"
fi

# Each fault scenario appends its report line here; they are shown at the end.
export AMQPRPC_FAULT_REPORT="$ROOT/build/fault-report.txt"
rm -f "$AMQPRPC_FAULT_REPORT"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
status=0
step "tests: normal build"
ctest --test-dir build --output-on-failure --timeout 300 || status=1
step "tests: sanitizer build"
ctest --test-dir build-asan --output-on-failure --timeout 300 || status=1
step "fuzzing: each target for ${AMQPRPC_FUZZ_SECONDS:-20} s"
ctest --test-dir build-fuzz --output-on-failure --timeout 600 || status=1

if [[ -s "$AMQPRPC_FAULT_REPORT" ]]; then
  step "fault reports (normal and sanitizer builds)"
  cat "$AMQPRPC_FAULT_REPORT"
fi
if [[ $status -eq 0 ]]; then step "all tests passed"; else step "SOME TESTS FAILED"; fi
exit "$status"
