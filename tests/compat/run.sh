#!/usr/bin/env bash
# Compatibility suite: drives a real mesh agent with real clients (curl, dig,
# py-consul under pytest, the Connect walk-through with socat and nc,
# Prometheus scraping mesh's metrics, and curl and py-consul over HTTPS with
# client certificates), and partitions a three-server cluster
# with network namespaces.
#
#   tests/compat/run.sh [path/to/mesh]     (default: target/debug/mesh)
#
# Installs what it lacks (Debian packages via apt-get, py-consul + pytest from
# PyPI into a venv at target/compat-venv, or $MESH_COMPAT_VENV), starts
# `mesh agent -dev` on ephemeral ports with a temporary config dir, runs
# dns_http.sh and then pytest, and stops the agent on exit. Exits non-zero if
# anything failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NODE=compat-node
DEADLINE=30 # seconds allowed for the agent to come up and its checks to settle

die() {
    echo "compat: $*" >&2
    exit 1
}

# An explicit path is taken relative to the current directory; the default
# is the repo's debug build.
MESH=${1:-$ROOT/target/debug/mesh}
[[ "$MESH" == /* ]] || MESH="$PWD/$MESH"
[[ -x "$MESH" ]] || die "no executable mesh binary at $MESH (build it with: cargo build)"

# ------------------------------------------------------------------ tools

need=()
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)

apt_install() {
    [[ $(id -u) == 0 ]] || die "missing $*: install them (apt-get install $*) or run as root"
    echo "compat: installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@"
}
if ((${#need[@]})); then
    apt_install "${need[@]}"
fi

VENV=${MESH_COMPAT_VENV:-$ROOT/target/compat-venv}
venv_ready() {
    "$VENV/bin/python" - 2>/dev/null <<'EOF'
import importlib.metadata as m
import consul, pytest, grpc, grpc_health  # noqa: F401
assert m.version("py-consul").startswith("1.8."), m.version("py-consul")
EOF
}
if ! venv_ready; then
    echo "compat: creating a venv at $VENV with py-consul 1.8, pytest and grpcio"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv --clear "$VENV"; then
        # Debian's own python3 needs python3-venv (ensurepip) for this.
        apt_install python3-venv
        python3 -m venv --clear "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "py-consul==1.8.*" "pytest>=7" \
        grpcio grpcio-health-checking
    venv_ready || die "the venv at $VENV still lacks py-consul 1.8 / pytest"
fi

# ------------------------------------------------------------------ agent

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mesh-compat.XXXXXX")
AGENT_PID=
cleanup() {
    local rc=$?
    if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
        kill -TERM "$AGENT_PID" 2>/dev/null || true
        # Give it 10s to shut down cleanly, then force it.
        for _ in $(seq 100); do
            kill -0 "$AGENT_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$AGENT_PID" 2>/dev/null || true
        wait "$AGENT_PID" 2>/dev/null || true
    fi
    if [[ $rc != 0 && -f "$WORK/agent.err" ]]; then
        echo "compat: last lines of the agent's log ($WORK/agent.err):" >&2
        tail -n 40 "$WORK/agent.err" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A service with a passing script check, and one whose check always fails.
mkdir -p "$WORK/config"
cat >"$WORK/config/web.json" <<'EOF'
{
  "service": {
    "id": "web-1",
    "name": "web",
    "tags": ["primary", "v1"],
    "port": 8080,
    "meta": {"team": "compat"},
    "check": {
      "id": "web-alive",
      "name": "web alive",
      "args": ["sh", "-c", "exit 0"],
      "interval": "1s"
    }
  }
}
EOF
cat >"$WORK/config/broken.json" <<'EOF'
{
  "service": {
    "name": "broken",
    "port": 9090,
    "checks": [{"args": ["sh", "-c", "echo down; exit 2"], "interval": "1s"}]
  }
}
EOF

"$MESH" agent -dev -http-port=0 -dns-port=0 -server-port=0 -serf-lan-port=0 -node="$NODE" -enable-script-checks \
    -config-dir="$WORK/config" >"$WORK/agent.out" 2>"$WORK/agent.err" &
AGENT_PID=$!

# wait_for WHAT COMMAND...: polls COMMAND until it succeeds or DEADLINE passes.
wait_for() {
    local what=$1
    shift
    local end=$((SECONDS + DEADLINE))
    until "$@"; do
        kill -0 "$AGENT_PID" 2>/dev/null || die "the agent exited while waiting for $what"
        ((SECONDS < end)) || die "timed out after ${DEADLINE}s waiting for $what"
        sleep 0.1
    done
}

# "       Client Addr: [127.0.0.1] (HTTP: 34567, HTTPS: -1, gRPC: -1, DNS: 45678)"
ports_known() {
    read -r HTTP_PORT DNS_PORT < <(sed -n 's/.*Client Addr: .*(HTTP: \([0-9]*\),.* DNS: \([0-9]*\)).*/\1 \2/p' \
        "$WORK/agent.out" | head -n 1) || true
    [[ -n "${HTTP_PORT:-}" && -n "${DNS_PORT:-}" ]]
}
wait_for "the agent's Client Addr line" ports_known
echo "compat: mesh agent (pid $AGENT_PID) on HTTP 127.0.0.1:$HTTP_PORT, DNS 127.0.0.1:$DNS_PORT"

HTTP="http://127.0.0.1:$HTTP_PORT"
has_leader() { [[ "$(curl -s --max-time 2 "$HTTP/v1/status/leader" || true)" =~ ^\"[^\"]+\"$ ]]; }
wait_for "a raft leader" has_leader

# check_is ID STATUS: the agent reports check ID with STATUS.
check_is() {
    curl -s --max-time 2 "$HTTP/v1/agent/checks" | python3 -c '
import json, sys
try:
    checks = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
sys.exit(0 if checks.get(sys.argv[1], {}).get("Status") == sys.argv[2] else 1)' "$1" "$2"
}
wait_for "check web-alive to pass" check_is web-alive passing
wait_for "check service:broken to be critical" check_is service:broken critical
# Anti-entropy carries the agent's state to the catalog that DNS reads.
in_health() { curl -s --max-time 2 "$HTTP/v1/health/service/web?passing" | grep -q '"web-1"'; }
wait_for "web-1 in /v1/health/service/web?passing" in_health

# ------------------------------------------------------------------ checks

export MESH_HTTP_PORT=$HTTP_PORT MESH_DNS_PORT=$DNS_PORT MESH_NODE=$NODE MESH_BIN=$MESH
export PATH="$VENV/bin:$PATH" PYTHONDONTWRITEBYTECODE=1

failed=0
echo "compat: curl + dig checks"
bash "$HERE/dns_http.sh" || failed=1

echo "compat: the Connect walk-through with socat and nc"
bash "$HERE/walkthrough.sh" "$MESH" || failed=1

echo "compat: Prometheus discovers and scrapes mesh's metrics"
bash "$HERE/prometheus.sh" "$MESH" || failed=1

echo "compat: the HTTPS API with client certificates: curl, the mesh CLI and py-consul"
bash "$HERE/https.sh" "$MESH" || failed=1

echo "compat: a network partition between three servers in network namespaces"
bash "$HERE/partition.sh" "$MESH" || failed=1

echo "compat: py-consul tests"
cd "$HERE"
timeout --kill-after=10 900 "$VENV/bin/python" -m pytest test_py_consul.py \
    -p no:cacheprovider --rootdir="$HERE" -rfExX || failed=1

((failed == 0)) || die "FAILED (see above)"
