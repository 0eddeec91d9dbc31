#!/usr/bin/env bash
# L7 benchmark: HTTP/1.1 keep-alive through a sidecar pair doing a 90/10 split, mesh
# against nginx 1.22 and HAProxy 2.6 pairs with mTLS between them (Debian's packages)
# and against a direct connection, same machine, same run, same backends, same load
# generator (wrk). Then the config propagation time: from `mesh config write` of a
# changed splitter to the new config being applied by PROXIES running proxies.
#
#   wrk ─► web proxy ══mTLS══► billing-v1 / billing-v2 sidecars ─► backend v1 / v2  (mesh x3)
#   wrk ─► nginx A   ══mTLS══► nginx B (two listeners)          ─► backend v1 / v2  (nginx x2)
#   wrk ─► haproxy A ══mTLS══► haproxy B (two frontends)        ─► backend v1 / v2  (haproxy x2)
#   wrk ────────────────────────────────────────────────────────► backend v1        (direct)
#
#   bash bench/l7/run.sh                               # ~2 minutes plus the mesh build
#   DURATION=4 ROUNDS=1 PROXIES=20 bash bench/l7/run.sh  # quick look, ~30 s
#
# Knobs (environment): DURATION (s measured per path per round, default 10), WARMUP
# (s of wrk before each measured run, discarded, default 2), ROUNDS (default 2; path
# order alternates), CONNS (wrk connections, default 64), THREADS (wrk threads, default
# nproc), SAMPLES (requests sampled per path to measure the split, default 1000; 0 skips),
# PROXIES (proxies in the propagation test, default 100; 0 skips it), NGINX_WORKERS and
# HAPROXY_THREADS (default nproc, as each does with `auto`), SKIP_INSTALL=1,
# SKIP_BUILD=1, MESH_BIN=/path/to/mesh, KEEP_DATA=1 (keep the temp dir with logs and
# configs).
#
# Exit status: 0 when every path ran; 2 when the peers ran but the mesh path (or the
# propagation test) could not be measured — the reason is printed under the table; 1 on
# any other failure.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$BENCH_DIR/../lib.sh"
LOG_PREFIX=l7-bench
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-2}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-$(nproc)}"
SAMPLES="${SAMPLES:-1000}"
PROXIES="${PROXIES:-100}"
NGINX_WORKERS="${NGINX_WORKERS:-$(nproc)}"
HAPROXY_THREADS="${HAPROXY_THREADS:-$(nproc)}"
# A proxied path splits if its sampled v2 share lands in this band (percent). With 1000
# samples at p = 0.1 the standard deviation is 0.95 points, so 6..14 is > 4 sigma.
SPLIT_MIN="${SPLIT_MIN:-6}"
SPLIT_MAX="${SPLIT_MAX:-14}"

# --- install (idempotent) -----------------------------------------------------
install_missing wrk nginx haproxy openssl curl jq ss:iproute2
require_tools wrk nginx haproxy openssl curl jq ss
# The Debian packages enable system nginx/haproxy services where systemd runs; this
# script starts its own instances with their own configs on free loopback ports.

# --- build --------------------------------------------------------------------
build_mesh

# --- processes --------------------------------------------------------------------
make_workdir mesh-l7-bench
# Exit status 2 (the mesh part not measured) says why under the table; 1 shows the logs.
on_failure() { [[ $1 == 1 ]] && tail_logs "$WORK"/*.log "$WORK"/*.err "$WORK"/*/error.log; }

oneline() { tr '\n' ' ' <<<"$1" | sed 's/ *$//'; }
# nginx runs a master and NGINX_WORKERS workers: all of them count.
nginx_pids() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

mapfile -t PORTS < <(pick_ports 16)
BACK_V1=${PORTS[0]}    BACK_V2=${PORTS[1]}      # the backends (one nginx, two servers)
NGX_A=${PORTS[2]}      NGX_B1=${PORTS[3]}   NGX_B2=${PORTS[4]}
HAP_A_PORT=${PORTS[5]} HAP_B1=${PORTS[6]}   HAP_B2=${PORTS[7]}
# shellcheck disable=SC2034  # SC_V2 is read as ${!sc}
SC_V1=${PORTS[8]}      SC_V2=${PORTS[9]}        # mesh sidecars' public listeners
UP_WEB=${PORTS[10]}                             # the web proxy's billing-api listener
AGENT_HTTP=${PORTS[11]} AGENT_DNS=${PORTS[12]} AGENT_SERVER=${PORTS[13]} AGENT_SERF=${PORTS[14]}

