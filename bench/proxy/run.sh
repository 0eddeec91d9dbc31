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
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$BENCH_DIR/../lib.sh"
LOG_PREFIX=proxy-bench
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-1}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
SIZE="${SIZE:-1024}"
SEQ_DURATION="${SEQ_DURATION:-4}"
IPERF_SECS="${IPERF_SECS:-5}"
HOLD="${HOLD:-10000}"
HAPROXY_THREADS="${HAPROXY_THREADS:-$(nproc)}"   # HAProxy's own default: one per CPU

# --- install (idempotent) -----------------------------------------------------
install_missing haproxy iperf3 openssl curl jq ss:iproute2
[[ "${PERF:-0}" == 1 ]] && ! command -v perf >/dev/null 2>&1 && { log "PERF=1 needs perf (linux-perf)"; exit 1; }
require_tools haproxy iperf3 openssl curl jq ss cargo
# The Debian package enables a system haproxy service where systemd runs; it listens
# on nothing we use (its default config has no frontends), so it cannot collide.

# --- build --------------------------------------------------------------------
build_mesh
build_loadgen "$BENCH_DIR/loadgen" mesh-proxy-loadgen
LG="$LOADGEN"

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
make_workdir mesh-proxy-bench
on_failure() { tail_logs "$WORK"/*.log "$WORK"/*.err; }
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

mapfile -t PORTS < <(pick_ports 14)
ECHO_PORT=${PORTS[0]}      IPERF_PORT=${PORTS[1]}
SC_ECHO=${PORTS[2]}        SC_IPERF=${PORTS[3]}       # mesh sidecars' public listeners
UP_ECHO=${PORTS[4]}        UP_IPERF=${PORTS[5]}       # web proxy upstream listeners
HA_ECHO=${PORTS[6]}        HA_IPERF=${PORTS[7]}       # haproxy A (plain in)
HB_ECHO=${PORTS[8]}        HB_IPERF=${PORTS[9]}       # haproxy B (mTLS in)
AGENT_SERVER=${PORTS[10]}  AGENT_SERF=${PORTS[11]}

uptime_note before

# One echo server and one iperf3 server, shared by all three paths.
spawn echo "$LG" echo "127.0.0.1:$ECHO_PORT"
spawn iperf3-server iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
wait_for 10 "the echo server" "${PIDS[*]}" "$LG" check "127.0.0.1:$ECHO_PORT"

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
    AGENT_PID=$!; PIDS+=("$AGENT_PID"); DAEMONS+=("$AGENT_PID")
    deadline=$((SECONDS + 30))
    while [[ -z "$(http_port)" ]] && kill -0 "$AGENT_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.1
    done
    AGENT_HTTP="$(http_port)"
    [[ -n "$AGENT_HTTP" ]] && break
    log "agent did not start (attempt $attempt): $(tail -n1 "$WORK/agent.log")"
    kill "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
    unset 'PIDS[-1]' 'DAEMONS[-1]'
done
[[ -n "$AGENT_HTTP" ]] || { log "mesh agent did not start"; exit 1; }
export CONSUL_HTTP_ADDR="127.0.0.1:$AGENT_HTTP"

spawn sidecar-socat "$MESH" proxy -sidecar-for socat -bind-address 127.0.0.1 -log-level warn
MESH_B=$SPAWNED
spawn sidecar-iperf "$MESH" proxy -sidecar-for iperf -bind-address 127.0.0.1 -log-level warn
MESH_B_IPERF=$SPAWNED
spawn web "$MESH" proxy -service web -upstream "socat:$UP_ECHO" -upstream "iperf:$UP_IPERF" -log-level warn
MESH_A=$SPAWNED
wait_for 30 "the web proxy's upstream listeners" "${PIDS[*]}" \
    bash -c "grep -q 'Upstream socat:' '$WORK/web.out' && grep -q 'Upstream iperf:' '$WORK/web.out'"
# The sidecar becomes an endpoint once its TCP health check passes (up to ~10 s).
wait_for 40 "an echo through the mesh" "${PIDS[*]}" "$LG" check "127.0.0.1:$UP_ECHO"
iperf_mesh_ok() { timeout 10 iperf3 -c 127.0.0.1 -p "$UP_IPERF" -t 1 -f m; }
wait_for 40 "iperf3 through the mesh" "${PIDS[*]}" iperf_mesh_ok

# --- haproxy --------------------------------------------------------------------------
# A private CA and two leaves: the server one as the socat service.
make_pki socat.bench socat
HA_MAXCONN=$(( HOLD + 50 ))
HA_COMMON="global
    maxconn $HA_MAXCONN
    nbthread $HAPROXY_THREADS
defaults
    mode tcp
    maxconn $HA_MAXCONN
    timeout connect 5s
    timeout client 1h
    timeout server 1h"
cat >"$WORK/haproxy-b.cfg" <<CFG
# B: the "socat sidecar": terminates mTLS, requires a client cert from the CA.
$HA_COMMON
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
$HA_COMMON
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
start_haproxy_pair
wait_for 20 "an echo through haproxy" "${PIDS[*]}" "$LG" check "127.0.0.1:$HA_ECHO"
iperf_ha_ok() { timeout 10 iperf3 -c 127.0.0.1 -p "$HA_IPERF" -t 1 -f m; }
wait_for 20 "iperf3 through haproxy" "${PIDS[*]}" iperf_ha_ok

# What each mTLS hop negotiates (the web leaf and roots come from the mesh agent).
fetch_mesh_leaf web || { log "the mesh agent gave no leaf certificate for web"; exit 1; }
TLS_MESH="$(tls_of "$SC_ECHO" "$PKI/mesh-web.crt" "$PKI/mesh-web.key" "$PKI/mesh-roots.pem" sig)"
TLS_HA="$(tls_of "$HB_ECHO" "$PKI/client.crt" "$PKI/client.key" "$PKI/ca.pem" sig)"
log "mTLS hop: mesh $TLS_MESH; haproxy $TLS_HA"

RSS_IDLE_MESH_A=$(rss_kb "$MESH_A") RSS_IDLE_MESH_B=$(rss_kb "$MESH_B")
RSS_IDLE_HA_A=$(rss_kb "$HAP_A_PID") RSS_IDLE_HA_B=$(rss_kb "$HAP_B_PID")

MESH_VERSION="$("$MESH" version 2>/dev/null | head -n1 || true)"
REV="$(git_rev)"
log "mesh $REV ($MESH_VERSION), $(haproxy -v | head -n1 | cut -d' ' -f1-3), $(iperf3 --version | head -n1 | cut -d' ' -f1-2)"
log "paths: direct 127.0.0.1:$ECHO_PORT, haproxy 127.0.0.1:$HA_ECHO, mesh 127.0.0.1:$UP_ECHO; temp dir $WORK"

# --- sampler: is another build running? ---------------------------------------------
start_sampler

# --- measurements -------------------------------------------------------------------
results_init
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
addr_of() { case $1 in direct) echo "127.0.0.1:$ECHO_PORT" ;; haproxy) echo "127.0.0.1:$HA_ECHO" ;; mesh) echo "127.0.0.1:$UP_ECHO" ;; esac; }
iperf_port_of() { case $1 in direct) echo "$IPERF_PORT" ;; haproxy) echo "$HA_IPERF" ;; mesh) echo "$UP_IPERF" ;; esac; }
proxy_pids_of() { case $1 in direct) echo "" ;; haproxy) echo "$HAP_A_PID $HAP_B_PID" ;; mesh) echo "$MESH_A $MESH_B" ;; esac; }
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
iperf_case() { # iperf_case PATH ROUND
    local path=$1 round=$2 out mbps
    case $path in haproxy) perf_start "$HAP_A_PID" "$HAP_B_PID" ;; mesh) perf_start "$MESH_A" "$MESH_B_IPERF" ;; esac
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
    for path in $order; do echo_case "$path" "$round" "$CONNS" "$DURATION" "c$CONNS"; done
    if [[ "$SEQ_DURATION" != 0 ]]; then
        for path in $order; do echo_case "$path" "$round" 1 "$SEQ_DURATION" c1; done
    fi
    if [[ "$IPERF_SECS" != 0 ]]; then
        for path in $order; do iperf_case "$path" "$round"; sleep 0.5; done
    fi
done

# --- memory with many open connections -----------------------------------------------
RSS_LOADED_MESH_A=$(rss_kb "$MESH_A") RSS_LOADED_MESH_B=$(rss_kb "$MESH_B")
RSS_LOADED_HA_A=$(rss_kb "$HAP_A_PID") RSS_LOADED_HA_B=$(rss_kb "$HAP_B_PID")
hold_case() { # hold_case PATH PID_A PID_B -> sets HOLD_<PATH>_* variables via rec
    local path=$1 pa=$2 pb=$3 out="$WORK/hold-$1.out" lg n line
    "$LG" hold "$(addr_of "$path")" --steps "$HOLD_HALF,$HOLD" --parallel 128 --pause 3 >"$out" 2>"$WORK/hold-$path.err" &
    lg=$!
    for n in "$HOLD_HALF" "$HOLD"; do
        wait_for 120 "$n connections held over $path" "${PIDS[*]}" grep -q "^held=$n " "$out" ||
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
hold_case haproxy "$HAP_A_PID" "$HAP_B_PID"
HOLD_T1=$(date +%s)
FOREIGN_ALL="$(foreign "$MEASURE_B0" "$MEASURE_O0")"

uptime_note after
BUSY="$(sampler_summary "$MEASURE_T0" "$HOLD_T1" "$FOREIGN_ALL")"
log "during the measurements: $BUSY"

# --- table ----------------------------------------------------------------------------
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
    echo "mesh $REV; $(haproxy -v | head -n1 | cut -d' ' -f1-3); $(iperf3 --version | head -n1 | cut -d' ' -f1-2); $(cpu_desc); RLIMIT_NOFILE $NOFILE"
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
    rssrow "holding $HOLD_HALF connections" "$(med mesh "rss.a.$HOLD_HALF")" "$(med mesh "rss.b.$HOLD_HALF")" "$(med haproxy "rss.a.$HOLD_HALF")" "$(med haproxy "rss.b.$HOLD_HALF")"
    rssrow "holding $HOLD connections" "$(med mesh "rss.a.$HOLD")" "$(med mesh "rss.b.$HOLD")" "$(med haproxy "rss.a.$HOLD")" "$(med haproxy "rss.b.$HOLD")"
    if (( HOLD_TARGET != HOLD )); then
        printf '| %-34s | %10s | %10s | %10s | %12s |\n' "$HOLD_TARGET connections (extrapolated)" \
            "$(extrap mesh a)" "$(extrap mesh b)" "$(extrap haproxy a)" "$(extrap haproxy b)"
    fi
    printf '| %-34s | %10s | %10s | %10s | %12s |\n' "kB per held connection" \
        "$(per_conn mesh "$RSS_LOADED_MESH_A" a)" "$(per_conn mesh "$RSS_LOADED_MESH_B" b)" \
        "$(per_conn haproxy "$RSS_LOADED_HA_A" a)" "$(per_conn haproxy "$RSS_LOADED_HA_B" b)"
    rssrow "3 s after closing them" "$(med mesh rss.a.after)" "$(med mesh rss.b.after)" "$(med haproxy rss.a.after)" "$(med haproxy rss.b.after)"
    echo
    echo "Opening $HOLD connections (each verified by an echo, 128 in flight): mesh $(med mesh "open_rate.$HOLD_HALF")/s then $(med mesh "open_rate.$HOLD")/s, haproxy $(med haproxy "open_rate.$HOLD_HALF")/s then $(med haproxy "open_rate.$HOLD")/s."
    echo
    table_footer "during the measurements" "$BUSY"
} | tee "$WORK/table.md"
