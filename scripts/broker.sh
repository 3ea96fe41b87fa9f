#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A private RabbitMQ node for amqp-rpc development and tests.
#
# Usage: scripts/broker.sh COMMAND [ARGS...]
#   start        start the node in the background (no-op if already running); prints
#                the AMQP URL on stdout, progress and the log location on stderr
#   stop         stop the node (safe when not running); stops the private epmd too
#                when no other instance is using it
#   status       print running / not running with the URL; exit 0 if running, else 3
#   url          print the AMQP URL (amqp://guest:guest@127.0.0.1:PORT/%2F)
#   ctl ARGS...  run rabbitmqctl against this node (bounded by AMQPRPC_BROKER_CTL_TIMEOUT)
#   logs         print the log directory
#   pid          print the node's Erlang VM pid (fault tests kill it with SIGKILL)
#   clean        stop, then delete the instance directory (all its data)
#   stop-epmd    stop the private epmd, if this script started it and no instance uses it
#
# Environment (all optional):
#   AMQPRPC_BROKER_NAME       instance name (default amqprpc); node name NAME@localhost
#   AMQPRPC_BROKER_PORT       AMQP port (default 11672), listening on 127.0.0.1 only
#   AMQPRPC_BROKER_DIST_PORT  Erlang distribution port (default AMQP port + 10000)
#                             rabbitmqctl's own distribution ports: DIST_PORT+10000..+10010
#   AMQPRPC_BROKER_DIR        instance dir (default <repo>/build/rabbitmq/NAME)
#   AMQPRPC_BROKER_EXTRA_CONF file whose lines are appended to rabbitmq.conf
#   AMQPRPC_BROKER_COOKIE     Erlang cookie (default: random, kept in the instance's
#                             private HOME); give several instances the same one to
#                             cluster them
#   AMQPRPC_BROKER_START_TIMEOUT  seconds to wait for start (default 90)
#   AMQPRPC_BROKER_CTL_TIMEOUT    seconds for one rabbitmqctl call (default 60)
#   AMQPRPC_EPMD_PORT         private epmd port (default 14369), on 127.0.0.1 only
#   AMQPRPC_EPMD_DIR          epmd state dir (default /tmp/amqprpc-epmd-PORT)
#
# Ports: an instance on AMQP port P uses P (AMQP), P+10000 (Erlang distribution) and lets its
# rabbitmqctl runs pick from P+20000..P+20010. With AMQP ports in 11000-11999, the three kinds
# live in disjoint bands (11xxx, 21xxx, 31xxx-32009), so no instance's rabbitmqctl can take
# another instance's AMQP or distribution port (ctl ranges may overlap each other: each run
# takes a free port of its range). All of them, and the private epmd (14369), lie below Linux's
# ephemeral range (32768-60999): an outgoing connection can never hold one of them — not even
# a client reconnecting to a stopped node, whose connect can land on the very port it dials
# (a TCP self-connect) and keep the node from listening there again. The project's instances:
# test 11672, demo 11700, bench 11710, faults 11800, cluster 11811-11813, tls 11830 (+ its TLS
# listener 11831).
#
# Every instance that uses the same AMQPRPC_EPMD_PORT shares one private epmd. The first
# `start` launches it (in the background, PID recorded in AMQPRPC_EPMD_DIR/epmd.pid);
# each running instance leaves a marker in AMQPRPC_EPMD_DIR/users/; the `stop` that
# removes the last live marker kills that epmd by its PID. An epmd this script did not
# start (e.g. a system one) is never stopped. Nothing here touches the system broker or
# the system epmd (port 4369).
#
# Layout: scripts/lib/common.sh (messages, checks), scripts/lib/proc.sh (PIDs, signals,
# probes), scripts/lib/epmd.sh (the shared private epmd); this file: the node's lifecycle.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
# shellcheck source=lib/common.sh
source "$SCRIPT_DIR/lib/common.sh"
# shellcheck source=lib/proc.sh
source "$SCRIPT_DIR/lib/proc.sh"

NAME="${AMQPRPC_BROKER_NAME:-amqprpc}"
LOG_TAG="broker.sh[$NAME]"
if [[ ! "$NAME" =~ ^[A-Za-z0-9_-]+$ ]]; then
    say "bad AMQPRPC_BROKER_NAME '$NAME' (letters, digits, _ and - only)"
    exit 2