uptime_note before
export NO_COLOR=1   # plain log lines from mesh (tracing) for the propagation parser

# --- backends: one nginx, two servers answering 200 with their version --------------
nginx_common() { # nginx_common DIR: the top of an nginx.conf rooted in DIR
    mkdir -p "$1/tmp"
    cat <<CFG
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
CFG
}
nginx_http_common() { # temp paths inside DIR; no access log; keep-alive without a request cap
    cat <<CFG
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
CFG
}
start_nginx() { # start_nginx NAME: runs $WORK/NAME/nginx.conf; sets NGINX_PID
    local dir="$WORK/$1"
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || { log "nginx $1: invalid config"; exit 1; }
    nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
}
mkdir -p "$WORK/backend"
{
    nginx_common "$WORK/backend"
    echo "http {"
    nginx_http_common "$WORK/backend"
    cat <<CFG
    default_type text/plain;
    server { listen 127.0.0.1:$BACK_V1; location / { add_header X-Backend v1 always; return 200 "v1\n"; } }
    server { listen 127.0.0.1:$BACK_V2; location / { add_header X-Backend v2 always; return 200 "v2\n"; } }
}
CFG
} >"$WORK/backend/nginx.conf"
start_nginx backend
BACKEND_PID=$NGINX_PID
wait_for 20 "backend v1" "$BACKEND_PID" curl -fsS "http://127.0.0.1:$BACK_V1/"
wait_for 20 "backend v2" "$BACKEND_PID" curl -fsS "http://127.0.0.1:$BACK_V2/"
# shellcheck disable=SC2207
DAEMONS+=($(nginx_pids "$BACKEND_PID"))

# --- PKI for the peers: a CA, a server leaf (B side), a client leaf (A side) ---------
make_pki billing.bench billing-api

