# shellcheck shell=bash
# Shared preamble of the private-broker scripts: messages, and checks of what the caller set.
# Sourced (never run). The caller sets LOG_TAG (shown in every message) before using say/die.

say() { printf '%s: %s\n' "${LOG_TAG:-amqprpc}" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Exit 2 unless every named variable holds a decimal number.
require_numbers() {
    local v
    for v in "$@"; do
        if [[ ! "${!v}" =~ ^[0-9]+$ ]]; then
            say "$v must be a number, got '${!v}'"
            exit 2
        fi
    done
}