fi
PORT="${AMQPRPC_BROKER_PORT:-11672}"
EPMD_PORT="${AMQPRPC_EPMD_PORT:-14369}"
START_TIMEOUT="${AMQPRPC_BROKER_START_TIMEOUT:-90}"
CTL_TIMEOUT="${AMQPRPC_BROKER_CTL_TIMEOUT:-60}"
require_numbers PORT EPMD_PORT START_TIMEOUT CTL_TIMEOUT
DIST_PORT="${AMQPRPC_BROKER_DIST_PORT:-$((PORT + 10000))}"
require_numbers DIST_PORT
CTL_DIST_PORT_MIN="$((DIST_PORT + 10000))"
CTL_DIST_PORT_MAX="$((DIST_PORT + 10010))"
if [ "$CTL_DIST_PORT_MAX" -gt 65535 ]; then
    say "distribution port $DIST_PORT leaves no room for rabbitmqctl's ports (DIST_PORT+10000..+10010 <= 65535); set AMQPRPC_BROKER_DIST_PORT lower"
    exit 2
fi
DIR="$(realpath -m "${AMQPRPC_BROKER_DIR:-$REPO_ROOT/build/rabbitmq/$NAME}")"

NODE="$NAME@localhost"
URL="amqp://guest:guest@127.0.0.1:$PORT/%2F"
RMQ_BIN=/usr/lib/rabbitmq/bin
ETC_DIR="$DIR/etc"
LOG_DIR="$DIR/log"
RUN_DIR="$DIR/run"
HOME_DIR="$DIR/home"
LOG_FILE="$LOG_DIR/$NODE.log"
STDOUT_LOG="$LOG_DIR/server-stdout.log"
WRAPPER_PID_FILE="$RUN_DIR/rabbitmq-server.pid" # the rabbitmq-server script we launched
BEAM_PID_FILE="$RUN_DIR/beam.pid"               # written by RabbitMQ itself

EPMD_DIR="$(realpath -m "${AMQPRPC_EPMD_DIR:-/tmp/amqprpc-epmd-$EPMD_PORT}")"
EPMD_INSTANCE="$NAME"
# shellcheck source=lib/epmd.sh
source "$SCRIPT_DIR/lib/epmd.sh"

# ---------------------------------------------------------------- environment

# Fill ENV_ARGS with `env` arguments giving the private RabbitMQ environment of this
# instance (drops any RABBITMQ_* / ERL_EPMD_* inherited from the caller).
ENV_ARGS=()
build_env() {
    local v
    ENV_ARGS=()
    for v in $(compgen -e); do
        case "$v" in
        RABBITMQ_* | ERL_EPMD_*) ENV_ARGS+=(-u "$v") ;;
        esac
    done
    ENV_ARGS+=(
        HOME="$HOME_DIR"
        LC_ALL=C.UTF-8 LANG=C.UTF-8
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1
        RABBITMQ_NODENAME="$NODE"
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$PORT"
        RABBITMQ_DIST_PORT="$DIST_PORT"
        RABBITMQ_CTL_DIST_PORT_MIN="$CTL_DIST_PORT_MIN"
        RABBITMQ_CTL_DIST_PORT_MAX="$CTL_DIST_PORT_MAX"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CONF_ENV_FILE="$ETC_DIR/rabbitmq-env.conf"
        RABBITMQ_CONFIG_FILE="$ETC_DIR/rabbitmq"
        RABBITMQ_ADVANCED_CONFIG_FILE="$ETC_DIR/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$ETC_DIR/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$DIR/mnesia"
        RABBITMQ_LOG_BASE="$LOG_DIR"
        RABBITMQ_PID_FILE="$BEAM_PID_FILE"
    )
}

# Run a command with the private RabbitMQ environment of this instance.
rmq_env() {
    build_env
    env "${ENV_ARGS[@]}" "$@"
}

# rabbitmqctl against this node, bounded.
ctl() {
    rmq_env timeout -k 5 "$CTL_TIMEOUT" "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"
}

# ---------------------------------------------------------------- this node's processes

# True if PID is a process started for this instance (checks its environment).
is_ours() { env_has "$1" "RABBITMQ_NODENAME=$NODE" "HOME=$HOME_DIR"; }

wrapper_pid() {
    local pid
    pid="$(read_pid "$WRAPPER_PID_FILE")"
    if is_ours "$pid"; then printf '%s' "$pid"; fi
}

