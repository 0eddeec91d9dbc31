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
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
DURATION="${DURATION:-8}"
ROUNDS="${ROUNDS:-2}"
CONCURRENCY="${CONCURRENCY:-1,64}"
MAX_REQUESTS="${MAX_REQUESTS:-200000}"
VALUE_SIZE="${VALUE_SIZE:-128}"

log() { printf '[bench] %s\n' "$*" >&2; }

# --- install (idempotent) -----------------------------------------------------
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    if ! command -v etcd >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
        log "installing etcd-server (and curl) from Debian"
        SUDO=""
        [[ "$(id -u)" != 0 ]] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client curl >/dev/null
    fi
fi
command -v etcd >/dev/null || { log "etcd not found (apt-get install etcd-server)"; exit 1; }
for tool in cargo curl python3; do
    command -v "$tool" >/dev/null || { log "$tool not found"; exit 1; }
done
# The Debian package may start a system etcd on 2379 where systemd runs; we never
# use the default ports, so it cannot collide with ours.

# --- build --------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ -z "${MESH_BIN:-}" ]]; then
        log "building mesh (release); waits for the cargo lock if another build runs"
        (cd "$ROOT" && cargo build --release --quiet --bin mesh)
    fi
    log "building the load generator (bench/loadgen, its own workspace)"
    (cd "$BENCH_DIR/loadgen" && cargo build --release --quiet)
fi
MESH="${MESH_BIN:-$ROOT/target/release/mesh}"
LOADGEN="$BENCH_DIR/loadgen/target/release/mesh-loadgen"
[[ -x "$MESH" ]] || { log "missing $MESH"; exit 1; }
[[ -x "$LOADGEN" ]] || { log "missing $LOADGEN"; exit 1; }

# --- start both servers -------------------------------------------------------
WORK="$(mktemp -d /tmp/mesh-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # bounded wait, then force
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_DATA:-0}" == 1 || $rc != 0 ]]; then
        log "data and logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT INT TERM

# A free loopback port: bind 0, read it, close. Racy in theory, fine here.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS >= deadline )); then log "timed out waiting for $what"; return 1; fi
        sleep 0.1
    done
}

log "starting mesh (persistent, -data-dir, fsync'd Raft log)"
mesh_port() { sed -n 's/.*Client Addr:.*(HTTP: \([0-9][0-9]*\),.*/\1/p' "$WORK/mesh.out" | head -n1; }
MESH_PORT=""
# -dns-port=0 can fail to start ("DNS TCP listener ... Address already in use": the
# ephemeral UDP port chosen is taken on TCP); retry a few times with a fresh data dir.
for attempt in 1 2 3; do
    rm -rf "$WORK/mesh-data" && mkdir -p "$WORK/mesh-data"
    "$MESH" agent -server -bootstrap -data-dir "$WORK/mesh-data" -node bench \
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
wait_for 30 "a mesh Raft leader" mesh_leader

log "starting etcd $(etcd --version | head -n1 | awk '{print $3}') (default fsync'd WAL)"
ETCD_CLIENT_PORT="$(free_port)"
ETCD_PEER_PORT="$(free_port)"
while [[ "$ETCD_PEER_PORT" == "$ETCD_CLIENT_PORT" ]]; do ETCD_PEER_PORT="$(free_port)"; done
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
wait_for 30 "etcd /health" etcd_healthy

if [[ -n "${MESH_REV:-}" ]]; then
    REV="$MESH_REV"
elif [[ -n "${MESH_BIN:-}" ]]; then
    REV="(binary $MESH_BIN)"
else
    REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then REV="$REV+dirty"; fi
fi
log "mesh $REV at $MESH_URL, etcd at $ETCD_URL; data in $WORK"
log "cases: kv-put and catalog-register x clients {$CONCURRENCY}, ${DURATION}s each per system, $ROUNDS round(s)"

# --- run ------------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Other builds on this 2-core machine skew results: say whether any ran.
noise() { echo "load avg $(cut -d' ' -f1-3 /proc/loadavg), rustc processes running: $(pgrep -c -x rustc || true)"; }
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
        echo "$(date +%s) $(pgrep -c -x rustc || true) $changed"
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
HZ="$(getconf CLK_TCK)"
per_write() { # per_write SYSTEM TICKS
    awk -F'\t' -v sys="$1" -v ticks="$2" -v hz="$HZ" \
        'NR > 1 && $3 == sys { n += $4 } END { if (n > 0) printf "%.0f us CPU/write (%.1f s CPU over %d writes)", ticks / hz * 1e6 / n, ticks / hz, n }' \
        "$WORK/raw.tsv"
}
log "server CPU: mesh $(per_write mesh $((MESH_CPU1 - MESH_CPU0))); etcd $(per_write etcd $((ETCD_CPU1 - ETCD_CPU0)))"

log "data on disk after the run: mesh $(du -sh "$WORK/mesh-data" | cut -f1), etcd $(du -sh "$WORK/etcd-data" | cut -f1)"
log "peak RSS: mesh $(awk '/VmHWM/{print $2" "$3}' /proc/"$MESH_PID"/status 2>/dev/null), etcd $(awk '/VmHWM/{print $2" "$3}' /proc/"$ETCD_PID"/status 2>/dev/null)"
