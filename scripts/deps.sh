#!/usr/bin/env bash
# Install the Debian 12 packages amqp-rpc needs, only those that are missing.
#
#   scripts/deps.sh                 # install everything the project needs
#   scripts/deps.sh PKG...          # install only these packages (if missing)
#   source scripts/deps.sh          # defines amqprpc_deps_install / amqprpc_deps_missing
#   amqprpc_deps_install [PKG...]    #   and amqprpc_bench_deps_install (the benchmark's peers)
#
# Runs `apt-get update` at most once per call, and only if something is missing.
# Must run as root when something is missing. The rabbitmq-server package is never
# allowed to start a system broker: if /usr/sbin/policy-rc.d does not exist, a
# temporary one that exits 101 is put in place for the duration of the install.

AMQPRPC_DEPS_PACKAGES=(
    rabbitmq-server librabbitmq-dev libssl-dev cmake g++ make libgtest-dev libgmock-dev
    python3-pika clang libclang-rt-14-dev clang-format libcli11-dev
    nlohmann-json3-dev libprotobuf-dev protobuf-compiler libprotoc-dev libasio-dev
    libbenchmark-dev openssl procps iproute2 uuid-runtime pkg-config
    lld  # a faster linker for the test suite's trees (scripts/test.sh)
)

# Print the packages among "$@" (default: all of the project's) not installed.
amqprpc_deps_missing() {
    local pkg status
    if [ "$#" -eq 0 ]; then
        set -- "${AMQPRPC_DEPS_PACKAGES[@]}"
    fi
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "install ok installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Install the packages among "$@" (default: all of the project's) not installed.
amqprpc_deps_install() {
    local -a missing
    local policy=/usr/sbin/policy-rc.d rc=0
    mapfile -t missing < <(amqprpc_deps_missing "$@")
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing packages (${missing[*]}); run as root to install them" >&2
        return 1
    fi
    echo "deps.sh: installing ${missing[*]}" >&2
    # Subshell: its EXIT trap removes a temporary policy-rc.d even if interrupted.
    (
        if [ ! -e "$policy" ]; then
            # Keep maintainer scripts from starting services (e.g. a system rabbitmq-server).
            trap 'rm -f "$policy"' EXIT
            trap 'exit 130' INT TERM
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq &&
            apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    ) || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "deps.sh: apt-get failed (exit $rc) installing: ${missing[*]}" >&2
        return "$rc"
    fi
    mapfile -t missing < <(amqprpc_deps_missing "$@")
    if [ "${#missing[@]}" -ne 0 ]; then
        echo "deps.sh: still missing after install: ${missing[*]}" >&2
        return 1
    fi
    echo "deps.sh: done" >&2
}

# The benchmark's peers (scripts/bench.sh alone calls this; the test suite never does: it would
# install a JDK and npm packages it has no use for). Installs, only for the peers named (default
# all: java node pika aio-pika), what is missing:
#   java      Debian's librabbitmq-client-java (the official client, with libslf4j-java) and a
#             javac (default-jdk-headless) unless one is on $PATH;
#   node      nodejs and npm from Debian unless node and npm are on $PATH, then the npm package
#             rabbitmq-client at AMQPRPC_BENCH_NODE_CLIENT into BUILD_DIR/bench-peers/node;
#   pika      Debian's python3-pika;  aio-pika: Debian's python3-aio-pika.
#   amqprpc_bench_deps_install BUILD_DIR [PEER...]
AMQPRPC_BENCH_NODE_CLIENT="rabbitmq-client@5.0.8"
amqprpc_bench_deps_install() {
    local build="$1" peer want_node=0
    local -a pkgs=()
    shift
    if [ "$#" -eq 0 ]; then
        set -- java node pika aio-pika
    fi
    for peer in "$@"; do
        case "$peer" in
            java)
                pkgs+=(librabbitmq-client-java libslf4j-java)
                command -v javac >/dev/null 2>&1 || pkgs+=(default-jdk-headless)
                ;;
            node)
                want_node=1
                command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
                command -v npm >/dev/null 2>&1 || pkgs+=(npm)
                ;;
            pika) pkgs+=(python3-pika) ;;
            aio-pika) pkgs+=(python3-aio-pika) ;;
            none) ;;
            *)
                echo "deps.sh: unknown peer '$peer' (java, node, pika, aio-pika)" >&2
                return 2
                ;;
        esac
    done
    if [ "${#pkgs[@]}" -gt 0 ]; then
        amqprpc_deps_install "${pkgs[@]}" || return
    fi
    if [ "$want_node" -eq 1 ]; then
        local dir="$build/bench-peers/node" name="${AMQPRPC_BENCH_NODE_CLIENT%@*}"
        local version="${AMQPRPC_BENCH_NODE_CLIENT##*@}"
        if [ "$(node -p "require('$dir/node_modules/$name/package.json').version" 2>/dev/null)" != "$version" ]; then
            echo "deps.sh: npm install $AMQPRPC_BENCH_NODE_CLIENT into $dir" >&2
            mkdir -p "$dir"
            if ! npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error \
                "$AMQPRPC_BENCH_NODE_CLIENT" >&2; then
                echo "deps.sh: npm install $AMQPRPC_BENCH_NODE_CLIENT failed" >&2
                return 1
            fi
        fi
    fi
}

# Run directly (not sourced): install.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    amqprpc_deps_install "$@"
fi
