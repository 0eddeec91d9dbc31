#!/usr/bin/env bash
# The HTTPS API with real clients: a CA and certificates made with
# `mesh tls`, an agent serving only HTTPS and requiring client certificates
# (verify_incoming), and curl, py-consul and the mesh CLI reaching it.
#
#   tests/compat/https.sh path/to/mesh
#
# py-consul comes from the venv run.sh puts first on PATH (any python3 that
# imports `consul` will do). Prints "https: N passed, 0 failed" and exits
# non-zero on the first failure.
set -euo pipefail

MESH=${1:?usage: https.sh path/to/mesh}
[[ "$MESH" == /* ]] || MESH="$PWD/$MESH"
DEADLINE=30

SUITE=https
# shellcheck source=tests/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fail() {
    echo "  FAIL $1" >&2
    echo "$SUITE: $passed passed, 1 failed" >&2
    exit 1
}

# ------------------------------------------------------------------ certificates

PKI="$WORK/pki"
mkdir -p "$PKI"
(
    cd "$PKI"
    "$MESH" tls ca create >/dev/null
    "$MESH" tls cert create -server -dc=dc1 >/dev/null
    "$MESH" tls cert create -client -dc=dc1 >/dev/null
)
CA="$PKI/consul-agent-ca.pem"
CERT="$PKI/dc1-client-consul-0.pem"
KEY="$PKI/dc1-client-consul-0-key.pem"
for f in "$CA" "$CERT" "$KEY" "$PKI/dc1-server-consul-0.pem" "$PKI/dc1-server-consul-0-key.pem"; do
    [[ -s "$f" ]] || fail "mesh tls made $f"
done
ok "mesh tls ca create / cert create -server / -client"

cat >"$WORK/tls.hcl" <<EOF
tls {
  defaults {
    ca_file   = "$CA"
    cert_file = "$PKI/dc1-server-consul-0.pem"
    key_file  = "$PKI/dc1-server-consul-0-key.pem"
  }
  https {
    verify_incoming = true
  }
}
EOF

# ------------------------------------------------------------------ agent

"$MESH" agent -dev -http-port=-1 -https-port=0 -dns-port=0 -server-port=0 -serf-lan-port=0 \
    -node=https-node -config-file="$WORK/tls.hcl" >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=($!)
# "Client Addr: [127.0.0.1] (HTTP: -1, HTTPS: 34567, gRPC: -1, DNS: 45678)"
https_port() { sed -n 's/.*Client Addr: .*HTTPS: \([0-9]*\).*/\1/p' "$WORK/agent.out" | head -n 1; }
https_up() { [[ -n "$(https_port)" ]]; }
wait_for "the agent's HTTPS port" https_up
PORT=$(https_port)
BASE="https://127.0.0.1:$PORT"
CURL=(curl -s --max-time 10 --cacert "$CA" --cert "$CERT" --key "$KEY")
has_leader() { [[ "$("${CURL[@]}" "$BASE/v1/status/leader" || true)" =~ ^\"[^\"]+\"$ ]]; }
wait_for "a raft leader over HTTPS" has_leader
echo "https: mesh agent on HTTPS 127.0.0.1:$PORT (plain HTTP off, client certificates required)"

# ------------------------------------------------------------------ curl

[[ "$("${CURL[@]}" -X PUT -d one "$BASE/v1/kv/compat/https")" == true ]] || fail "curl PUT /v1/kv"
ok "curl --cacert --cert --key: a write"
[[ "$("${CURL[@]}" "$BASE/v1/kv/compat/https?raw")" == one ]] || fail "curl GET /v1/kv ?raw"
ok "curl: a read"

index=$("${CURL[@]}" -D - -o /dev/null "$BASE/v1/kv/compat/https" |
    sed -n 's/^[Xx]-[Cc]onsul-[Ii]ndex: *\([0-9]*\).*/\1/p')
[[ -n "$index" ]] || fail "X-Consul-Index on a KV read"
"${CURL[@]}" --max-time 40 "$BASE/v1/kv/compat/https?raw&index=$index&wait=30s" >"$WORK/blocked" &
blocked=$!
PIDS+=("$blocked")
kill -0 "$blocked" 2>/dev/null || fail "the blocking query returned before any change"
"${CURL[@]}" -X PUT -d two "$BASE/v1/kv/compat/https" >/dev/null
start=$SECONDS
wait "$blocked" || fail "the blocking query failed"
((SECONDS - start < 20)) || fail "the blocking query waited out its 30s instead of returning on the change"
[[ "$(cat "$WORK/blocked")" == two ]] || fail "the blocking query returned $(cat "$WORK/blocked"), not two"
ok "curl: a blocking query returns on a change"

if curl -s --max-time 10 --cacert "$CA" "$BASE/v1/kv/compat/https?raw" >/dev/null 2>&1; then
    fail "curl without --cert was answered"
fi
ok "curl without --cert is refused (verify_incoming)"
if curl -s --max-time 10 "http://127.0.0.1:$PORT/v1/status/leader" 2>/dev/null | grep -q '"'; then
    fail "plain HTTP was answered on the HTTPS port"
fi
ok "plain HTTP gets no answer on the HTTPS port"

# ------------------------------------------------------------------ mesh CLI

got=$(CONSUL_HTTP_ADDR="$BASE" CONSUL_CACERT="$CA" CONSUL_CLIENT_CERT="$CERT" CONSUL_CLIENT_KEY="$KEY" \
    "$MESH" kv get compat/https) || fail "mesh kv get with CONSUL_CACERT/CONSUL_CLIENT_CERT/KEY"
[[ "$got" == two ]] || fail "mesh kv get returned $got"
ok "mesh kv get over HTTPS (CONSUL_HTTP_ADDR=https://, CONSUL_CACERT, CONSUL_CLIENT_CERT/KEY)"
CONSUL_HTTP_SSL=true "$MESH" members -http-addr="127.0.0.1:$PORT" -ca-file="$CA" -client-cert="$CERT" \
    -client-key="$KEY" | grep -q https-node || fail "mesh members with CONSUL_HTTP_SSL=true and flags"
ok "mesh members over HTTPS (CONSUL_HTTP_SSL=true, -ca-file, -client-cert, -client-key)"

# ------------------------------------------------------------------ py-consul

python3 - "$PORT" "$CA" "$CERT" "$KEY" <<'PY' || fail "py-consul over HTTPS"
import sys

import consul

port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
c = consul.Consul(host="127.0.0.1", port=port, scheme="https", verify=ca, cert=(cert, key))
assert c.kv.put("compat/py", "from-python") is True
_, got = c.kv.get("compat/py")
assert got["Value"] == b"from-python", got
me = c.agent.self()
assert me["Config"]["NodeName"] == "https-node", me["Config"]
_, services = c.catalog.services()
assert "consul" in services, services
# Without a client certificate the agent refuses the handshake.
bare = consul.Consul(host="127.0.0.1", port=port, scheme="https", verify=ca)
try:
    bare.kv.get("compat/py")
except Exception:
    pass
else:
    raise AssertionError("py-consul without a client certificate was answered")
PY
ok "py-consul (scheme=https, verify=CA, cert=(CERT, KEY)): kv put/get, agent self, catalog services; no cert refused"

echo "$SUITE: $passed passed, 0 failed"
