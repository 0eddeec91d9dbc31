#!/usr/bin/env bash
# TLS cluster benchmark: KV PUT throughput and latency through three mesh servers with
# TLS on the server RPC port (mutual, verify_server_hostname) and the HTTPS API (client
# certificates required), against the same three-server setup without TLS and against
# a three-member etcd 3.4 with client and peer TLS (client certificates required), all
# on this machine in one run. Every certificate comes from `mesh tls` (one CA).
# Prints a table with mesh-TLS/mesh-plain and mesh-TLS/etcd-TLS ratios.
#
#   bash bench/cluster/tls.sh
#   DURATION=2 ROUNDS=1 bash bench/cluster/tls.sh    # quick look (smoke), ~1 minute plus builds
#
# Knobs: DURATION (s per system per round, default 8), ROUNDS (default 2), CONCURRENCY
# (clients, default 64), SKIP_INSTALL=1, SKIP_BUILD=1, MESH_BIN=/path/to/mesh, MESH_REV=label
# (what to call that binary), KEEP_DATA=1.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR/.. source=../lib.sh
source "$BENCH_DIR/lib.sh"
LOG_PREFIX=cluster-tls
KEPT_WHAT="data, certificates and logs"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
CONCURRENCY="${CONCURRENCY:-64}"

install_missing etcd:etcd-server curl ss:iproute2 openssl
require_tools cargo curl ss etcd openssl python3
build_mesh
build_loadgen "$BENCH_DIR/loadgen" mesh-loadgen
make_workdir mesh-cluster-tls-bench
on_failure() { tail_logs "$WORK"/*.log; }

# --- certificates: one CA, three server certificates, one client certificate ---------------
PKI="$WORK/pki"
mkdir -p "$PKI"
(
    cd "$PKI"
    "$MESH" tls ca create
    for _ in 0 1 2; do "$MESH" tls cert create -server -dc=dc1; done
    "$MESH" tls cert create -client -dc=dc1
) >"$WORK/pki.log" 2>&1 || { log "mesh tls failed"; exit 1; }
CA="$PKI/consul-agent-ca.pem"
CLIENT_CRT="$PKI/dc1-client-consul-0.pem" CLIENT_KEY="$PKI/dc1-client-consul-0-key.pem"
CURL_TLS=(--cacert "$CA" --cert "$CLIENT_CRT" --key "$CLIENT_KEY")
ETCD_PKI="$PKI"

# --- mesh: three plain servers (0-2), three TLS servers (3-5); etcd: three TLS members ------
add_mesh_cluster
PLAIN=$FIRST
add_mesh_cluster "$WORK/mesh-tls"
TLS=$FIRST
for i in 0 1 2; do
    cat >"$WORK/mesh-tls$((TLS + i)).json" <<JSON
{"tls": {"defaults": {"ca_file": "$CA", "cert_file": "$PKI/dc1-server-consul-$i.pem",
                      "key_file": "$PKI/dc1-server-consul-$i-key.pem",
                      "verify_incoming": true, "verify_outgoing": true},
         "internal_rpc": {"verify_server_hostname": true}}}
JSON
done
for i in 0 1 2 3 4 5; do start_mesh "$i"; done
etcd_ports
for i in 0 1 2; do start_etcd "$i" new; done

wait_for 60 "three plain mesh servers with one leader" "$(mesh_pids "$PLAIN")" mesh_healthy "$PLAIN"
wait_for 60 "three TLS mesh servers with one leader" "$(mesh_pids "$TLS")" mesh_healthy "$TLS"
wait_for 60 "three healthy etcd members (TLS)" "${E_PID[*]}" etcd_healthy
MESH_HS="$(tls_of "${M_HTTP[$TLS]}" "$CLIENT_CRT" "$CLIENT_KEY" "$CA")"
ETCD_HS="$(tls_of "${E_CLIENT[0]}" "$CLIENT_CRT" "$CLIENT_KEY" "$CA")"
ETCD_VERSION="$(etcd --version | head -n1 | awk '{print $3}')"
log "mesh $(mesh_rev): plain $(mesh_urls "$PLAIN"), TLS $(mesh_urls "$TLS") ($MESH_HS); etcd $ETCD_VERSION $(etcd_urls) ($ETCD_HS)"

# --- throughput: per round, mesh-TLS and etcd-TLS back to back, then mesh plain (the order
# of the two loadgen runs alternates between rounds) ---------------------------------------
# loadgen NAME URLS [ETCD_URLS]: one loadgen run of kv-put, $CONCURRENCY clients spread
# over the members, $DURATION s per system, raw per-system rows in $WORK/NAME.tsv.
loadgen() {
    local name=$1 mesh=$2 etcd=${3:-} pids
    if [[ $mesh == https* ]]; then pids="$(mesh_pids "$TLS")"; else pids="$(mesh_pids "$PLAIN")"; fi
    if [[ -n $etcd ]]; then pids="$pids ${E_PID[*]}"; fi
    "$LOADGEN" --mesh "$mesh" --etcd "$etcd" --workloads kv --duration "$DURATION" --rounds 1 \
        --concurrency "$CONCURRENCY" --cacert "$CA" --cert "$CLIENT_CRT" --key "$CLIENT_KEY" \
        --pids "${pids// /,}" --raw "$WORK/$name.tsv" >"$WORK/$name.out"
}
# rec_raw FILE SYSTEM PATH: the row of SYSTEM in loadgen's raw FILE, as rec PATH rows.
rec_raw() {
    local row
    row="$(awk -F'\t' -v s="$2" '$1 != "warmup" && $3 == s' "$1")"
    rec "$3" ops "$(cut -f7 <<<"$row")"
    rec "$3" p50 "$(cut -f8 <<<"$row")"
    rec "$3" p99 "$(cut -f9 <<<"$row")"
    rec "$3" errors "$(cut -f5 <<<"$row")"
    rec "$3" other "$(cut -f11 <<<"$row")"
}
results_init
start_sampler
uptime_note before
T0=$(date +%s) BUSY0=$(busy_ticks) OWN0=$(own_ticks)
log "kv-put, $CONCURRENCY clients over three members, ${DURATION}s per system, $ROUNDS round(s)"
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order="tls plain"; else order="plain tls"; fi
    for what in $order; do
        if [[ $what == tls ]]; then
            log "round $round: mesh with TLS, then etcd with TLS"
            loadgen "tls$round" "$(mesh_urls "$TLS")" "$(etcd_urls)"
            rec_raw "$WORK/tls$round.tsv" mesh mesh-tls
            rec_raw "$WORK/tls$round.tsv" etcd etcd-tls
        else
            log "round $round: mesh without TLS"
            loadgen "plain$round" "$(mesh_urls "$PLAIN")"
            rec_raw "$WORK/plain$round.tsv" mesh mesh-plain
        fi
    done
done
FOREIGN="$(foreign "$BUSY0" "$OWN0")"
BUSY="$(sampler_summary "$T0" "$(date +%s)" "$FOREIGN")"
uptime_note after

echo
echo "| kv-put, $CONCURRENCY clients over 3 members | ops/s | p50 ms | p99 ms | other processes' CPU, median cores |"
echo "|---|---:|---:|---:|---:|"
for p in mesh-tls mesh-plain etcd-tls; do
    echo "| $p | $(med "$p" ops) | $(med "$p" p50) | $(med "$p" p99) | $(med "$p" other) |"
done
echo
echo "| ratio | ops/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
for b in mesh-plain etcd-tls; do
    echo "| mesh-tls / $b | $(ratio "$(med mesh-tls ops)" "$(med "$b" ops)") | $(ratio "$(med mesh-tls p50)" "$(med "$b" p50)") | $(ratio "$(med mesh-tls p99)" "$(med "$b" p99)") |"
done
echo
echo "Medians of $ROUNDS round(s) of ${DURATION}s per system. ops/s ratio > 1: mesh-TLS is faster; latency ratio > 1: mesh-TLS is slower."
echo "TLS: mesh HTTPS $MESH_HS; etcd $ETCD_VERSION $ETCD_HS; client certificates required by both, mTLS between servers/peers."
echo "Machine: $(cpu_desc). mesh $(mesh_rev)."
table_footer "other processes during the load" "$BUSY"
