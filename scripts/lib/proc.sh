# shellcheck shell=bash
# Process helpers for the private-broker scripts: PID files, liveness, TERM-then-KILL by PID,
# daemons that inherit nothing, loopback port probes. Sourced after common.sh. Nothing here
# looks processes up by name: every signal goes to a PID this project recorded and checked.

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

# True if PID is alive and its environment holds every NAME=VALUE given.
env_has() {
    local pid="$1" environ want
    shift
    alive "$pid" || return 1
    [ -r "/proc/$pid/environ" ] || return 1
    environ="$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ")" || return 1
    for want in "$@"; do
        grep -qxF "$want" <<<"$environ" || return 1
    done
}

# The command name of PID (/proc/PID/comm), or nothing.
comm_of() { cat "/proc/$1/comm" 2>/dev/null || true; }

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

# In a subshell about to exec a daemon: close every fd above 2, so the daemon holds
# neither a lock of ours nor a pipe of whoever ran the script.
close_fds() {
    local fd n
    for fd in /proc/"$BASHPID"/fd/*; do
        n="${fd##*/}"
        if [ "$n" -gt 2 ] 2>/dev/null; then
            eval "exec $n>&-" 2>/dev/null || true
        fi
    done
}

tcp_open() { # PORT -> true if something accepts on 127.0.0.1:PORT
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}
