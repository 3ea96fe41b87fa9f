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
#   AMQPRPC_BROKER_PORT       AMQP port (default 35672), listening on 127.0.0.1 only
#   AMQPRPC_BROKER_DIST_PORT  Erlang distribution port (default AMQP port + 1000)
#                             rabbitmqctl's own distribution ports: DIST_PORT+100..+110
#   AMQPRPC_BROKER_DIR        instance dir (default <repo>/build/rabbitmq/NAME)
#   AMQPRPC_BROKER_EXTRA_CONF file whose lines are appended to rabbitmq.conf
#   AMQPRPC_BROKER_COOKIE     Erlang cookie (default: random, kept in the instance's
#                             private HOME); give several instances the same one to
#                             cluster them
#   AMQPRPC_BROKER_START_TIMEOUT  seconds to wait for start (default 90)
#   AMQPRPC_BROKER_CTL_TIMEOUT    seconds for one rabbitmqctl call (default 60)
#   AMQPRPC_EPMD_PORT         private epmd port (default 34369), on 127.0.0.1 only
#   AMQPRPC_EPMD_DIR          epmd state dir (default /tmp/amqprpc-epmd-PORT)
#
# Every instance that uses the same AMQPRPC_EPMD_PORT shares one private epmd. The first
# `start` launches it (in the background, PID recorded in AMQPRPC_EPMD_DIR/epmd.pid);
# each running instance leaves a marker in AMQPRPC_EPMD_DIR/users/; the `stop` that
# removes the last live marker kills that epmd by its PID. An epmd this script did not
# start (e.g. a system one) is never stopped. Nothing here touches the system broker or
# the system epmd (port 4369).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

NAME="${AMQPRPC_BROKER_NAME:-amqprpc}"
if [[ ! "$NAME" =~ ^[A-Za-z0-9_-]+$ ]]; then
    echo "broker.sh: bad AMQPRPC_BROKER_NAME '$NAME' (letters, digits, _ and - only)" >&2
    exit 2
fi
PORT="${AMQPRPC_BROKER_PORT:-35672}"
DIST_PORT="${AMQPRPC_BROKER_DIST_PORT:-$((PORT + 1000))}"
CTL_DIST_PORT_MIN="$((DIST_PORT + 100))"
CTL_DIST_PORT_MAX="$((DIST_PORT + 110))"
EPMD_PORT="${AMQPRPC_EPMD_PORT:-34369}"
DIR="$(realpath -m "${AMQPRPC_BROKER_DIR:-$REPO_ROOT/build/rabbitmq/$NAME}")"
EPMD_DIR="$(realpath -m "${AMQPRPC_EPMD_DIR:-/tmp/amqprpc-epmd-$EPMD_PORT}")"
START_TIMEOUT="${AMQPRPC_BROKER_START_TIMEOUT:-90}"
CTL_TIMEOUT="${AMQPRPC_BROKER_CTL_TIMEOUT:-60}"
for v in PORT DIST_PORT EPMD_PORT START_TIMEOUT CTL_TIMEOUT; do
    if [[ ! "${!v}" =~ ^[0-9]+$ ]]; then
        echo "broker.sh: $v must be a number, got '${!v}'" >&2
        exit 2
    fi
done

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
EPMD_PID_FILE="$EPMD_DIR/epmd.pid"
EPMD_LOCK="$EPMD_DIR/epmd.lock"
EPMD_USERS="$EPMD_DIR/users"
MARKER="$EPMD_USERS/$NAME"

say() { printf 'broker.sh[%s]: %s\n' "$NAME" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

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

# ---------------------------------------------------------------- processes

read_pid() { # FILE -> pid on stdout, or nothing
    local pid=""
    if [ -f "$1" ]; then
        pid="$(tr -dc '0-9' <"$1" || true)"
    fi
    printf '%s' "$pid"
}

# True if PID exists and is not a zombie.
alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# True if PID is a process started for this instance (checks its environment).
is_ours() {
    local pid="$1"
    alive "$pid" || return 1
    [ -r "/proc/$pid/environ" ] || return 1
    local environ
    environ="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ")" || return 1
    grep -qxF "RABBITMQ_NODENAME=$NODE" <<<"$environ" &&
        grep -qxF "HOME=$HOME_DIR" <<<"$environ"
}

wrapper_pid() {
    local pid
    pid="$(read_pid "$WRAPPER_PID_FILE")"
    if is_ours "$pid"; then printf '%s' "$pid"; fi
}

beam_pid() {
    local pid
    pid="$(read_pid "$BEAM_PID_FILE")"
    if is_ours "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ]; then
        printf '%s' "$pid"
    fi
}

