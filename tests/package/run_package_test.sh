#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds a small program against it twice, with
# find_package(amqprpc) and with pkg-config; both must run and call a server. The installed CLI
# must answer --help.   Usage: run_package_test.sh BUILD_DIR   (needs AMQP_URL)
set -euo pipefail
BUILD=$1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${AMQP_URL:?AMQP_URL must point at a broker}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PREFIX="$WORK/prefix"

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in lib/libamqprpc.a include/amqprpc/client.hpp lib/cmake/amqprpc/amqprpcConfig.cmake \
         lib/pkgconfig/amqprpc.pc bin/amqp-rpc bin/amqp-rpc-bench; do
  [[ -e "$PREFIX/$f" ]] || { echo "FAIL - not installed: $f"; exit 1; }
done
echo "ok   - installed library, headers, CMake package, pkg-config file, CLI"

cmake -S "$HERE/consumer" -B "$WORK/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/cmake-build" >/dev/null
out=$("$WORK/cmake-build/consumer" "package-cmake-$$")
[[ "$out" == "installed:ok" ]] || { echo "FAIL - find_package build printed '$out'"; exit 1; }
echo "ok   - find_package(amqprpc) build runs: $out"

export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
# shellcheck disable=SC2046
g++ -o "$WORK/pc-consumer" "$HERE/consumer/main.cpp" $(pkg-config --cflags --libs amqprpc)
out=$("$WORK/pc-consumer" "package-pc-$$")
[[ "$out" == "installed:ok" ]] || { echo "FAIL - pkg-config build printed '$out'"; exit 1; }
echo "ok   - pkg-config amqprpc build runs: $out"

"$PREFIX/bin/amqp-rpc" --help | grep -q "amqp-rpc" || { echo "FAIL - amqp-rpc --help"; exit 1; }
"$PREFIX/bin/amqp-rpc" call --help | grep -q -- "--json" || { echo "FAIL - amqp-rpc call --help"; exit 1; }
echo "ok   - installed amqp-rpc answers --help"
echo "4 passed, 0 failed"
