#!/usr/bin/env bash
# The Connect walk-through as a user types it, with real socat and nc:
#
#   socat -v tcp-l:PORT,fork exec:"/bin/cat" &
#   mesh agent -dev -enable-script-checks -config-dir=.   # socat.json
#   mesh proxy -sidecar-for socat
#   mesh proxy -service web -upstream socat:9191
#   nc localhost 9191                                     # echoes over mTLS
#   mesh intention create -deny web socat                 # now refused
#
#   tests/compat/walkthrough.sh path/to/mesh
#
# Ports are picked free at run time instead of 8181/9191/21000. Prints
# "walkthrough: N passed, N failed" and exits non-zero on any failure.
set -euo pipefail

MESH=${1:?usage: walkthrough.sh path/to/mesh}
[[ "$MESH" == /* ]] || MESH="$PWD/$MESH"
DEADLINE=40

need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || { echo "walkthrough: install ${need[*]}" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

SUITE=walkthrough
# shellcheck source=tests/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ECHO_PORT=$(free_port)
SIDECAR_PORT=$(free_port)
UPSTREAM_PORT=$(free_port)

socat -v "tcp-l:$ECHO_PORT,fork,reuseaddr" exec:"/bin/cat" 2>"$WORK/socat.log" &
PIDS+=($!)

mkdir -p "$WORK/config"
cd "$WORK/config"
cat >socat.json <<JSON
{"service": {"name": "socat", "port": $ECHO_PORT,
             "connect": {"sidecar_service": {"port": $SIDECAR_PORT}}}}
JSON
"$MESH" agent -dev -enable-script-checks -config-dir=. -http-port=0 -dns-port=0 -server-port=0 -serf-lan-port=0 \
    >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=($!)
wait_for "the agent" agent_up
CONSUL_HTTP_ADDR="127.0.0.1:$(http_port)"
export CONSUL_HTTP_ADDR

"$MESH" proxy -sidecar-for socat >"$WORK/sidecar.out" 2>"$WORK/sidecar.log" &
PIDS+=($!)
"$MESH" proxy -service web -upstream "socat:$UPSTREAM_PORT" >"$WORK/web.out" 2>"$WORK/web.log" &
PIDS+=($!)
wait_for "the web proxy's upstream listener" grep -q "Upstream socat:" "$WORK/web.out"
ok "mesh proxy -sidecar-for socat and mesh proxy -service web -upstream socat:$UPSTREAM_PORT run"

echoes() { [[ "$(printf 'hello mesh\n' | timeout 5 nc -N -w 3 127.0.0.1 "$UPSTREAM_PORT" 2>/dev/null)" == "hello mesh" ]]; }
refused() { ! echoes; }

wait_for "an echo through the mesh" echoes
grep -q "hello mesh" "$WORK/socat.log" || { echo "walkthrough: socat never saw the bytes" >&2; exit 1; }
ok "nc 127.0.0.1:$UPSTREAM_PORT echoes through both proxies to socat"

"$MESH" intention create -deny web socat >/dev/null
wait_for "the deny intention to refuse connections" refused
ok "mesh intention create -deny web socat refuses the connection"

[[ "$("$MESH" intention check web socat || true)" == "Denied" ]]
ok "mesh intention check web socat says Denied"

"$MESH" intention delete web socat >/dev/null
wait_for "the connection to be allowed again" echoes
ok "deleting the intention lets it through again"

echo "walkthrough: $passed passed, 0 failed"
