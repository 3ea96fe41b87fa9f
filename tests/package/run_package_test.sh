#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds a small program against it twice, with
# find_package(amqprpc) (without protobuf) and with pkg-config; both must run and call a server.
# A project with its own .proto (proto_consumer/) builds with amqprpc_generate() and the
# installed protoc-gen-amqprpc under -Werror, serves and calls its service; without protobuf,
# amqprpc_generate() says what is missing. The installed CLI must answer --help.
#   Usage: run_package_test.sh BUILD_DIR   (needs AMQP_URL)
set -euo pipefail
BUILD=$1
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${AMQP_URL:?AMQP_URL must point at a broker}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PREFIX="$WORK/prefix"

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
for f in lib/libamqprpc.a include/amqprpc/client.hpp lib/cmake/amqprpc/amqprpcConfig.cmake \
         lib/pkgconfig/amqprpc.pc bin/amqp-rpc bin/amqp-rpc-bench bin/protoc-gen-amqprpc \
         lib/cmake/amqprpc/amqprpcGenerate.cmake lib/cmake/amqprpc/amqprpcPluginTargets.cmake; do
  [[ -e "$PREFIX/$f" ]] || { echo "FAIL - not installed: $f"; exit 1; }
done
echo "ok   - installed library, headers, CMake package, pkg-config file, CLI, protoc plugin"

# find_package(amqprpc) must not need protobuf: only amqprpc_generate() and protobuf.hpp do.
cmake -S "$HERE/consumer" -B "$WORK/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX" \
  -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON >/dev/null
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

cmake -S "$HERE/proto_consumer" -B "$WORK/proto-build" -DCMAKE_PREFIX_PATH="$PREFIX" >/dev/null
cmake --build "$WORK/proto-build" >/dev/null
out=$("$WORK/proto-build/proto_consumer" "package-proto-$$")
[[ "$out" == "generated:hello, package:unimplemented" ]] ||
  { echo "FAIL - amqprpc_generate build printed '$out'"; exit 1; }
echo "ok   - amqprpc_generate() build with the installed plugin runs: $out"

# A new user's next steps: serve it, then describe, probe and call it with the installed CLI in
# JSON, with no generated code on the CLI's side.
QUEUE="package-cli-$$"
"$WORK/proto-build/proto_consumer" "$QUEUE" --serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 600); do grep -q serving "$WORK/serve.log" && break; sleep 0.1; done
grep -q serving "$WORK/serve.log" || { echo "FAIL - proto_consumer --serve did not start"; cat "$WORK/serve.log"; exit 1; }
described=$("$PREFIX/bin/amqp-rpc" describe --timeout 30 "$QUEUE")
grep -q "Hello(pkgtest.v1.HelloRequest) returns (pkgtest.v1.HelloReply)" <<<"$described" ||
  { echo "FAIL - amqp-rpc describe printed: $described"; kill -TERM "$SERVER"; exit 1; }
echo "ok   - installed amqp-rpc describes the generated service"
"$PREFIX/bin/amqp-rpc" health --timeout 30 "$QUEUE" >/dev/null ||
  { echo "FAIL - amqp-rpc health"; kill -TERM "$SERVER"; exit 1; }
reply=$("$PREFIX/bin/amqp-rpc" call --timeout 30 "$QUEUE" '{"name":"cli"}' --method Hello)
[[ "$reply" == '{"greeting":"hello, cli"}' ]] ||
  { echo "FAIL - amqp-rpc call --method Hello printed '$reply'"; kill -TERM "$SERVER"; exit 1; }
echo "ok   - installed amqp-rpc health says serving and call --method speaks JSON: $reply"
kill -TERM "$SERVER"
wait "$SERVER" || { echo "FAIL - proto_consumer --serve did not stop cleanly"; exit 1; }

if cmake -S "$HERE/proto_consumer" -B "$WORK/no-protobuf" -DCMAKE_PREFIX_PATH="$PREFIX" \
     -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON >"$WORK/no-protobuf.log" 2>&1 ||
   ! grep -q "amqprpc_generate: needs protobuf" "$WORK/no-protobuf.log"; then
  echo "FAIL - amqprpc_generate without protobuf:"
  cat "$WORK/no-protobuf.log"
  exit 1
fi
echo "ok   - amqprpc_generate() without protobuf says what is missing"

"$PREFIX/bin/amqp-rpc" --help | grep -q "amqp-rpc" || { echo "FAIL - amqp-rpc --help"; exit 1; }
"$PREFIX/bin/amqp-rpc" call --help | grep -q -- "--json" || { echo "FAIL - amqp-rpc call --help"; exit 1; }
echo "ok   - installed amqp-rpc answers --help"
echo "8 passed, 0 failed"
