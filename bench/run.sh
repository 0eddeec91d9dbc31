#!/usr/bin/env bash
# Write-path benchmark: mesh (Consul HTTP API, one-voter Raft, fsync'd redb log)
# against etcd 3.4 from Debian (fsync'd WAL, v3 HTTP/JSON gateway), same machine,
# same run, same load generator. Prints a table with mesh/etcd ratios.
#
#   bash bench/run.sh                 # defaults: 8 s per case, 1 and 64 clients, 2 rounds
#   DURATION=5 ROUNDS=2 bash bench/run.sh
#
# Knobs (environment): DURATION (s per case per system, default 8), ROUNDS (default 2),
# CONCURRENCY (default 1,64), MAX_REQUESTS (per case, default 200000),
# VALUE_SIZE (KV value bytes, default 128), SKIP_INSTALL=1, SKIP_BUILD=1,
# MESH_BIN=/path/to/mesh (bench that binary instead of building the work tree; see
# README for benching a given commit),
# MESH_REV=label (what to call that binary in the log), KEEP_DATA=1 (keep the temp
# data dirs and logs).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$BENCH_DIR/lib.sh"
LOG_PREFIX=bench
KEPT_WHAT="data and logs"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
CONCURRENCY="${CONCURRENCY:-1,64}"
MAX_REQUESTS="${MAX_REQUESTS:-200000}"
VALUE_SIZE="${VALUE_SIZE:-128}"

# --- install (idempotent) -----------------------------------------------------
install_missing etcd:etcd-server etcd:etcd-client curl ss:iproute2
command -v etcd >/dev/null || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
require_tools cargo curl ss
# The Debian package may start a system etcd on 2379 where systemd runs; we never
# use the default ports, so it cannot collide with ours.

# --- build --------------------------------------------------------------------
build_mesh
build_loadgen "$BENCH_DIR/loadgen" mesh-loadgen

# --- start both servers -------------------------------------------------------
make_workdir mesh-bench

log "starting mesh (persistent, -data-dir, fsync'd Raft log)"
mesh_port() { sed -n 's/.*Client Addr:.*(HTTP: \([0-9][0-9]*\),.*/\1/p' "$WORK/mesh.out" | head -n1; }
MESH_PORT=""
# -dns-port=0 can fail to start ("DNS TCP listener ... Address already in use": the
# ephemeral UDP port chosen is taken on TCP); retry a few times with a fresh data dir.
for attempt in 1 2 3; do
    rm -rf "$WORK/mesh-data" && mkdir -p "$WORK/mesh-data"
    "$MESH" agent -server -bootstrap -data-dir "$WORK/mesh-data" -node bench -server-port=0 -serf-lan-port=0 \
        -http-port=0 -dns-port=0 >"$WORK/mesh.out" 2>"$WORK/mesh.err" &
    MESH_PID=$!
    PIDS+=("$MESH_PID")
    deadline=$((SECONDS + 30))
    while true; do
        MESH_PORT="$(mesh_port)"
        [[ -n "$MESH_PORT" ]] && break
        if ! kill -0 "$MESH_PID" 2>/dev/null; then
            log "mesh exited (attempt $attempt): $(tail -n1 "$WORK/mesh.err")"
            break
        fi
        (( SECONDS >= deadline )) && { log "mesh printed no HTTP port"; exit 1; }
        sleep 0.1
    done
    [[ -n "$MESH_PORT" ]] && break
done
[[ -n "$MESH_PORT" ]] || { log "mesh did not start"; cat "$WORK/mesh.err" >&2; exit 1; }
MESH_URL="http://127.0.0.1:$MESH_PORT"
mesh_leader() { curl -fsS "$MESH_URL/v1/status/leader" | grep -q '"[^"]'; }
wait_for 30 "a mesh Raft leader" "" mesh_leader