beam_pid() {
    local pid
    pid="$(read_pid "$BEAM_PID_FILE")"
    if is_ours "$pid" && [ "$(comm_of "$pid")" = beam.smp ]; then
        printf '%s' "$pid"
    fi
}

epmd_lists_node() { epmd_lists "$NAME"; }

# ---------------------------------------------------------------- node

node_answers() { # the node is up and RabbitMQ is running
    rmq_env timeout -k 2 20 "$RMQ_BIN/rabbitmqctl" -n "$NODE" -q await_startup --timeout 10 >/dev/null 2>&1
}

write_config() {
    mkdir -p "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" "$HOME_DIR" "$DIR/mnesia"
    chmod 700 "$HOME_DIR"
    {
        echo "# generated by scripts/broker.sh; edits are overwritten on start"
        echo "listeners.tcp.1 = 127.0.0.1:$PORT"
        echo "log.file = $NODE.log"
        echo "log.file.level = info"
        echo "log.console = false"
        if [ -n "${AMQPRPC_BROKER_EXTRA_CONF:-}" ]; then
            [ -r "$AMQPRPC_BROKER_EXTRA_CONF" ] ||
                die "AMQPRPC_BROKER_EXTRA_CONF=$AMQPRPC_BROKER_EXTRA_CONF is not readable"
            echo "# from $AMQPRPC_BROKER_EXTRA_CONF"
            cat "$AMQPRPC_BROKER_EXTRA_CONF"
        fi
    } >"$ETC_DIR/rabbitmq.conf"
    echo '[].' >"$ETC_DIR/enabled_plugins"
    : >"$ETC_DIR/rabbitmq-env.conf"
    local cookie="$HOME_DIR/.erlang.cookie" want
    if [ -n "${AMQPRPC_BROKER_COOKIE:-}" ]; then
        want="$AMQPRPC_BROKER_COOKIE"
    elif [ -s "$cookie" ]; then
        want="$(cat "$cookie")"
    else
        want="$(head -c 24 /dev/urandom | od -An -tx1 | tr -dc '0-9a-f' | tr 'a-f' 'A-F')"
    fi
    if [ ! -s "$cookie" ] || [ "$(cat "$cookie")" != "$want" ]; then
        rm -f "$cookie"
        (umask 077 && printf '%s' "$want" >"$cookie")
        chmod 400 "$cookie"
    fi
}

show_log_tail() {
    local f
    for f in "$STDOUT_LOG" "$LOG_FILE"; do
        if [ -s "$f" ]; then
            if grep -q '\[error\]' "$f"; then
                say "---- first errors in $f"
                grep -m 12 '\[error\]' "$f" >&2 || true
            fi
            say "---- last lines of $f"
            tail -n 15 "$f" >&2 || true
        fi
    done
    if [ -f "$DIR/erl_crash.dump" ]; then
        say "Erlang crash dump: $DIR/erl_crash.dump"
    fi
}

# Register this instance as a user of epmd and launch the server. Caller holds the lock.
launch() {
    ensure_epmd
    rm -f "$BEAM_PID_FILE" "$DIR/erl_crash.dump"
    : >"$STDOUT_LOG"
    build_env
    # The subshell execs env, which execs setsid, which execs rabbitmq-server: $! is
    # the PID of the rabbitmq-server script (it runs beam.smp as its child).
    (cd "$DIR" && close_fds && exec env "${ENV_ARGS[@]}" setsid "$RMQ_BIN/rabbitmq-server" \
        </dev/null >>"$STDOUT_LOG" 2>&1) &
    local pid=$!
    echo "$pid" >"$WRAPPER_PID_FILE"
    epmd_register "$pid"
}

# Failed start: show the logs; if this invocation launched the node, kill what is left of
# it (by PID) and release epmd. Args: launched(0/1) wrapper_pid message
abort_start() {
    show_log_tail
    if [ "$1" = 1 ]; then
        terminate "$(beam_pid)" "$2"
        rm -f "$WRAPPER_PID_FILE" "$BEAM_PID_FILE"
        epmd_release
    fi
    die "$3"
}

