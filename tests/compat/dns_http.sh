#!/usr/bin/env bash
# curl + dig checks against a running mesh agent, as a user would run them.
#
# Needs: MESH_HTTP_PORT, MESH_DNS_PORT, MESH_NODE in the environment, and an
# agent started with the service definitions run.sh writes (web-1 with tags
# primary/v1 on port 8080 whose script check passes; "broken" whose script
# check is critical). Prints one line per check and a closing
# "dns_http: N passed, N failed" line; exits non-zero if any check failed.
set -euo pipefail

: "${MESH_HTTP_PORT:?set MESH_HTTP_PORT}"
: "${MESH_DNS_PORT:?set MESH_DNS_PORT}"
: "${MESH_NODE:?set MESH_NODE}"

HTTP="http://127.0.0.1:${MESH_HTTP_PORT}"
NODE="$MESH_NODE"
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "  ok   $1"; }
bad() {
    failed=$((failed + 1))
    echo "  FAIL $1" >&2
    shift
    local line
    for line in "$@"; do echo "       $line" >&2; done
}

# curl that never aborts the script: on a transport error its message becomes
# the output, so the check that reads it fails with that message.
hcurl() { curl -sS --max-time 10 "$@" 2>&1 || true; }

# count_json: number of elements of the JSON array on stdin, or "invalid JSON".
count_json() {
    python3 -c 'import json,sys
try: print(len(json.load(sys.stdin)))
except Exception as e: print("invalid JSON (%s)" % e)'
}

# dig with the options every query here shares: UDP to the agent, one try,
# no recursion. Extra arguments are passed through.
qdig() { dig @127.0.0.1 -p "$MESH_DNS_PORT" +tries=1 +time=3 +norecurse "$@" 2>&1 || true; }

# rcode NAME TYPE: prints NOERROR / NXDOMAIN / ... from the response header.
rcode() {
    qdig "$1" "$2" +noall +comments | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'
}

# ---------------------------------------------------------------- HTTP (curl)