# Wait until none of the PIDs is alive, at most $1 seconds. Returns 1 on timeout.
wait_gone() {
    local secs="$1" pid i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        local any=0
        for pid in "$@"; do
            if alive "$pid"; then any=1; fi
        done
        [ "$any" -eq 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# TERM, then KILL, the given PIDs (only those still alive).
terminate() {
    local pid
    local -a live=()
    for pid in "$@"; do
        if alive "$pid"; then live+=("$pid"); fi
    done
    [ "${#live[@]}" -eq 0 ] && return 0
    say "sending TERM to ${live[*]}"
    kill -TERM "${live[@]}" 2>/dev/null || true
    if ! wait_gone 15 "${live[@]}"; then
        say "sending KILL to ${live[*]}"
        kill -KILL "${live[@]}" 2>/dev/null || true
        wait_gone 5 "${live[@]}" || say "warning: could not kill ${live[*]}"
    fi
}

tcp_open() { # PORT -> true if something accepts on 127.0.0.1:PORT
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# ---------------------------------------------------------------- epmd

epmd_answers() { timeout 5 epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; }

epmd_lists_node() {
    timeout 5 epmd -port "$EPMD_PORT" -names 2>/dev/null | grep -q "^name $NAME at port "
}

our_epmd_pid() {
    local pid
    pid="$(read_pid "$EPMD_PID_FILE")"
    if alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ] &&
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-port $EPMD_PORT "; then
        printf '%s' "$pid"
    fi
}

# In a subshell about to exec a daemon: close every fd above 2, so the daemon holds
# neither the epmd lock nor a pipe of whoever ran this script.
close_fds() {
    local fd n
    for fd in /proc/"$BASHPID"/fd/*; do
        n="${fd##*/}"
        if [ "$n" -gt 2 ] 2>/dev/null; then
            eval "exec $n>&-" 2>/dev/null || true
        fi
    done
}

lockfd=""
with_epmd_lock() {
    mkdir -p "$EPMD_USERS"
    exec {lockfd}>"$EPMD_LOCK"
    if ! flock -w 60 "$lockfd"; then
        exec {lockfd}>&-
        die "could not lock $EPMD_LOCK within 60s"
    fi
    local rc=0
    "$@" || rc=$?
    exec {lockfd}>&-
    return "$rc"
}

# Caller holds the lock.
ensure_epmd() {
    if epmd_answers; then
        return 0
    fi
    rm -f "$EPMD_PID_FILE"
    say "starting private epmd on 127.0.0.1:$EPMD_PORT"
    (close_fds && exec setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 \
        </dev/null >>"$EPMD_DIR/epmd.log" 2>&1) &
    local pid=$!
    echo "$pid" >"$EPMD_PID_FILE"
    local i
    for ((i = 0; i < 50; i++)); do
        epmd_answers && return 0
        alive "$pid" || break
        sleep 0.1
    done
    tail -n 20 "$EPMD_DIR/epmd.log" >&2 || true
    die "epmd did not come up on port $EPMD_PORT"
}

# Drop markers of instances whose broker is gone. Caller holds the lock.
prune_markers() {
    local m pid
    for m in "$EPMD_USERS"/*; do
        [ -e "$m" ] || continue
        pid="$(read_pid "$m")"
        if ! alive "$pid"; then rm -f "$m"; fi
    done
}

live_users() { # names of instances with a live marker (caller holds the lock)
    prune_markers
    local m
    for m in "$EPMD_USERS"/*; do
        [ -e "$m" ] && basename "$m"
    done
    return 0
}

# Kill our epmd if no instance uses it. Caller holds the lock. $1=verbose
maybe_stop_epmd() {
    local users pid
    users="$(live_users)"
    if [ -n "$users" ]; then
        [ "${1:-0}" = 1 ] && say "epmd on port $EPMD_PORT still used by: $(echo "$users" | tr '\n' ' ')"
        return 0
    fi
    pid="$(our_epmd_pid)"
    if [ -z "$pid" ]; then
        [ "${1:-0}" = 1 ] && say "no epmd started by this script on port $EPMD_PORT"
        rm -f "$EPMD_PID_FILE"
        return 0
    fi
    say "stopping private epmd (pid $pid, port $EPMD_PORT)"
    terminate "$pid"
    rm -f "$EPMD_PID_FILE"
}

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
    echo "$pid" >"$MARKER"
}

# Failed start: show the logs; if this invocation launched the node, kill what is left of
# it (by PID) and release epmd. Args: launched(0/1) wrapper_pid message
abort_start() {
    show_log_tail
    if [ "$1" = 1 ]; then
        terminate "$(beam_pid)" "$2"
        rm -f "$MARKER" "$WRAPPER_PID_FILE" "$BEAM_PID_FILE"
        with_epmd_lock maybe_stop_epmd
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
    [ -n "$bpid" ] && echo "$bpid" >"$MARKER"
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
    if [ -d "$EPMD_USERS" ]; then
        rm -f "$MARKER"
        with_epmd_lock maybe_stop_epmd
    fi
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