# --- nginx pair --------------------------------------------------------------------
mkdir -p "$WORK/nginx-b" "$WORK/nginx-a"
{
    nginx_common "$WORK/nginx-b"
    echo "http {"
    nginx_http_common "$WORK/nginx-b"
    for v in 1 2; do
        back=BACK_V$v listen=NGX_B$v
        cat <<CFG
    upstream app_v$v { server 127.0.0.1:${!back}; keepalive 64; keepalive_requests 1000000; }
    server {
        # B, the "billing-api v$v sidecar": mTLS in, requires a client cert from the CA.
        listen 127.0.0.1:${!listen} ssl;
        ssl_certificate $PKI/server.crt;
        ssl_certificate_key $PKI/server.key;
        ssl_client_certificate $PKI/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;   # 1.22's default stops at TLSv1.2
        ssl_session_cache shared:SSL$v:1m;
        location / {
            proxy_pass http://app_v$v;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
CFG
    done
    echo "}"
} >"$WORK/nginx-b/nginx.conf"
{
    nginx_common "$WORK/nginx-a"
    echo "http {"
    nginx_http_common "$WORK/nginx-a"
    cat <<CFG
    # A, the "web sidecar": plain HTTP in, mTLS out, 90/10 weighted round robin.
    upstream billing_mtls {
        server 127.0.0.1:$NGX_B1 weight=90;
        server 127.0.0.1:$NGX_B2 weight=10;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_A;
        location / {
            proxy_pass https://billing_mtls;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_certificate $PKI/client.crt;
            proxy_ssl_certificate_key $PKI/client.key;
            proxy_ssl_trusted_certificate $PKI/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name billing.bench;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }
    }
}
CFG
} >"$WORK/nginx-a/nginx.conf"
start_nginx nginx-b
NGX_B_PID=$NGINX_PID
start_nginx nginx-a
NGX_A_PID=$NGINX_PID
wait_for 20 "a request through nginx" "$NGX_A_PID $NGX_B_PID" curl -fsS "http://127.0.0.1:$NGX_A/"
NGINX_PROXY_PIDS="$(nginx_pids "$NGX_A_PID") $(nginx_pids "$NGX_B_PID")"
# shellcheck disable=SC2206
DAEMONS+=($NGINX_PROXY_PIDS)

# --- HAProxy pair ---------------------------------------------------------------------
HA_COMMON="global
    nbthread $HAPROXY_THREADS
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s"
cat >"$WORK/haproxy-b.cfg" <<CFG
# B, the "billing-api sidecars": mTLS in, requires a client cert from the CA.
$HA_COMMON
frontend billing_v1_in
    bind 127.0.0.1:$HAP_B1 ssl crt $PKI/server.pem ca-file $PKI/ca.pem verify required
    default_backend app_v1
frontend billing_v2_in
    bind 127.0.0.1:$HAP_B2 ssl crt $PKI/server.pem ca-file $PKI/ca.pem verify required
    default_backend app_v2
backend app_v1
    server app 127.0.0.1:$BACK_V1
backend app_v2
    server app 127.0.0.1:$BACK_V2
CFG
cat >"$WORK/haproxy-a.cfg" <<CFG
# A, the "web sidecar": plain HTTP in, mTLS out, 90/10 weighted round robin per request.
$HA_COMMON
frontend billing_up
    bind 127.0.0.1:$HAP_A_PORT
    default_backend billing_mtls
backend billing_mtls
    balance roundrobin
    server v1 127.0.0.1:$HAP_B1 weight 90 ssl crt $PKI/client.pem ca-file $PKI/ca.pem verify required sni str(billing.bench) verifyhost billing.bench
    server v2 127.0.0.1:$HAP_B2 weight 10 ssl crt $PKI/client.pem ca-file $PKI/ca.pem verify required sni str(billing.bench) verifyhost billing.bench
CFG
start_haproxy_pair
wait_for 20 "a request through haproxy" "$HAP_A_PID $HAP_B_PID" curl -fsS "http://127.0.0.1:$HAP_A_PORT/"

# --- mesh ---------------------------------------------------------------------------
# Any failure here is recorded in MESH_FAIL and the mesh path is left out of the load
# runs; the peers still run and the table says why mesh has no numbers.
MESH_FAIL=""
mesh_fail() { log "MESH PATH: $*"; MESH_FAIL="${MESH_FAIL:+$MESH_FAIL; }$*"; }
MESH_A="" MESH_B1="" MESH_B2="" AGENT_PID=""
export CONSUL_HTTP_ADDR="127.0.0.1:$AGENT_HTTP"
both_sidecars_passing() {
    [[ "$(curl -fsS "http://$CONSUL_HTTP_ADDR/v1/health/connect/billing-api?passing" | jq length)" == 2 ]]
}
leader_known() { [[ "$(curl -fsS "http://$CONSUL_HTTP_ADDR/v1/status/leader")" == \"*:*\" ]]; }
spawn agent "$MESH" agent -dev -http-port "$AGENT_HTTP" -dns-port "$AGENT_DNS" -server-port=0 -serf-lan-port=0 \
    -server-port "$AGENT_SERVER" -serf-lan-port "$AGENT_SERF" \
    -bind 127.0.0.1 -client 127.0.0.1 -log-level warn
AGENT_PID=$SPAWNED
AGENT_OK=1
wait_for 30 "the mesh agent to elect itself" "$AGENT_PID" leader_known ||
    { mesh_fail "the agent did not start: $(tail -n1 "$WORK/agent.log")"; AGENT_OK=0; }

mkdir -p "$WORK/entries"
cat >"$WORK/entries/service-defaults.hcl" <<'HCL'
Kind     = "service-defaults"
Name     = "billing-api"
Protocol = "http"
HCL
cat >"$WORK/entries/service-resolver.hcl" <<'HCL'
Kind          = "service-resolver"
Name          = "billing-api"
DefaultSubset = "v1"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  v2 = { Filter = "Service.Meta.version == v2" }
}
HCL
splitter() { # splitter V2_PERCENT: a billing-api service-splitter, V2_PERCENT to v2, the rest to v1
    cat <<HCL
Kind = "service-splitter"
Name = "billing-api"
Splits = [
  { Weight = $1, ServiceSubset = "v2" },
  { Weight = $((100 - $1)), ServiceSubset = "v1" },
]
HCL
}
splitter 10 >"$WORK/entries/service-splitter.hcl"
splitter 50 >"$WORK/entries/service-splitter-50.hcl"

if ((AGENT_OK)); then
    for entry in service-defaults service-resolver service-splitter; do
        if ! out="$("$MESH" config write "$WORK/entries/$entry.hcl" 2>&1)"; then
            mesh_fail "\`mesh config write $entry.hcl\` failed: $(oneline "$out")"
            break
        fi
    done
    for v in 1 2; do
        back=BACK_V$v sc=SC_V$v
        body="{\"ID\": \"billing-v$v\", \"Name\": \"billing-api\", \"Address\": \"127.0.0.1\", \"Port\": ${!back},
               \"Meta\": {\"version\": \"v$v\"}, \"Connect\": {\"SidecarService\": {\"Port\": ${!sc}}}}"
        if ! out="$(curl -sS -X PUT --data "$body" -w ' HTTP %{http_code}' "http://$CONSUL_HTTP_ADDR/v1/agent/service/register" 2>&1)" ||
            [[ "$out" != *"HTTP 200" ]]; then
            mesh_fail "registering billing-v$v failed: $out"
        fi
    done
    spawn sidecar-v1 "$MESH" proxy -sidecar-for billing-v1 -bind-address 127.0.0.1 -log-level warn
    MESH_B1=$SPAWNED
    spawn sidecar-v2 "$MESH" proxy -sidecar-for billing-v2 -bind-address 127.0.0.1 -log-level warn
    MESH_B2=$SPAWNED
    spawn web "$MESH" proxy -service web -upstream "billing-api:$UP_WEB" -log-level warn
    MESH_A=$SPAWNED
    if ! wait_for 30 "the web proxy's billing-api listener" "$MESH_A" grep -q 'Upstream billing-api:' "$WORK/web.out"; then
        mesh_fail "the web proxy did not start: $(tail -n1 "$WORK/web.log")"
    # The sidecars become endpoints once their health checks pass (up to ~10 s); wait
    # for both, or the 10 % to v2 could meet a subset with no endpoint yet.
    elif ! wait_for 60 "both billing-api sidecars to pass their checks" "$MESH_B1 $MESH_B2" both_sidecars_passing; then
        mesh_fail "the billing-api sidecars did not both pass their health checks within 60 s: $(oneline "$(curl -sS "http://$CONSUL_HTTP_ADDR/v1/health/checks/billing-api-sidecar-proxy" 2>&1 | jq -c '[.[] | {ServiceID, Status, Output}]' 2>&1)")"
    elif ! wait_for 60 "a 200 through the mesh" "$MESH_A $MESH_B1 $MESH_B2" curl -fsS "http://127.0.0.1:$UP_WEB/"; then
        mesh_fail "no 200 through the web proxy within 60 s (last answer: $(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$UP_WEB/" 2>&1 | tr '\n' ' '))"
    fi
fi

# --- what each mTLS hop negotiates ---------------------------------------------------
TLS_NGX="$(tls_of "$NGX_B1" "$PKI/client.crt" "$PKI/client.key" "$PKI/ca.pem")"
TLS_HA="$(tls_of "$HAP_B1" "$PKI/client.crt" "$PKI/client.key" "$PKI/ca.pem")"
TLS_MESH="-"
if ((AGENT_OK)) && fetch_mesh_leaf web 2>/dev/null; then
    TLS_MESH="$(tls_of "$SC_V1" "$PKI/mesh-web.crt" "$PKI/mesh-web.key" "$PKI/mesh-roots.pem")"
fi
log "mTLS hop: nginx $TLS_NGX; haproxy $TLS_HA; mesh ${TLS_MESH:--}"

MESH_VERSION="$("$MESH" version 2>/dev/null | head -n1 || true)"
REV="$(git_rev)"
[[ -n "${MESH_BIN:-}" ]] && REV="$REV (MESH_BIN=$MESH_BIN)"
NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //')"
HAPROXY_VERSION="$(haproxy -v | awk 'NR == 1 { print $1, $2, $3 }')"
WRK_VERSION="$({ wrk -v 2>&1 || true; } | awk 'NR == 1 { print $1, $2 }')"   # wrk -v exits 1
log "mesh $REV ($MESH_VERSION), $NGINX_VERSION, $HAPROXY_VERSION, $WRK_VERSION"
log "paths: direct 127.0.0.1:$BACK_V1, nginx 127.0.0.1:$NGX_A, haproxy 127.0.0.1:$HAP_A_PORT, mesh 127.0.0.1:$UP_WEB; temp dir $WORK"

# --- sampler: is another build running? ---------------------------------------------
start_sampler

# --- measurements -------------------------------------------------------------------
results_init
url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$BACK_V1/" ;;
        nginx) echo "http://127.0.0.1:$NGX_A/" ;;
        haproxy) echo "http://127.0.0.1:$HAP_A_PORT/" ;;
        mesh) echo "http://127.0.0.1:$UP_WEB/" ;;
    esac
}
proxy_pids_of() {
    case $1 in
        direct) echo "" ;;
        nginx) echo "$NGINX_PROXY_PIDS" ;;
        haproxy) echo "$HAP_A_PID $HAP_B_PID" ;;
        mesh) echo "$MESH_A $MESH_B1 $MESH_B2" ;;
    esac
}