# GET /v1/status/leader: a JSON string "host:port" once a leader is elected.
leader=$(hcurl "$HTTP/v1/status/leader")
if [[ "$leader" =~ ^\"[0-9.]+:[0-9]+\"$ ]]; then
    ok "GET /v1/status/leader -> $leader"
else
    bad "GET /v1/status/leader: want a quoted \"ip:port\"" "got: $leader"
fi

# PUT /v1/kv/KEY answers true; GET ?raw gives back exactly the bytes stored.
key="compat/curl/greeting"
value='hello from curl: 1+1=2 & "quotes"'
put=$(hcurl -X PUT --data-binary "$value" "$HTTP/v1/kv/$key")
if [[ "$put" == "true" ]]; then
    ok "PUT /v1/kv/$key -> true"
else
    bad "PUT /v1/kv/$key: want body true" "got: $put"
fi
headers=$(mktemp)
raw=$(hcurl -D "$headers" "$HTTP/v1/kv/$key?raw")
if [[ "$raw" == "$value" ]]; then
    ok "GET /v1/kv/$key?raw returns the stored bytes"
else
    bad "GET /v1/kv/$key?raw: want the stored value" "want: $value" "got:  $raw"
fi
if grep -qi '^x-consul-index: [1-9][0-9]*' "$headers"; then
    ok "GET /v1/kv/$key?raw carries X-Consul-Index"
else
    bad "GET /v1/kv/$key?raw: no X-Consul-Index header" "headers: $(tr -d '\r' <"$headers" | tr '\n' '|')"
fi
rm -f "$headers"

# A missing key is a 404.
code=$(hcurl -o /dev/null -w '%{http_code}' "$HTTP/v1/kv/compat/curl/does-not-exist?raw")
if [[ "$code" == "404" ]]; then
    ok "GET of a missing key -> 404"
else
    bad "GET /v1/kv/compat/curl/does-not-exist?raw: want 404" "got: $code"
fi

# DELETE, then the key is gone.
del=$(hcurl -X DELETE "$HTTP/v1/kv/$key")
code=$(hcurl -o /dev/null -w '%{http_code}' "$HTTP/v1/kv/$key?raw")
if [[ "$del" == "true" && "$code" == "404" ]]; then
    ok "DELETE /v1/kv/$key -> true, then GET -> 404"
else
    bad "DELETE /v1/kv/$key: want true then a 404" "delete said: $del; GET after: $code"
fi

# /v1/health/service/web?passing lists web-1 with its port and tags; the
# critical "broken" service is filtered out by ?passing but listed without it.
health=$(hcurl "$HTTP/v1/health/service/web?passing")
summary=$(python3 -c '
import json, sys
try:
    entries = json.load(sys.stdin)
except Exception as e:
    print("invalid JSON (%s)" % e); sys.exit(0)
print(" ".join("%s:%s:%s:%s:%s" % (e["Node"]["Node"], e["Service"]["ID"], e["Service"]["Port"],
      ",".join(e["Service"]["Tags"]), ",".join(sorted(c["Status"] for c in e["Checks"]))) for e in entries))
' <<<"$health")
if [[ "$summary" == "$NODE:web-1:8080:primary,v1:passing,passing" ]]; then
    ok "GET /v1/health/service/web?passing -> web-1 on $NODE:8080, all checks passing"
else
    bad "GET /v1/health/service/web?passing: want one entry node:id:port:tags:statuses" \
        "want: $NODE:web-1:8080:primary,v1:passing,passing" "got:  $summary"
fi
n_passing=$(hcurl "$HTTP/v1/health/service/broken?passing" | count_json)
n_all=$(hcurl "$HTTP/v1/health/service/broken" | count_json)
if [[ "$n_passing" == 0 && "$n_all" == 1 ]]; then
    ok "GET /v1/health/service/broken: 1 instance, 0 with ?passing"
else
    bad "GET /v1/health/service/broken: want 1 instance and 0 with ?passing" "got $n_all and $n_passing"
fi

# ------------------------------------------------------------------ DNS (dig)

# NAME.service.consul A -> the node's address.
a=$(qdig web.service.consul A +short)
if [[ "$a" == "127.0.0.1" ]]; then
    ok "dig web.service.consul A -> 127.0.0.1"
else
    bad "dig web.service.consul A: want 127.0.0.1" "got: $(echo $a)"
fi

# NAME.service.consul SRV -> port 8080 on NODE.node.dc1.consul., with the
# target's A record in the additional section.
srv=$(qdig web.service.consul SRV +noall +answer)
srv_fields=$(awk '$4 == "SRV" {print $7, $8}' <<<"$srv")
if [[ "$srv_fields" == "8080 $NODE.node.dc1.consul." ]]; then
    ok "dig web.service.consul SRV -> 8080 $NODE.node.dc1.consul."
else
    bad "dig web.service.consul SRV: want port 8080 and target $NODE.node.dc1.consul." "got: $srv"
fi
additional=$(qdig web.service.consul SRV +noall +additional)
add_a=$(awk -v t="$NODE.node.dc1.consul." '$1 == t && $4 == "A" {print $5}' <<<"$additional")
if [[ "$add_a" == "127.0.0.1" ]]; then
    ok "dig web.service.consul SRV has additional A $NODE.node.dc1.consul. 127.0.0.1"
else
    bad "dig web.service.consul SRV: want an additional A record for the target" "got: $additional"
fi

# TAG.NAME.service.consul: a tag the instance has resolves, one it lacks doesn't.
a=$(qdig primary.web.service.consul A +short)
if [[ "$a" == "127.0.0.1" ]]; then
    ok "dig primary.web.service.consul A -> 127.0.0.1"
else
    bad "dig primary.web.service.consul A: want 127.0.0.1" "got: $(echo $a)"
fi
rc=$(rcode nosuchtag.web.service.consul A)
if [[ "$rc" == "NXDOMAIN" ]]; then
    ok "dig nosuchtag.web.service.consul A -> NXDOMAIN"
else
    bad "dig nosuchtag.web.service.consul A: want NXDOMAIN" "got: $rc"
fi

# RFC 2782 form: _NAME._TAG.service.consul SRV.
srv=$(qdig _web._v1.service.consul SRV +noall +answer)
srv_fields=$(awk '$4 == "SRV" {print $7, $8}' <<<"$srv")
if [[ "$srv_fields" == "8080 $NODE.node.dc1.consul." ]]; then
    ok "dig _web._v1.service.consul SRV -> 8080 $NODE.node.dc1.consul."
else
    bad "dig _web._v1.service.consul SRV: want port 8080 and target $NODE.node.dc1.consul." "got: $srv"
fi
rc=$(rcode _web._nosuchtag.service.consul SRV)
if [[ "$rc" == "NXDOMAIN" ]]; then
    ok "dig _web._nosuchtag.service.consul SRV -> NXDOMAIN"
else
    bad "dig _web._nosuchtag.service.consul SRV: want NXDOMAIN" "got: $rc"
fi

# Explicit datacenter: NAME.service.DC.consul.
a=$(qdig web.service.dc1.consul A +short)
if [[ "$a" == "127.0.0.1" ]]; then
    ok "dig web.service.dc1.consul A -> 127.0.0.1"
else
    bad "dig web.service.dc1.consul A: want 127.0.0.1" "got: $(echo $a)"
fi

# The server itself is the "consul" service, on its RPC port (8300 by
# default; the suite's agent picks a free one and reports it in
# /v1/agent/self).
rpc_port=$(curl -s "$HTTP/v1/agent/self" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["DebugConfig"]["ServerPort"])')
srv=$(qdig consul.service.consul SRV +noall +answer)
srv_fields=$(awk '$4 == "SRV" {print $7, $8}' <<<"$srv")
if [[ "$srv_fields" == "$rpc_port $NODE.node.dc1.consul." ]]; then
    ok "dig consul.service.consul SRV -> $rpc_port $NODE.node.dc1.consul."
else
    bad "dig consul.service.consul SRV: want port $rpc_port and target $NODE.node.dc1.consul." "got: $srv"
fi

# NODE.node.consul A -> the node's address.
a=$(qdig "$NODE.node.consul" A +short)
if [[ "$a" == "127.0.0.1" ]]; then
    ok "dig $NODE.node.consul A -> 127.0.0.1"
else
    bad "dig $NODE.node.consul A: want 127.0.0.1" "got: $(echo $a)"
fi

# A service whose only instance is critical is not served.
rc=$(rcode broken.service.consul A)
a=$(qdig broken.service.consul A +short)
if [[ "$rc" == "NXDOMAIN" && -z "$a" ]]; then
    ok "dig broken.service.consul A (critical) -> NXDOMAIN, no answer"
else
    bad "dig broken.service.consul A: want NXDOMAIN and no answer for a critical instance" "got: $rc $(echo $a)"
fi

# Unknown names -> NXDOMAIN with the SOA in the authority section.
for name in nosuchservice.service.consul nosuchnode.node.consul; do
    rc=$(rcode "$name" A)
    soa=$(qdig "$name" A +noall +authority | awk '$4 == "SOA"')
    if [[ "$rc" == "NXDOMAIN" && -n "$soa" ]]; then
        ok "dig $name A -> NXDOMAIN with SOA"
    else
        bad "dig $name A: want NXDOMAIN with an SOA in authority" "got: rcode=$rc soa=$soa"
    fi
done

echo "dns_http: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
