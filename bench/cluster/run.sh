#!/usr/bin/env bash
# Cluster benchmark: three mesh servers (Raft over the server RPC port, fsync'd
# redb logs) against a three-member etcd 3.4 cluster from Debian, on the same machine
# in the same run.
#   1. Write throughput and latency: 64 concurrent clients spread over the three
#      members of each cluster (KV PUT, and catalog registration vs an etcd put of the
#      same document), through bench/loadgen.
#   2. Leader fail-over: kill -9 the leader, then time until a write through a
#      surviving member succeeds; the killed member is restarted and the cluster
#      left healthy before the next round.
# Prints both tables with mesh/etcd ratios.
#
#   bash bench/cluster/run.sh
#   DURATION=5 ROUNDS=1 FAILOVERS=3 bash bench/cluster/run.sh
#
# Knobs: DURATION (s per case per system, default 8), ROUNDS (default 2),
# CONCURRENCY (default 64), FAILOVERS (default 5), SKIP_INSTALL=1, SKIP_BUILD=1,
# MESH_BIN=/path/to/mesh, KEEP_DATA=1.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR/.. source=../lib.sh
source "$BENCH_DIR/lib.sh"
LOG_PREFIX=cluster
KEPT_WHAT="data and logs"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
CONCURRENCY="${CONCURRENCY:-64}"
FAILOVERS="${FAILOVERS:-5}"

install_missing etcd:etcd-server etcd:etcd-client curl ss:iproute2
require_tools cargo curl ss etcd
build_mesh
build_loadgen "$BENCH_DIR/loadgen" mesh-loadgen
make_workdir mesh-cluster-bench
on_failure() { tail_logs; }

# --- mesh: three servers; etcd: three members (lib.sh) ---------------------------------
add_mesh_cluster
for i in 0 1 2; do start_mesh "$i"; done
etcd_ports
for i in 0 1 2; do start_etcd "$i" new; done

wait_for 60 "three mesh servers with one leader, all healthy" "$(mesh_pids 0)" mesh_healthy
wait_for 60 "three healthy etcd members" "${E_PID[*]}" etcd_healthy
log "mesh $(git_rev) on $(mesh_url 0),$(mesh_url 1),$(mesh_url 2); etcd $(etcd --version | head -n1 | awk '{print $3}') on $(etcd_url 0),..."

# --- 1. throughput ------------------------------------------------------------------------
log "throughput: $CONCURRENCY clients spread over the three members, ${DURATION}s per case, $ROUNDS round(s); $(noise)"
"$LOADGEN" --mesh "$(mesh_urls 0)" --etcd "$(etcd_urls)" \
    --duration "$DURATION" --rounds "$ROUNDS" --concurrency "$CONCURRENCY" \
    --pids "${M_PID[0]},${M_PID[1]},${M_PID[2]},${E_PID[0]},${E_PID[1]},${E_PID[2]}"

# --- 2. fail-over -------------------------------------------------------------------------
now_ms() { date +%s%3N; }
# first_write URL SYSTEM: polls a write through URL until one succeeds; prints when.
# Each attempt may take 0.5 s at most, for both systems: a request stuck on the dead
# leader is abandoned and retried, as a client with a timeout would.
first_write() {
    local url=$1 sys=$2 body
    while true; do
        if [[ $sys == mesh ]]; then
            body="$(curl -s --max-time 0.5 -X PUT -d x "$url/v1/kv/failover" || true)"
            [[ "$body" == true ]] && break
        else
            body="$(curl -s --max-time 0.5 -X POST -d '{"key":"ZmFpbG92ZXI=","value":"eA=="}' "$url/v3/kv/put" || true)"
            [[ "$body" == *revision* ]] && break
        fi
        sleep 0.01
    done
    now_ms
}
mesh_leader_index() {
    local leader i
    leader="$(mesh_leader 0)"
    for i in 0 1 2; do [[ "$leader" == "127.0.0.1:${M_RPC[$i]}" ]] && echo "$i"; done
    return 0
}
etcd_leader_index() {
    local i
    for i in 0 1 2; do etcd_is_leader "$i" && echo "$i"; done
    return 0
}
restart_mesh() { start_mesh "$1"; }
restart_etcd() { start_etcd "$1" existing; }
# fail_over SYSTEM: kills SYSTEM's leader, records (rec SYSTEM failover_ms) how long
# until a write through a surviving member is acknowledged, restarts the killed
# member with its data dir and waits until the cluster is healthy again.
fail_over() {
    local sys=$1 leader pid t0 t1
    leader="$("${sys}_leader_index")"
    if [[ $sys == mesh ]]; then pid=${M_PID[$leader]}; else pid=${E_PID[$leader]}; fi
    kill -9 "$pid"
    t0="$(now_ms)"
    t1="$(first_write "$("${sys}_url" $(((leader + 1) % 3)))" "$sys")"
    rec "$sys" failover_ms $((t1 - t0))
    wait "$pid" 2>/dev/null || true
    "restart_$sys" "$leader"
    wait_for 60 "$sys healthy again" "" "${sys}_healthy"
}
results_init
for round in $(seq 1 "$FAILOVERS"); do
    fail_over mesh
    fail_over etcd
    log "fail-over round $round: mesh $(tail -n 2 "$RES" | head -n 1 | cut -f3) ms, etcd $(tail -n 1 "$RES" | cut -f3) ms"
done
rounds() { awk -F'\t' -v p="$1" '$1 == p { printf "%s ", $3 }' "$RES"; }
MM="$(med mesh failover_ms)" EM="$(med etcd failover_ms)"
echo
echo "| leader fail-over, kill -9 to first acknowledged write ($FAILOVERS rounds) | mesh ms | etcd ms | mesh/etcd |"
echo "|---|---|---|---|"
echo "| median | $MM | $EM | $(ratio "$MM" "$EM") |"
echo "| all rounds | $(rounds mesh)| $(rounds etcd)| |"
echo "fail-over ratio > 1 means mesh takes longer. Machine: $(cpu_desc)."