# split_sample PATH [TAG]: SAMPLES sequential requests on one keep-alive connection (curl
# URL globbing), counting which backend answered (X-Backend). Prints "v2_percent other".
split_sample() {
    local path=$1 tag=${2:-share} counts v1 v2 other pct
    counts="$(curl -sS -o /dev/null -w '%{http_code} %header{x-backend}\n' "$(url_of "$path")s[1-$SAMPLES]" 2>"$WORK/sample-$path.err" |
        awk '$1 == 200 && $2 == "v1" { a++ } $1 == 200 && $2 == "v2" { b++ } !($1 == 200 && ($2 == "v1" || $2 == "v2")) { o++ }
             END { printf "%d %d %d\n", a, b, o }')"
    read -r v1 v2 other <<<"$counts"
    other=$((SAMPLES - v1 - v2))   # includes requests curl never completed
    pct="$(awk -v b="$v2" -v n="$SAMPLES" 'BEGIN { printf "%.1f", 100 * b / n }')"
    log "$path: $SAMPLES sampled requests: v1 $v1, v2 $v2, not 200 from a backend $other -> v2 share $pct%"
    rec "$path" "$tag" "$pct"
    echo "$pct $other"
}
in_band() { awk -v p="$1" -v lo="$SPLIT_MIN" -v hi="$SPLIT_MAX" 'BEGIN { exit !(p >= lo && p <= hi) }'; }

