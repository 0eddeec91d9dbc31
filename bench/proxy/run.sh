#!/usr/bin/env bash
# L4 proxy benchmark: the mesh mTLS path against two HAProxy 2.6 instances with mTLS
# (Debian's haproxy) and against a direct connection, same machine, same run, same
# echo server, same load generator. Prints a table with mesh/haproxy and mesh/direct
# ratios.
#
#   client ─► web sidecar ══mTLS══► socat sidecar ─► echo       (mesh proxy x2)
#   client ─► haproxy A   ══mTLS══► haproxy B     ─► echo       (haproxy x2)
#   client ───────────────────────────────────────► echo       (direct)
#
#   bash bench/proxy/run.sh                 # ~3 minutes plus builds
#   DURATION=4 ROUNDS=1 bash bench/proxy/run.sh    # quick look
#
# Knobs (environment): DURATION (s measured per path per round, 64 connections,
# default 10), WARMUP (s, default 1), ROUNDS (default 2; path order alternates),
# CONNS (default 64), SIZE (bytes per echo, default 1024), SEQ_DURATION (s for the
# 1-connection case, default 4; 0 skips it), IPERF_SECS (default 5; 0 skips iperf3),
# HOLD (connections held for the RSS measurement, default 10000, clamped to what
# RLIMIT_NOFILE allows), HAPROXY_THREADS (nbthread, default nproc as HAProxy does),
# SKIP_INSTALL=1, SKIP_BUILD=1, MESH_BIN=/path/to/mesh, KEEP_DATA=1 (keep the temp
# dir with logs and configs), PERF=1 (also count the proxies' syscalls with perf stat;
# perturbs the numbers, use for diagnosis only).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-1}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
SIZE="${SIZE:-1024}"
SEQ_DURATION="${SEQ_DURATION:-4}"
IPERF_SECS="${IPERF_SECS:-5}"
HOLD="${HOLD:-10000}"
HAPROXY_THREADS="${HAPROXY_THREADS:-$(nproc)}"   # HAProxy's own default: one per CPU
START_SECONDS=$SECONDS

log() { printf '[proxy-bench] %s\n' "$*" >&2; }