log "starting etcd $(etcd --version | head -n1 | awk '{print $3}') (default fsync'd WAL)"
mapfile -t ETCD_PORTS < <(pick_ports 2)
ETCD_CLIENT_PORT=${ETCD_PORTS[0]} ETCD_PEER_PORT=${ETCD_PORTS[1]}
ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"
ETCD_PEER="http://127.0.0.1:$ETCD_PEER_PORT"
etcd --name bench --data-dir "$WORK/etcd-data" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "$ETCD_PEER" --initial-advertise-peer-urls "$ETCD_PEER" \
    --initial-cluster "bench=$ETCD_PEER" --initial-cluster-state new \
    --log-level warn >"$WORK/etcd.out" 2>"$WORK/etcd.err" &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
etcd_healthy() { curl -fsS "$ETCD_URL/health" | grep -q '"health":"true"'; }
wait_for 30 "etcd /health" "" etcd_healthy

if [[ -n "${MESH_REV:-}" ]]; then
    REV="$MESH_REV"
elif [[ -n "${MESH_BIN:-}" ]]; then
    REV="(binary $MESH_BIN)"
else
    REV="$(git_rev)"
fi
log "mesh $REV at $MESH_URL, etcd at $ETCD_URL; data in $WORK"
log "cases: kv-put and catalog-register x clients {$CONCURRENCY}, ${DURATION}s each per system, $ROUNDS round(s)"

# --- run ------------------------------------------------------------------------
# Other builds on this 2-core machine skew results: say whether any ran.
log "before: $(noise)"
# Sample once a second while the load runs: is another build (rustc) running? How
# many snapshots has mesh written (snapshot file mtime changes)?
(
    last=""
    for _ in $(seq 1 1800); do
        kill -0 "$MESH_PID" 2>/dev/null || break
        snap="$(stat -c %Y.%s "$WORK/mesh-data/raft/snapshot.json" 2>/dev/null || true)"
        changed=0
        [[ -n "$snap" && "$snap" != "$last" ]] && changed=1 && last="$snap"
        echo "$(date +%s) $(rustc_count) $changed"
        sleep 1
    done
) >"$WORK/sampler.txt" 2>/dev/null &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")
MESH_CPU0="$(cpu_ticks "$MESH_PID")"
ETCD_CPU0="$(cpu_ticks "$ETCD_PID")"
"$LOADGEN" --mesh "$MESH_URL" --etcd "$ETCD_URL" \
    --duration "$DURATION" --rounds "$ROUNDS" --concurrency "$CONCURRENCY" \
    --max-requests "$MAX_REQUESTS" --value-size "$VALUE_SIZE" \
    --tsv "$WORK/results.tsv" --raw "$WORK/raw.tsv" --pids "$MESH_PID,$ETCD_PID"
MESH_CPU1="$(cpu_ticks "$MESH_PID")"
ETCD_CPU1="$(cpu_ticks "$ETCD_PID")"
log "after: $(noise)"
kill "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
log "during the load: $(awk '{ n++; if ($2 > 0) busy++; snaps += $3 } END { printf "another build (rustc) ran in %d of %d sampled seconds; mesh wrote a new snapshot in %d of them", busy, n, snaps }' "$WORK/sampler.txt")"

# Server CPU per acknowledged write over the whole run (all cases + warm-up).
per_write() { # per_write SYSTEM TICKS
    awk -F'\t' -v sys="$1" -v ticks="$2" -v hz="$HZ" \
        'NR > 1 && $3 == sys { n += $4 } END { if (n > 0) printf "%.0f us CPU/write (%.1f s CPU over %d writes)", ticks / hz * 1e6 / n, ticks / hz, n }' \
        "$WORK/raw.tsv"
}
log "server CPU: mesh $(per_write mesh $((MESH_CPU1 - MESH_CPU0))); etcd $(per_write etcd $((ETCD_CPU1 - ETCD_CPU0)))"

log "data on disk after the run: mesh $(du -sh "$WORK/mesh-data" | cut -f1), etcd $(du -sh "$WORK/etcd-data" | cut -f1)"
log "peak RSS: mesh $(awk '/VmHWM/{print $2" "$3}' /proc/"$MESH_PID"/status 2>/dev/null), etcd $(awk '/VmHWM/{print $2" "$3}' /proc/"$ETCD_PID"/status 2>/dev/null)"