if ((SAMPLES > 0)); then
    for path in nginx haproxy; do
        read -r pct other < <(split_sample "$path")
        if ! in_band "$pct" || ((other > 0)); then
            log "$path does not split 90/10 (v2 share $pct%, $other bad answers): its config is wrong"
            exit 1
        fi
    done
    if [[ -n "$MESH_A" ]] && curl -fsS -o /dev/null "$(url_of mesh)"; then
        read -r pct other < <(split_sample mesh)
        if ! in_band "$pct" || ((other > 0)); then
            mesh_fail "mesh does not split 90/10: v2 share $pct% of $SAMPLES sampled requests, $other not a 200 from a backend (want $SPLIT_MIN..$SPLIT_MAX%)"
        fi
    fi
fi

# parse_wrk: "rps requests p50_us p99_us non2xx socket_errors" from wrk --latency output
parse_wrk() {
    awk 'function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000
                          if (v ~ /m$/) return v * 60e6; if (v ~ /s$/) return v * 1e6; return -1 }
         /^Requests\/sec:/ { rps = $2 }
         / requests in / { n = $1 }
         /^ +50% / { p50 = us($2) }
         /^ +99% / { p99 = us($2) }
         /Non-2xx or 3xx responses:/ { bad = $NF }
         /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
         END { printf "%s %s %.0f %.0f %d %d\n", rps, n, p50, p99, bad, err }'
}
wrk_case() { # wrk_case PATH ROUND
    local path=$1 round=$2 url pids b0 o0 t0 t1 out f rps n p50 p99 bad err cpu
    url="$(url_of "$path")" pids="$(proxy_pids_of "$path")"
    wrk -t "$THREADS" -c "$CONNS" -d "$WARMUP" "$url" >/dev/null
    b0=$(busy_ticks) o0=$(own_ticks)
    # shellcheck disable=SC2086
    t0=$(ticks_of $pids)
    out="$(wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --latency "$url")"
    # shellcheck disable=SC2086
    t1=$(ticks_of $pids)
    f=$(foreign "$b0" "$o0")
    echo "$out" >"$WORK/wrk-$path-$round.txt"
    read -r rps n p50 p99 bad err < <(parse_wrk <<<"$out")
    [[ -n "$rps" && -n "$n" ]] || { log "wrk over $path gave no result"; echo "$out" >&2; exit 1; }
    cpu="-"
    if [[ -n "$pids" ]]; then
        # CPU of the path's proxies per 1000 requests, over the measured run only.
        cpu="$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", (t / hz * 1000) / (n / 1000) }')"
        rec "$path" cpu "$cpu"
    fi
    log "round $round $path: $rps req/s, p50 ${p50} µs, p99 ${p99} µs, $n requests, non-2xx $bad, socket errors $err, proxies' CPU ${cpu} ms/1k req  (other processes: ${f} CPU-s; $(noise))"
    rec "$path" rps "$rps"
    rec "$path" p50 "$p50"
    rec "$path" p99 "$p99"
    rec "$path" errors $((bad + err))
    rec "$path" foreign "$f"
}