# --- install (idempotent) -----------------------------------------------------
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    need=()
    command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
    command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    command -v jq >/dev/null 2>&1 || need+=(jq)
    if ((${#need[@]})); then
        log "installing ${need[*]} from Debian"
        SUDO=""
        [[ "$(id -u)" != 0 ]] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi
[[ "${PERF:-0}" == 1 ]] && ! command -v perf >/dev/null 2>&1 && { log "PERF=1 needs perf (linux-perf)"; exit 1; }
for tool in haproxy iperf3 openssl curl jq cargo; do
    command -v "$tool" >/dev/null || { log "$tool not found"; exit 1; }
done
# The Debian package enables a system haproxy service where systemd runs; it listens
# on nothing we use (its default config has no frontends), so it cannot collide.

# --- build --------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    if [[ -z "${MESH_BIN:-}" ]]; then
        log "building mesh (release); waits for the cargo lock if another build runs"
        (cd "$ROOT" && cargo build --release --quiet --bin mesh)
    fi
    log "building the load generator (bench/proxy/loadgen, its own workspace)"
    (cd "$BENCH_DIR/loadgen" && cargo build --release --quiet)
fi
MESH="${MESH_BIN:-$ROOT/target/release/mesh}"
LG="$BENCH_DIR/loadgen/target/release/mesh-proxy-loadgen"
[[ -x "$MESH" ]] || { log "missing $MESH"; exit 1; }
[[ -x "$LG" ]] || { log "missing $LG"; exit 1; }

# --- file descriptors -----------------------------------------------------------
# A proxy holding N client connections has 2N sockets open. Raise the soft limit to
# the hard one (root without CAP_SYS_RESOURCE cannot go past it) and clamp HOLD.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
HOLD_MAX=$(( (NOFILE - 200) / 2 / 100 * 100 ))
if (( HOLD > HOLD_MAX )); then
    log "RLIMIT_NOFILE is $NOFILE (hard limit $(ulimit -Hn)): a proxy can hold at most ~$(( (NOFILE - 50) / 2 )) proxied connections; holding $HOLD_MAX instead of $HOLD and extrapolating to $HOLD"
    HOLD_TARGET=$HOLD
    HOLD=$HOLD_MAX
else
    HOLD_TARGET=$HOLD
fi
HOLD_HALF=$(( HOLD / 2 ))

# --- processes --------------------------------------------------------------------
WORK="$(mktemp -d /tmp/mesh-proxy-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP_DATA:-0}" == 1 || $rc != 0 ]]; then
        if [[ $rc != 0 ]]; then
            for f in "$WORK"/*.log "$WORK"/*.err; do
                [[ -s "$f" ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
            done
        fi
        log "logs and configs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs)) pid
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS >= deadline )); then log "timed out waiting for $what"; return 1; fi
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { log "process $pid exited while waiting for $what"; return 1; }
        done
        sleep 0.2
    done
}
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"
# CPU used by processes outside this benchmark: all busy ticks (/proc/stat) minus the
# ticks of our daemons and of everything this script ran and reaped (its cutime).
DAEMONS=()
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
own_ticks() {
    local t p
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$$/stat")
    for p in "${DAEMONS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
}
rustc_count() { pgrep -c -x rustc 2>/dev/null || true; }
noise() { echo "load avg $(cut -d' ' -f1-3 /proc/loadavg), rustc processes: $(rustc_count)"; }

# shellcheck disable=SC2207
PORTS=($("$LG" free-ports 14))
ECHO_PORT=${PORTS[0]}      IPERF_PORT=${PORTS[1]}
SC_ECHO=${PORTS[2]}        SC_IPERF=${PORTS[3]}       # mesh sidecars' public listeners
UP_ECHO=${PORTS[4]}        UP_IPERF=${PORTS[5]}       # web proxy upstream listeners
HA_ECHO=${PORTS[6]}        HA_IPERF=${PORTS[7]}       # haproxy A (plain in)
HB_ECHO=${PORTS[8]}        HB_IPERF=${PORTS[9]}       # haproxy B (mTLS in)
AGENT_SERVER=${PORTS[10]}  AGENT_SERF=${PORTS[11]}

log "uptime before: $(uptime)"
UPTIME_BEFORE="$(uptime)"

# One echo server and one iperf3 server, shared by all three paths.
"$LG" echo "127.0.0.1:$ECHO_PORT" >"$WORK/echo.out" 2>"$WORK/echo.err" &
ECHO_PID=$!; PIDS+=("$ECHO_PID"); DAEMONS+=("$ECHO_PID")
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=($!); DAEMONS+=($!)
wait_for 10 "the echo server" "$LG" check "127.0.0.1:$ECHO_PORT"

# --- mesh ---------------------------------------------------------------------------
mkdir -p "$WORK/config"
cat >"$WORK/config/socat.json" <<JSON
{"service": {"name": "socat", "port": $ECHO_PORT,
             "connect": {"sidecar_service": {"port": $SC_ECHO}}}}
JSON
cat >"$WORK/config/iperf.json" <<JSON
{"service": {"name": "iperf", "port": $IPERF_PORT,
             "connect": {"sidecar_service": {"port": $SC_IPERF}}}}
JSON
http_port() { sed -n 's/.*Client Addr: .*(HTTP: \([0-9][0-9]*\),.*/\1/p' "$WORK/agent.out" | head -n1; }
AGENT_HTTP=""
# -dns-port=0 can collide on TCP with the UDP port it picked; retry a few times.
for attempt in 1 2 3; do
    "$MESH" agent -dev -config-dir="$WORK/config" -http-port=0 -dns-port=0 \
        -server-port="$AGENT_SERVER" -serf-lan-port="$AGENT_SERF" \
        -bind 127.0.0.1 -client 127.0.0.1 -log-level=warn \
        >"$WORK/agent.out" 2>"$WORK/agent.log" &
    AGENT_PID=$!; PIDS+=("$AGENT_PID")
    deadline=$((SECONDS + 30))
    while [[ -z "$(http_port)" ]] && kill -0 "$AGENT_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    AGENT_HTTP="$(http_port)"
    [[ -n "$AGENT_HTTP" ]] && break
    log "agent did not start (attempt $attempt): $(tail -n1 "$WORK/agent.log")"
    kill "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
    unset 'PIDS[-1]'
done
[[ -n "$AGENT_HTTP" ]] || { log "mesh agent did not start"; exit 1; }
export CONSUL_HTTP_ADDR="127.0.0.1:$AGENT_HTTP"
DAEMONS+=("$AGENT_PID")

"$MESH" proxy -sidecar-for socat -bind-address 127.0.0.1 -log-level warn \
    >"$WORK/sidecar-socat.out" 2>"$WORK/sidecar-socat.log" &
MESH_B=$!; PIDS+=("$MESH_B"); DAEMONS+=("$MESH_B")
"$MESH" proxy -sidecar-for iperf -bind-address 127.0.0.1 -log-level warn \
    >"$WORK/sidecar-iperf.out" 2>"$WORK/sidecar-iperf.log" &
MESH_B_IPERF=$!; PIDS+=("$MESH_B_IPERF"); DAEMONS+=("$MESH_B_IPERF")
"$MESH" proxy -service web -upstream "socat:$UP_ECHO" -upstream "iperf:$UP_IPERF" -log-level warn \
    >"$WORK/web.out" 2>"$WORK/web.log" &
MESH_A=$!; PIDS+=("$MESH_A"); DAEMONS+=("$MESH_A")
wait_for 30 "the web proxy's upstream listeners" \
    bash -c "grep -q 'Upstream socat:' '$WORK/web.out' && grep -q 'Upstream iperf:' '$WORK/web.out'"
# The sidecar becomes an endpoint once its TCP health check passes (up to ~10 s).
wait_for 40 "an echo through the mesh" "$LG" check "127.0.0.1:$UP_ECHO"
iperf_mesh_ok() { timeout 10 iperf3 -c 127.0.0.1 -p "$UP_IPERF" -t 1 -f m; }
wait_for 40 "iperf3 through the mesh" iperf_mesh_ok

# --- haproxy --------------------------------------------------------------------------
# A private CA and two ECDSA P-256 leaves (the same key type as mesh's leaves).
PKI="$WORK/pki"; mkdir -p "$PKI"
(
    cd "$PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=bench-ca -out ca.pem 2>/dev/null
    for who in server client; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$who.key" 2>/dev/null
        openssl req -new -key "$who.key" -subj "/CN=$who" -out "$who.csr" 2>/dev/null
        if [[ $who == server ]]; then
            printf 'subjectAltName=DNS:socat.bench,URI:spiffe://bench.consul/ns/default/dc/dc1/svc/socat\nextendedKeyUsage=serverAuth,clientAuth\n' >"$who.ext"
        else
            printf 'subjectAltName=URI:spiffe://bench.consul/ns/default/dc/dc1/svc/web\nextendedKeyUsage=serverAuth,clientAuth\n' >"$who.ext"
        fi
        openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
            -extfile "$who.ext" -out "$who.crt" 2>/dev/null
        cat "$who.crt" "$who.key" >"$who.pem"
    done
)
HA_MAXCONN=$(( HOLD + 50 ))
cat >"$WORK/haproxy-b.cfg" <<CFG
# B: the "socat sidecar": terminates mTLS, requires a client cert from the CA.
global
    maxconn $HA_MAXCONN
    nbthread $HAPROXY_THREADS
defaults
    mode tcp
    maxconn $HA_MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend echo_in
    bind 127.0.0.1:$HB_ECHO ssl crt $PKI/server.pem ca-file $PKI/ca.pem verify required
    default_backend echo_app
backend echo_app
    server app 127.0.0.1:$ECHO_PORT
frontend iperf_in
    bind 127.0.0.1:$HB_IPERF ssl crt $PKI/server.pem ca-file $PKI/ca.pem verify required
    default_backend iperf_app
backend iperf_app
    server app 127.0.0.1:$IPERF_PORT
CFG
cat >"$WORK/haproxy-a.cfg" <<CFG
# A: the "web sidecar": plain TCP in, mTLS out, verifies B's cert against the CA.
global
    maxconn $HA_MAXCONN
    nbthread $HAPROXY_THREADS
defaults
    mode tcp
    maxconn $HA_MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend echo_up
    bind 127.0.0.1:$HA_ECHO
    default_backend echo_mtls
backend echo_mtls
    server b 127.0.0.1:$HB_ECHO ssl crt $PKI/client.pem ca-file $PKI/ca.pem verify required sni str(socat.bench) verifyhost socat.bench
frontend iperf_up
    bind 127.0.0.1:$HA_IPERF
    default_backend iperf_mtls
backend iperf_mtls
    server b 127.0.0.1:$HB_IPERF ssl crt $PKI/client.pem ca-file $PKI/ca.pem verify required sni str(socat.bench) verifyhost socat.bench
CFG
for side in a b; do
    haproxy -c -q -f "$WORK/haproxy-$side.cfg" || { log "haproxy-$side.cfg is invalid"; exit 1; }
done
haproxy -db -f "$WORK/haproxy-b.cfg" >"$WORK/haproxy-b.log" 2>&1 &
HAP_B=$!; PIDS+=("$HAP_B"); DAEMONS+=("$HAP_B")
haproxy -db -f "$WORK/haproxy-a.cfg" >"$WORK/haproxy-a.log" 2>&1 &
HAP_A=$!; PIDS+=("$HAP_A"); DAEMONS+=("$HAP_A")
wait_for 20 "an echo through haproxy" "$LG" check "127.0.0.1:$HA_ECHO"
iperf_ha_ok() { timeout 10 iperf3 -c 127.0.0.1 -p "$HA_IPERF" -t 1 -f m; }
wait_for 20 "iperf3 through haproxy" iperf_ha_ok

# What each mTLS hop negotiates (the web leaf and roots come from the mesh agent).
curl -fsS "http://$CONSUL_HTTP_ADDR/v1/agent/connect/ca/leaf/web" >"$WORK/web-leaf.json"
jq -r .CertPEM "$WORK/web-leaf.json" >"$PKI/mesh-web.crt"
jq -r .PrivateKeyPEM "$WORK/web-leaf.json" >"$PKI/mesh-web.key"
curl -fsS "http://$CONSUL_HTTP_ADDR/v1/agent/connect/ca/roots" | jq -r '.Roots[].RootCert' >"$PKI/mesh-roots.pem"
tls_of() { # tls_of PORT CERT KEY CA
    openssl s_client -connect "127.0.0.1:$1" -cert "$2" -key "$3" -CAfile "$4" -brief </dev/null 2>&1 |
        awk -F': *' '/^Protocol version/{p=$2} /^Ciphersuite/{c=$2} /^Peer signature type/{s=$2} END{print p" "c" ("s")"}'
}
TLS_MESH="$(tls_of "$SC_ECHO" "$PKI/mesh-web.crt" "$PKI/mesh-web.key" "$PKI/mesh-roots.pem")"
TLS_HA="$(tls_of "$HB_ECHO" "$PKI/client.crt" "$PKI/client.key" "$PKI/ca.pem")"
log "mTLS hop: mesh $TLS_MESH; haproxy $TLS_HA"

RSS_IDLE_MESH_A=$(rss_kb "$MESH_A") RSS_IDLE_MESH_B=$(rss_kb "$MESH_B")
RSS_IDLE_HA_A=$(rss_kb "$HAP_A") RSS_IDLE_HA_B=$(rss_kb "$HAP_B")

MESH_VERSION="$("$MESH" version 2>/dev/null | head -n1 || true)"
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]] && REV="$REV+dirty"
log "mesh $REV ($MESH_VERSION), $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(iperf3 --version | head -n1 | cut -d' ' -f1-2)"
log "paths: direct 127.0.0.1:$ECHO_PORT, haproxy 127.0.0.1:$HA_ECHO, mesh 127.0.0.1:$UP_ECHO; temp dir $WORK"