cmd_start() {
    # shellcheck source=deps.sh disable=SC1091
    source "$SCRIPT_DIR/deps.sh"
    amqprpc_deps_install rabbitmq-server || die "could not install rabbitmq-server"

    local wpid bpid launched=0
    wpid="$(wrapper_pid)"
    bpid="$(beam_pid)"
    if [ -n "$wpid" ] || [ -n "$bpid" ]; then
        if node_answers && tcp_open "$PORT"; then
            say "already running (node $NODE, pid ${bpid:-$wpid})"
            say "logs: $LOG_DIR"
            echo "$URL"
            return 0
        fi
        say "a previous start (pid ${wpid:-$bpid}) is alive but not answering; waiting for it"
    else
        if tcp_open "$PORT"; then
            die "127.0.0.1:$PORT is already in use by another process (set AMQPRPC_BROKER_PORT)"
        fi
        if tcp_open "$DIST_PORT"; then
            die "127.0.0.1:$DIST_PORT is already in use (set AMQPRPC_BROKER_DIST_PORT)"
        fi
        write_config
        say "starting node $NODE (AMQP 127.0.0.1:$PORT, dist $DIST_PORT, epmd $EPMD_PORT, dir $DIR)"
        with_epmd_lock launch
        wpid="$(read_pid "$WRAPPER_PID_FILE")"
        launched=1
    fi

    local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) left
    # 1) RabbitMQ application started (await_startup), bounded.
    while :; do
        left=$((deadline - SECONDS))
        if [ "$left" -le 0 ]; then
            abort_start "$launched" "$wpid" "node did not start within ${START_TIMEOUT}s"
        fi
        if ! alive "$wpid" && [ -z "$(beam_pid)" ]; then
            abort_start "$launched" "$wpid" "rabbitmq-server exited during startup"
        fi
        if epmd_lists_node &&
            rmq_env timeout -k 2 "$((left < 30 ? left : 30))" "$RMQ_BIN/rabbitmqctl" -n "$NODE" -q \
                await_startup --timeout "$((left < 30 ? left : 30))" >/dev/null 2>&1; then
            break
        fi
        sleep 0.2
    done
    # 2) The AMQP listener accepts connections, bounded.
    until tcp_open "$PORT"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            abort_start "$launched" "$wpid" \
                "AMQP port 127.0.0.1:$PORT not accepting connections within ${START_TIMEOUT}s"
        fi
        sleep 0.1
    done
    bpid="$(beam_pid)"
    [ -n "$bpid" ] && epmd_register "$bpid"
    say "running (node $NODE, beam pid ${bpid:-?}) after $((SECONDS - t0))s"
    say "logs: $LOG_DIR"
    echo "$URL"
}

cmd_stop() {
    local wpid bpid
    wpid="$(wrapper_pid)"
    bpid="$(beam_pid)"
    if [ -n "$wpid" ] || [ -n "$bpid" ] || epmd_lists_node; then
        say "stopping node $NODE"
        local t0=$SECONDS
        if ! ctl -q stop >/dev/null 2>&1; then
            say "rabbitmqctl stop failed or timed out"
        fi
        if ! wait_gone 20 "$wpid" "$bpid"; then
            terminate "$bpid" "$wpid"
        fi
        say "stopped after $((SECONDS - t0))s"
    else
        say "not running"
    fi
    rm -f "$WRAPPER_PID_FILE" "$BEAM_PID_FILE"
    epmd_release
}

cmd_status() {
    local bpid
    bpid="$(beam_pid)"
    if [ -n "$bpid$(wrapper_pid)" ] && node_answers; then
        echo "running: node $NODE, pid ${bpid:-?}, $URL (logs: $LOG_DIR)"
        return 0
    fi
    echo "not running: node $NODE ($URL)"
    return 3
}

cmd_clean() {
    cmd_stop
    case "$DIR" in
    "" | / | "$REPO_ROOT" | "$HOME") die "refusing to delete '$DIR'" ;;
    esac
    say "deleting $DIR"
    rm -rf "$DIR"
}

cmd_stop_epmd() {
    if [ ! -d "$EPMD_USERS" ]; then
        say "no private epmd state in $EPMD_DIR"
        return 0
    fi
    with_epmd_lock maybe_stop_epmd 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e '/^# shellcheck/d' -e 's/^# \{0,1\}//' >&2
}

cmd="${1:-}"
[ "$#" -gt 0 ] && shift
case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) echo "$URL" ;;
ctl) ctl "$@" ;;
logs) echo "$LOG_DIR" ;;
pid) # the Erlang VM's pid (for fault tests that kill it); exit 3 when not running
    pid="$(read_pid "$BEAM_PID_FILE")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; else exit 3; fi
    ;;
clean) cmd_clean ;;
stop-epmd) cmd_stop_epmd ;;
-h | --help | help) usage ;;
*)
    usage
    exit 2
    ;;
esac