PATHS="direct nginx haproxy"
[[ -z "$MESH_FAIL" ]] && PATHS="$PATHS mesh"
MEASURE_T0=$(date +%s) MEASURE_B0=$(busy_ticks) MEASURE_O0=$(own_ticks)
for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order="$PATHS"; else order="$(tr ' ' '\n' <<<"$PATHS" | tac | tr '\n' ' ')"; fi
    for path in $order; do wrk_case "$path" "$round"; done
done
MEASURE_T1=$(date +%s)
FOREIGN_ALL="$(foreign "$MEASURE_B0" "$MEASURE_O0")"
BUSY="$(sampler_summary "$MEASURE_T0" "$MEASURE_T1" "$FOREIGN_ALL")"
log "during the load runs: $BUSY"

# --- config propagation ---------------------------------------------------------------
# PROXIES client proxies (-service webI -upstream billing-api:PORT) on the same agent,
# each logging to its own file. Once all run and the logs are quiet, write the 50/50
# splitter and find, in each log, the first "proxy config applied" line stamped after
# the instant the write started.
PROP_FAIL="" PROP_NOTE="" PROP_SUMMARY="" PROP_SHARE=""
applied_count() { cat "$WORK"/prop/*.log 2>/dev/null | grep -c -e 'proxy config applied' -e 'proxy started' || true; }
all_started() { (($(cat "$WORK"/prop/*.out 2>/dev/null | grep -c 'Upstream billing-api:') >= PROXIES)); }
quiet_for() { # quiet_for SECS: no proxy logged a config for SECS seconds (polled)
    local last now since=$SECONDS
    last=$(applied_count)
    while ((SECONDS - since < $1)); do
        sleep 0.2
        now=$(applied_count)
        [[ "$now" == "$last" ]] || { last=$now; since=$SECONDS; }
    done
}
# time of day (s) of a UTC RFC3339 stamp; the differences below wrap at midnight
tod() { awk -v t="$1" 'BEGIN { split(substr(t, 12), a, ":"); printf "%.6f\n", a[1] * 3600 + a[2] * 60 + a[3] }'; }
# prop_delays T0: per proxy log, ms from T0 to its first "proxy config applied" after T0
# ("none" if there is none); one line per proxy: "name delay_ms applied_after_t0".
prop_delays() {
    local t0 f
    t0="$(tod "$1")"
    for f in "$WORK"/prop/*.log; do
        sed 's/\x1b\[[0-9;]*m//g' "$f" | awk -v t0="$t0" -v name="$(basename "$f" .log)" '
            /proxy config applied/ {
                split(substr($1, 12), a, ":"); t = a[1] * 3600 + a[2] * 60 + a[3]
                d = t - t0; if (d < -43200) d += 86400
                if (d > 0) { n++; if (first == "") first = d * 1000 }
            }
            END { printf "%s %s %d\n", name, (first == "" ? "none" : sprintf("%.1f", first)), n }'
    done
}
# "FILE:N" per proxy log: how many configs it applied after its first (one grep, cheap
# enough to poll while the proxies work).
applied_counts() { grep -c 'proxy config applied' "$WORK"/prop/*.log || true; }
applied_all() { # every proxy applied a config since prop-before.txt was taken
    applied_counts | awk -F: 'NR == FNR { base[$1] = $2; next } $2 <= base[$1] { exit 1 }' "$WORK/prop-before.txt" -
}
if ((PROXIES > 0)) && ((AGENT_OK)) && kill -0 "$AGENT_PID" 2>/dev/null; then
    mkdir -p "$WORK/prop"
    mapfile -t PROP_PORTS < <(pick_ports "$PROXIES")
    log "propagation: starting $PROXIES proxies"
    PROP_PIDS=()
    for i in $(seq 1 "$PROXIES"); do
        spawn "prop/web$i" "$MESH" proxy -service "web$i" -upstream "billing-api:${PROP_PORTS[$((i - 1))]}" -log-level info
        PROP_PIDS+=("$SPAWNED")
    done
    if ! wait_for $((60 + PROXIES)) "$PROXIES proxies to start" "${PROP_PIDS[*]}" all_started; then
        PROP_FAIL="only $(cat "$WORK"/prop/*.out 2>/dev/null | grep -c 'Upstream billing-api:') of $PROXIES proxies started"
    else
        log "propagation: all $PROXIES proxies run; waiting for 2 s without config pushes"
        quiet_for 2
        applied_counts >"$WORK/prop-before.txt"
        PB0=$(busy_ticks) PO0=$(own_ticks)
        T0="$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
        WRITE_START=$(date +%s%N)
        ENTRY=service-splitter-50
        if out="$("$MESH" config write "$WORK/entries/$ENTRY.hcl" 2>&1)"; then
            PROP_NOTE="\`mesh config write\` of the 50/50 service-splitter"
        else
            PROP_FAIL="\`mesh config write $ENTRY.hcl\` failed: $(oneline "$out")"
            # Still exercise the push path (and this parser) with an entry every proxy's
            # config depends on today: a wildcard service-intentions entry (allow all,
            # which changes no verdict under the default allow policy).
            cat >"$WORK/entries/intentions-fallback.hcl" <<'HCL'
Kind = "service-intentions"
Name = "*"
Sources = [ { Name = "*", Action = "allow" } ]
HCL
            ENTRY=intentions-fallback
            T0="$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
            WRITE_START=$(date +%s%N)
            if out="$("$MESH" config write "$WORK/entries/$ENTRY.hcl" 2>&1)"; then
                PROP_NOTE="FALLBACK: \`mesh config write\` of a service-intentions \"*\" entry, NOT the splitter — this checks the push path and the parser; it is not the issue's number"
            else
                PROP_FAIL="$PROP_FAIL; the fallback intentions write failed too: $(oneline "$out")"
                ENTRY=""
            fi
        fi
        WRITE_MS=$((($(date +%s%N) - WRITE_START) / 1000000))
        if [[ -n "$ENTRY" ]]; then
            log "propagation: wrote $ENTRY at $T0 (the CLI took $WRITE_MS ms); waiting for every proxy to apply it"
            wait_for 60 "all $PROXIES proxies to apply the change" "" applied_all || true
            prop_delays "$T0" >"$WORK/prop-delays.txt"
            PROP_FOREIGN="$(foreign "$PB0" "$PO0")"
            PROP_SUMMARY="$(awk '$2 != "none" { v[++n] = $2; if ($3 > 1) multi++ } $2 == "none" { miss++ }
                END { if (!n) { print "no proxy applied it"; exit }
                      # sort (insertion; n is small)
                      for (i = 2; i <= n; i++) { x = v[i]; j = i - 1; while (j > 0 && v[j] + 0 > x + 0) { v[j + 1] = v[j]; j-- } v[j + 1] = x }
                      p50 = v[int((n + 1) / 2)]; r = int(0.99 * n); if (r < 0.99 * n) r++; p99 = v[r]
                      printf "applied by %d of %d proxies: p50 %.1f ms, p99 %.1f ms, max %.1f ms, min %.1f ms", n, n + miss, p50, p99, v[n], v[1]
                      if (miss) printf "; %d never applied it within 60 s", miss
                      if (multi) printf "; %d applied more than one version after the write", multi }' "$WORK/prop-delays.txt")"
            PROP_SUMMARY="$PROP_SUMMARY (the write itself: $WRITE_MS ms; other processes: $PROP_FOREIGN CPU-s)"
            log "propagation: $PROP_SUMMARY"
            grep -q ' none ' "$WORK/prop-delays.txt" && PROP_FAIL="${PROP_FAIL:+$PROP_FAIL; }not every proxy applied the change"
            # With the real splitter, check the change is the split: ~50% from v2 now.
            if [[ $ENTRY == service-splitter-50 && -z "$MESH_FAIL" ]] && ((SAMPLES > 0)); then
                read -r PROP_SHARE _ < <(split_sample mesh share50)
            fi
        fi
    fi
    # Stop the propagation proxies now (the trap would too).
    for pid in "${PROP_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
elif ((PROXIES > 0)); then
    PROP_FAIL="the mesh agent is not running"
fi
[[ -n "$PROP_FAIL" ]] && log "PROPAGATION: $PROP_FAIL"

uptime_note after

# --- table ----------------------------------------------------------------------------
FMT='| %-*s | %9s | %9s | %9s | %9s | %11s | %12s | %11s |\n'
width() { # printf pads bytes, not characters: widen the label column by its extra bytes
    local chars=${#1} bytes
    bytes=$(LC_ALL=C; echo ${#1})
    echo $((40 + bytes - chars))
}
row() { # row LABEL METRIC [noratio]
    local d n h m w
    w="$(width "$1")"
    d="$(med direct "$2")" n="$(med nginx "$2")" h="$(med haproxy "$2")" m="$(med mesh "$2")"
    [[ -n "$MESH_FAIL" && "$m" == "-" ]] && m="failed"
    if [[ "${3:-}" == noratio ]]; then
        # shellcheck disable=SC2059
        printf "$FMT" "$w" "$1" "$d" "$n" "$h" "$m" - - -
    else
        # shellcheck disable=SC2059
        printf "$FMT" "$w" "$1" "$d" "$n" "$h" "$m" "$(ratio "$m" "$n")" "$(ratio "$m" "$h")" "$(ratio "$m" "$d")"
    fi
}
{
    echo "## L7 HTTP/1.1 keep-alive, 90/10 split: mesh vs nginx 1.22 vs HAProxy 2.6 (mTLS) vs direct — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "mesh $REV; $NGINX_VERSION; $HAPROXY_VERSION; $WRK_VERSION; $(cpu_desc)"
    echo "mTLS hop: nginx $TLS_NGX; haproxy $TLS_HA; mesh ${TLS_MESH:--}"
    echo "wrk -t $THREADS -c $CONNS -d ${DURATION}s --latency (after ${WARMUP}s of warm-up) per path per round; median of $ROUNDS round(s), path order alternating; backends: nginx return 200 (3-byte body)"
    echo
    # shellcheck disable=SC2059
    printf "$FMT" 40 "metric (median over rounds)" direct nginx haproxy mesh mesh/nginx mesh/haproxy mesh/direct
    echo "|------------------------------------------|----------:|----------:|----------:|----------:|------------:|-------------:|------------:|"
    row "requests/s" rps
    row "latency p50 (µs)" p50
    row "latency p99 (µs)" p99
    row "CPU of the path's proxies, ms/1k req" cpu
    row "v2 share of $SAMPLES sampled requests (%)" share noratio
    row "errors (non-2xx + socket errors)" errors noratio
    row "other processes' CPU-s per run" foreign noratio
    echo
    echo "requests/s ratios < 1 and latency/CPU ratios > 1 mean mesh is worse. Direct goes to backend v1 only."
    echo "Proxies counted for CPU: nginx A + B (masters and workers), haproxy A + B, mesh web + both billing-api sidecars."
    if [[ -n "$MESH_FAIL" ]]; then
        echo
        echo "**mesh path FAILED, not measured:** $MESH_FAIL"
        echo "(logs: agent.log, web.log, sidecar-v1.log, sidecar-v2.log in the kept temp dir)"
    fi
    echo
    echo "### Config propagation ($PROXIES proxies; mesh only, no peer)"
    echo
    if [[ -n "$PROP_SUMMARY" ]]; then
        echo "change: $PROP_NOTE"
        echo "from the start of \`mesh config write\` to each proxy's first \`proxy config applied\` log line after it: $PROP_SUMMARY"
        [[ -n "$PROP_SHARE" ]] && echo "v2 share through the web proxy after the 50/50 write: $PROP_SHARE% of $SAMPLES sampled requests"
    fi
    [[ -n "$PROP_FAIL" ]] && echo "**propagation:** $PROP_FAIL"
    ((PROXIES > 0)) || echo "skipped (PROXIES=0)"
    echo "(nginx and HAProxy have no equivalent of a config pushed to running proxies; there is no peer for this part)"
    echo
    table_footer "during the load runs" "$BUSY"
} | tee "$WORK/table.md"

if [[ -n "$MESH_FAIL" || -n "$PROP_FAIL" ]]; then
    log "the mesh part could not be measured (see above); the peers' rows are real"
    exit 2
fi
