# shellcheck shell=bash
# The private epmd (Erlang port mapper) that every instance on the same AMQPRPC_EPMD_PORT shares.
# Sourced after common.sh and proc.sh; the caller sets EPMD_PORT, EPMD_DIR and EPMD_INSTANCE
# (the instance name its marker is kept under).
#
# The first `start` launches epmd (in the background, PID recorded in EPMD_DIR/epmd.pid); each
# running instance leaves a marker in EPMD_DIR/users/ holding its broker's PID; the `stop` that
# removes the last live marker kills that epmd by its PID. An epmd these scripts did not start
# (e.g. a system one on port 4369) is never stopped. All of it happens under EPMD_DIR/epmd.lock.

EPMD_PID_FILE="$EPMD_DIR/epmd.pid"
EPMD_LOCK="$EPMD_DIR/epmd.lock"
EPMD_USERS="$EPMD_DIR/users"
MARKER="$EPMD_USERS/$EPMD_INSTANCE"

epmd_answers() { timeout 5 epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; }

epmd_lists() { # NAME -> true if epmd knows a node of that name
    timeout 5 epmd -port "$EPMD_PORT" -names 2>/dev/null | grep -q "^name $1 at port "
}

our_epmd_pid() {
    local pid
    pid="$(read_pid "$EPMD_PID_FILE")"
    if alive "$pid" && [ "$(comm_of "$pid")" = epmd ] &&
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-port $EPMD_PORT "; then
        printf '%s' "$pid"
    fi
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

# Note PID as this instance's use of epmd (a marker the last `stop` looks for).
epmd_register() { echo "$1" >"$MARKER"; }

# Forget this instance's use of epmd and stop epmd if nobody else uses it.
epmd_release() {
    if [ -d "$EPMD_USERS" ]; then
        rm -f "$MARKER"
        with_epmd_lock maybe_stop_epmd
    fi
}