# --- sampler: is another build running? ---------------------------------------------
(
    for _ in $(seq 1 900); do
        echo "$(date +%s) $(rustc_count) $(cut -d' ' -f1 /proc/loadavg)"
        sleep 1
    done
) >"$WORK/sampler.txt" 2>/dev/null &
PIDS+=($!); DAEMONS+=($!)

# --- measurements -------------------------------------------------------------------
RES="$WORK/results.tsv"   # path <TAB> metric <TAB> value, one row per round
: >"$RES"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
addr_of() { case $1 in direct) echo "127.0.0.1:$ECHO_PORT" ;; haproxy) echo "127.0.0.1:$HA_ECHO" ;; mesh) echo "127.0.0.1:$UP_ECHO" ;; esac; }
iperf_port_of() { case $1 in direct) echo "$IPERF_PORT" ;; haproxy) echo "$HA_IPERF" ;; mesh) echo "$UP_IPERF" ;; esac; }
proxy_pids_of() { case $1 in direct) echo "" ;; haproxy) echo "$HAP_A $HAP_B" ;; mesh) echo "$MESH_A $MESH_B" ;; esac; }
# PERF=1: count the proxies' system calls (perf stat, raw_syscalls:sys_enter) during
# each case. Off by default: tracing every syscall perturbs what it measures.
PERF_PID=""
perf_start() { # perf_start PID...
    PERF_PID=""
    [[ "${PERF:-0}" == 1 && $# -gt 0 ]] || return 0
    PERF_OUT="$WORK/perf.$RANDOM.csv"
    perf stat -x, -e raw_syscalls:sys_enter -p "$(IFS=,; echo "$*")" -o "$PERF_OUT" 2>/dev/null &
    PERF_PID=$!
    sleep 0.3
}
perf_stop() { # sets PERF_COUNT (empty without PERF=1)
    PERF_COUNT=""
    [[ -n "$PERF_PID" ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_COUNT="$(awk -F, '/raw_syscalls/ { print $1 }' "$PERF_OUT")"
    PERF_PID=""
}
ticks_of() { local t=0 p; for p in "$@"; do t=$(( t + $(cpu_ticks "$p") )); done; echo "$t"; }

echo_case() { # echo_case PATH ROUND CONNS SECS TAG
    local path=$1 round=$2 conns=$3 secs=$4 tag=$5 out t0 t1 pids b0 o0 f
    pids="$(proxy_pids_of "$path")"
    b0=$(busy_ticks) o0=$(own_ticks)
    # shellcheck disable=SC2086
    perf_start $pids
    # shellcheck disable=SC2086
    t0=$(ticks_of $pids)
    out="$("$LG" rtt "$(addr_of "$path")" --conns "$conns" --size "$SIZE" --secs "$secs" --warmup "$WARMUP")"
    # shellcheck disable=SC2086
    t1=$(ticks_of $pids)
    perf_stop
    f=$(foreign "$b0" "$o0")
    log "round $round $path $tag: $out  (other processes: ${f} CPU-s; $(noise))"
    rec "$path" "$tag.foreign" "$f"
    rec "$path" "$tag.rate" "$(field rate "$out")"
    rec "$path" "$tag.p50" "$(field p50_us "$out")"
    rec "$path" "$tag.p99" "$(field p99_us "$out")"
    if [[ -n "$pids" ]]; then
        # CPU of both proxies per 1000 echoes (warm-up included in both terms).
        awk -v t=$((t1 - t0)) -v hz="$HZ" -v r="$(field rate "$out")" -v s="$secs" -v w="$WARMUP" \
            'BEGIN { printf "%.1f\n", (t / hz * 1000) / (r * (s + w) / 1000) }' |
            { read -r v; rec "$path" "$tag.cpu" "$v"; }
        if [[ -n "$PERF_COUNT" ]]; then
            awk -v c="$PERF_COUNT" -v r="$(field rate "$out")" -v s="$secs" -v w="$WARMUP" \
                'BEGIN { printf "%.1f\n", c / (r * (s + w)) }' | { read -r v; rec "$path" "$tag.sys" "$v"; }
        fi
    fi
}
foreign() { # foreign BUSY0 OWN0: CPU-seconds used by other processes since then
    awk -v b=$(( $(busy_ticks) - $1 )) -v o=$(( $(own_ticks) - $2 )) -v hz="$HZ" \
        'BEGIN { f = (b - o) / hz; if (f < 0) f = 0; printf "%.1f", f }'
}
iperf_case() { # iperf_case PATH ROUND
    local path=$1 round=$2 out mbps
    case $path in haproxy) perf_start "$HAP_A" "$HAP_B" ;; mesh) perf_start "$MESH_A" "$MESH_B_IPERF" ;; esac
    out="$(timeout $((IPERF_SECS + 20)) iperf3 -c 127.0.0.1 -p "$(iperf_port_of "$path")" -t "$IPERF_SECS" -f m)"
    mbps="$(awk '/receiver/{for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1)}' <<<"$out")"
    [[ -n "$mbps" ]] || { log "iperf3 over $path gave no result"; echo "$out" >&2; exit 1; }
    perf_stop
    if [[ -n "$PERF_COUNT" ]]; then
        # per MB (1e6 bytes) received, over the whole iperf3 run (about IPERF_SECS + 1 s)
        rec "$path" "iperf.sys" "$(awk -v c="$PERF_COUNT" -v m="$mbps" -v s="$IPERF_SECS" 'BEGIN { printf "%.1f", c / (m * s / 8) }')"
    fi
    log "round $round $path iperf3: $mbps Mbit/s  ($(noise))"
    rec "$path" "iperf.gbps" "$(awk -v m="$mbps" 'BEGIN{printf "%.2f", m / 1000}')"
}

MEASURE_T0=$(date +%s) MEASURE_B0=$(busy_ticks) MEASURE_O0=$(own_ticks)
for round in $(seq 1 "$ROUNDS"); do
    if (( round % 2 )); then order="direct haproxy mesh"; else order="mesh haproxy direct"; fi
    for path in $order; do echo_case "$path" "$round" "$CONNS" "$DURATION" c$CONNS; done
    if [[ "$SEQ_DURATION" != 0 ]]; then
        for path in $order; do echo_case "$path" "$round" 1 "$SEQ_DURATION" c1; done
    fi
    if [[ "$IPERF_SECS" != 0 ]]; then
        for path in $order; do iperf_case "$path" "$round"; sleep 0.5; done
    fi
done
MEASURE_T1=$(date +%s)

# --- memory with many open connections -----------------------------------------------
RSS_LOADED_MESH_A=$(rss_kb "$MESH_A") RSS_LOADED_MESH_B=$(rss_kb "$MESH_B")
RSS_LOADED_HA_A=$(rss_kb "$HAP_A") RSS_LOADED_HA_B=$(rss_kb "$HAP_B")
hold_case() { # hold_case PATH PID_A PID_B -> sets HOLD_<PATH>_* variables via rec
    local path=$1 pa=$2 pb=$3 out="$WORK/hold-$1.out" lg n line
    "$LG" hold "$(addr_of "$path")" --steps "$HOLD_HALF,$HOLD" --parallel 128 --pause 3 >"$out" 2>"$WORK/hold-$path.err" &
    lg=$!
    for n in "$HOLD_HALF" "$HOLD"; do
        wait_for 120 "$n connections held over $path" grep -q "^held=$n " "$out" ||
            { cat "$WORK/hold-$path.err" >&2; exit 1; }
        sleep 1
        line="$(grep "^held=$n " "$out")"
        [[ "$(field failed "$line")" == 0 ]] || { log "$path: $line"; exit 1; }
        rec "$path" "rss.a.$n" "$(rss_kb "$pa")"
        rec "$path" "rss.b.$n" "$(rss_kb "$pb")"
        rec "$path" "open_rate.$n" "$(field open_rate "$line")"
        log "$path holding $n connections: A $(rss_kb "$pa") kB, B $(rss_kb "$pb") kB; opened at $(field open_rate "$line")/s ($(noise))"
    done
    wait "$lg" || { log "hold over $path failed"; cat "$WORK/hold-$path.err" >&2; exit 1; }
    sleep 3
    rec "$path" "rss.a.after" "$(rss_kb "$pa")"
    rec "$path" "rss.b.after" "$(rss_kb "$pb")"
}
hold_case mesh "$MESH_A" "$MESH_B"
hold_case haproxy "$HAP_A" "$HAP_B"
HOLD_T1=$(date +%s)
FOREIGN_ALL="$(foreign "$MEASURE_B0" "$MEASURE_O0")"

log "uptime after: $(uptime)"
UPTIME_AFTER="$(uptime)"
BUSY="$(awk -v a="$MEASURE_T0" -v b="$HOLD_T1" '$1 >= a && $1 <= b { n++; if ($2 > 0) busy++; if ($3 > mx) mx = $3 }
    END { printf "other processes used %s CPU-s of the %d available; rustc ran in %d of %d sampled seconds; max load1 %.2f (includes our own processes)", f, n * c, busy, n, mx }' \
    f="$FOREIGN_ALL" c="$(nproc)" "$WORK/sampler.txt")"
log "during the measurements: $BUSY"

# --- table ----------------------------------------------------------------------------
med() { # med PATH METRIC: median over rounds
    awk -F'\t' -v p="$1" -v m="$2" '$1 == p && $2 == m { print $3 }' "$RES" | sort -g |
        awk '{ v[++n] = $1 } END { if (!n) { print "-"; exit }
              m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
              if (m >= 100) printf "%.0f\n", m; else if (m >= 10) printf "%.1f\n", m; else printf "%.2f\n", m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() { # row LABEL METRIC
    local d h m
    d="$(med direct "$2")" h="$(med haproxy "$2")" m="$(med mesh "$2")"
    printf '| %-34s | %10s | %10s | %10s | %12s | %11s |\n' "$1" "$d" "$h" "$m" "$(ratio "$m" "$h")" "$(ratio "$m" "$d")"
}
kb2mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
extrap() { # extrap PATH SIDE: linear from the two held steps to HOLD_TARGET, in MiB
    local r1 r2
    r1="$(med "$1" "rss.$2.$HOLD_HALF")" r2="$(med "$1" "rss.$2.$HOLD")"
    awk -v r1="$r1" -v r2="$r2" -v n1="$HOLD_HALF" -v n2="$HOLD" -v t="$HOLD_TARGET" \
        'BEGIN { printf "%.1f", (r2 + (t - n2) * (r2 - r1) / (n2 - n1)) / 1024 }'
}
per_conn() { # per_conn PATH SIDE: kB per held connection between idle and HOLD
    awk -v r0="$2" -v r2="$(med "$1" "rss.$3.$HOLD")" -v n="$HOLD" 'BEGIN { printf "%.1f", (r2 - r0) / n }'
}
rssrow() { # rssrow LABEL MESH_A MESH_B HA_A HA_B (kB)
    printf '| %-34s | %10s | %10s | %10s | %12s |\n' "$1" "$(kb2mb "$2")" "$(kb2mb "$3")" "$(kb2mb "$4")" "$(kb2mb "$5")"
}

{
    echo "## L4 proxy: mesh vs HAProxy 2.6 (mTLS) vs direct — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "mesh $REV; $(haproxy -v | head -n1 | cut -d' ' -f1-3); $(iperf3 --version | head -n1 | cut -d' ' -f1-2); $(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)); RLIMIT_NOFILE $NOFILE"
    echo "mTLS hop: mesh $TLS_MESH; haproxy $TLS_HA"
    echo "echo: $CONNS connections x $SIZE B closed loop, ${DURATION}s (+${WARMUP}s warm-up) per path per round; 1 connection for ${SEQ_DURATION}s; iperf3 single stream ${IPERF_SECS}s; median of $ROUNDS round(s), path order alternating"
    echo
    printf '| %-34s | %10s | %10s | %10s | %12s | %11s |\n' "metric (median over rounds)" direct haproxy mesh mesh/haproxy mesh/direct
    printf '|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "-----------:" "-----------:" "-----------:" "-------------:" "------------:"
    row "c$CONNS echoes/s" "c$CONNS.rate"
    row "c$CONNS RTT p50 (µs)" "c$CONNS.p50"
    row "c$CONNS RTT p99 (µs)" "c$CONNS.p99"
    row "c$CONNS CPU of both proxies, ms/1k echoes" "c$CONNS.cpu"
    if [[ "$SEQ_DURATION" != 0 ]]; then
        row "c1 echoes/s" "c1.rate"
        row "c1 RTT p50 (µs)" "c1.p50"
        row "c1 RTT p99 (µs)" "c1.p99"
    fi
    if [[ "$IPERF_SECS" != 0 ]]; then row "iperf3 single stream (Gbit/s)" "iperf.gbps"; fi
    row "other processes' CPU-s during c$CONNS" "c$CONNS.foreign"
    if [[ "${PERF:-0}" == 1 ]]; then
        row "syscalls of both proxies per echo" "c$CONNS.sys"
        row "syscalls of both proxies per MB" "iperf.sys"
    fi
    echo
    echo "Throughput ratios < 1 and latency/CPU ratios > 1 mean mesh is worse."
    echo
    echo "RSS (MiB; A = web sidecar / haproxy A, B = socat sidecar / haproxy B):"
    echo
    printf '| %-34s | %10s | %10s | %10s | %12s |\n' "" "mesh A" "mesh B" "haproxy A" "haproxy B"
    printf '|%s|%s|%s|%s|%s|\n' "------------------------------------" "-----------:" "-----------:" "-----------:" "-------------:"
    rssrow "idle, after start-up" "$RSS_IDLE_MESH_A" "$RSS_IDLE_MESH_B" "$RSS_IDLE_HA_A" "$RSS_IDLE_HA_B"
    rssrow "idle, after the load runs" "$RSS_LOADED_MESH_A" "$RSS_LOADED_MESH_B" "$RSS_LOADED_HA_A" "$RSS_LOADED_HA_B"
    rssrow "holding $HOLD_HALF connections" "$(med mesh rss.a.$HOLD_HALF)" "$(med mesh rss.b.$HOLD_HALF)" "$(med haproxy rss.a.$HOLD_HALF)" "$(med haproxy rss.b.$HOLD_HALF)"
    rssrow "holding $HOLD connections" "$(med mesh rss.a.$HOLD)" "$(med mesh rss.b.$HOLD)" "$(med haproxy rss.a.$HOLD)" "$(med haproxy rss.b.$HOLD)"
    if (( HOLD_TARGET != HOLD )); then
        printf '| %-34s | %10s | %10s | %10s | %12s |\n' "$HOLD_TARGET connections (extrapolated)" \
            "$(extrap mesh a)" "$(extrap mesh b)" "$(extrap haproxy a)" "$(extrap haproxy b)"
    fi
    printf '| %-34s | %10s | %10s | %10s | %12s |\n' "kB per held connection" \
        "$(per_conn mesh "$RSS_LOADED_MESH_A" a)" "$(per_conn mesh "$RSS_LOADED_MESH_B" b)" \
        "$(per_conn haproxy "$RSS_LOADED_HA_A" a)" "$(per_conn haproxy "$RSS_LOADED_HA_B" b)"
    rssrow "3 s after closing them" "$(med mesh rss.a.after)" "$(med mesh rss.b.after)" "$(med haproxy rss.a.after)" "$(med haproxy rss.b.after)"
    echo
    echo "Opening $HOLD connections (each verified by an echo, 128 in flight): mesh $(med mesh open_rate.$HOLD_HALF)/s then $(med mesh open_rate.$HOLD)/s, haproxy $(med haproxy open_rate.$HOLD_HALF)/s then $(med haproxy open_rate.$HOLD)/s."
    echo
    echo "uptime before: $UPTIME_BEFORE"
    echo "uptime after:  $UPTIME_AFTER"
    echo "during the measurements: $BUSY"
    echo "total wall time: $((SECONDS - START_SECONDS)) s"
} | tee "$WORK/table.md"
