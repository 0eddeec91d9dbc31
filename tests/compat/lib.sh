# shellcheck shell=bash
# Shared by the compat scripts that start their own processes: a work dir
# whose processes are stopped (and whose logs are shown on failure) on exit,
# free ports, polling with a deadline, and pass counting.
#
# Set SUITE (the message prefix) and DEADLINE (seconds) before sourcing.
# Append every background process's PID to PIDS; name logs *.log in $WORK.
# A script that sets up more than processes defines `teardown`, which the
# exit trap runs once the processes have stopped.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mesh-$SUITE.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if declare -F teardown >/dev/null; then teardown; fi
    if [[ $rc != 0 ]]; then
        for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2 || true; done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT COMMAND...: polls COMMAND until it succeeds; fails the suite
# after DEADLINE seconds.
wait_for() {
    local what=$1
    shift
    local end=$((SECONDS + DEADLINE))
    until "$@"; do
        ((SECONDS < end)) || { echo "$SUITE: timed out waiting for $what" >&2; exit 1; }
        sleep 0.2
    done
}

passed=0
ok() { passed=$((passed + 1)); echo "  ok   $1"; }

# The HTTP port a `mesh agent` printed to $WORK/agent.out, once it has.
http_port() { sed -n 's/.*Client Addr: .*(HTTP: \([0-9]*\),.*/\1/p' "$WORK/agent.out" | head -n 1; }
agent_up() { [[ -n "$(http_port)" ]]; }
