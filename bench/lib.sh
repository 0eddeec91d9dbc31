# shellcheck shell=bash
# Shell code shared by the benchmark scripts (bench/run.sh, bench/proxy/run.sh,
# bench/l7/run.sh, bench/cluster/run.sh and tls.sh). Sourced, never run: each script
# sets `set -euo pipefail`, sources this file, then sets LOG_PREFIX (and KEPT_WHAT) and
# calls what it needs.
#
# Globals this file defines: ROOT (the repository), PIDS (processes the exit trap
# stops), DAEMONS (our long-running processes, left out of the "other processes" CPU),
# HZ, START_SECONDS; set by functions: WORK (make_workdir), MESH (build_mesh), LOADGEN
# (build_loadgen), SPAWNED (spawn), PKI (make_pki), HAP_A_PID/HAP_B_PID
# (start_haproxy_pair), RES (results_init), M_* and FIRST (add_mesh_cluster, start_mesh),
# E_* (etcd_ports, start_etcd).
# Each script reads some of these; checked alone, this file assigns them unused.
# shellcheck disable=SC2034

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG_PREFIX=bench                # the tag on each log line: set by the script
KEPT_WHAT="logs and configs"    # what the exit trap says it kept in WORK
PIDS=()
DAEMONS=()
HZ="$(getconf CLK_TCK)"
START_SECONDS=$SECONDS

# log MESSAGE...: one line on stderr, tagged with LOG_PREFIX.
log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }

# --- install and build --------------------------------------------------------------

# install_missing COMMAND[:PACKAGE]...: unless SKIP_INSTALL=1, installs from Debian
# (apt-get, quietly, without recommends; through sudo when not root) the PACKAGE of
# every COMMAND not on PATH. PACKAGE defaults to COMMAND; a COMMAND may be named twice
# to bring two packages.
install_missing() {
    [[ "${SKIP_INSTALL:-0}" == 1 ]] && return 0
    local spec need=() sudo=()
    for spec in "$@"; do
        command -v "${spec%%:*}" >/dev/null 2>&1 || need+=("${spec#*:}")
    done
    ((${#need[@]})) || return 0
    log "installing ${need[*]} from Debian"
    [[ "$(id -u)" != 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# require_tools COMMAND...: exits 1 naming the first COMMAND not on PATH.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { log "$tool not found"; exit 1; }
    done
}

# build_mesh: unless SKIP_BUILD=1 or MESH_BIN is set, builds the mesh binary (release)
# in ROOT. Sets MESH to the binary to bench (MESH_BIN or the release build, as an
# absolute path); exits 1 if it is not there.
build_mesh() {
    if [[ "${SKIP_BUILD:-0}" != 1 && -z "${MESH_BIN:-}" ]]; then
        log "building mesh (release); waits for the cargo lock if another build runs"
        (cd "$ROOT" && cargo build --release --quiet --bin mesh)
    fi
    MESH="${MESH_BIN:-$ROOT/target/release/mesh}"
    [[ -x "$MESH" ]] || { log "missing $MESH"; exit 1; }
    MESH="$(realpath "$MESH")" # absolute: scripts run it from other directories
}

# build_loadgen DIR BIN: unless SKIP_BUILD=1, builds the load generator in DIR (a cargo
# workspace of its own). Sets LOADGEN to DIR/target/release/BIN; exits 1 if it is not
# there.
build_loadgen() {
    if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
        log "building the load generator (${1#"$ROOT"/}, its own workspace)"
        (cd "$1" && cargo build --release --quiet)
    fi
    LOADGEN="$1/target/release/$2"
    [[ -x "$LOADGEN" ]] || { log "missing $LOADGEN"; exit 1; }
}

# --- processes ------------------------------------------------------------------------

# make_workdir NAME: creates the temp dir WORK (/tmp/NAME.XXXXXX) and sets the exit trap
# (cleanup) that stops PIDS and removes WORK.
make_workdir() {
    WORK="$(mktemp -d "/tmp/$1.XXXXXX")"
    trap cleanup EXIT INT TERM
}

# stop_pids PID...: SIGTERM to each, up to 5 s for each to go, then SIGKILL; reaps all.
stop_pids() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# cleanup: the EXIT/INT/TERM trap. Stops every process in PIDS, then removes WORK, or
# keeps it (and says so) with KEEP_DATA=1 or on a non-zero exit status. On a non-zero
# status it first calls the script's on_failure STATUS, if the script defines one (to
# show logs), and exits with the script's status.
cleanup() {
    local rc=$?
    stop_pids "${PIDS[@]}"
    if [[ "${KEEP_DATA:-0}" == 1 || $rc != 0 ]]; then
        if [[ $rc != 0 ]] && declare -F on_failure >/dev/null; then on_failure "$rc" || true; fi
        log "$KEPT_WHAT kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}

# tail_logs FILE...: the last 15 lines of each non-empty FILE on stderr, under its name.
tail_logs() {
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then echo "--- $f" >&2; tail -n 15 "$f" >&2; fi
    done
}

# spawn NAME COMMAND...: runs COMMAND in the background, stdout to $WORK/NAME.out and
# stderr to $WORK/NAME.log; adds it to PIDS and DAEMONS and sets SPAWNED to its PID.
spawn() {
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    SPAWNED=$!
    PIDS+=("$SPAWNED")
    DAEMONS+=("$SPAWNED")
}

# wait_for SECONDS DESCRIPTION "PIDS THAT MUST STAY UP" COMMAND...: polls COMMAND (its
# output discarded) every 0.2 s until it succeeds; fails, saying why, when SECONDS have
# passed or one of the PIDS has exited.
wait_for() {
    local secs=$1 what=$2 pids=$3 deadline pid
    shift 3
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then log "timed out after ${secs}s waiting for $what"; return 1; fi
        for pid in $pids; do
            kill -0 "$pid" 2>/dev/null || { log "process $pid exited while waiting for $what"; return 1; }
        done
        sleep 0.2
    done
}

# pick_ports N: prints N free ports, one a line. They lie outside the ephemeral range,
# so no outgoing connection (the load generators open many) can take one between the
# pick and the bind; each is checked against every TCP/UDP socket (ss) and against the
# ports this run already handed out ($WORK/ports.taken).
pick_ports() {
    local eph_lo eph_hi lo hi
    read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range
    if ((eph_lo > 12000)); then lo=10000 hi=$((eph_lo - 1)); else lo=$((eph_hi + 1)) hi=65535; fi
    touch "$WORK/ports.taken"
    { ss -Htuan | awk '{ n = split($5, a, ":"); print a[n] }'; cat "$WORK/ports.taken"; } |
        awk -v n="$1" -v lo="$lo" -v hi="$hi" -v seed="$RANDOM$RANDOM" '
            BEGIN { srand(seed) } { used[$1] = 1 }
            END { while (c < n) { p = lo + int(rand() * (hi - lo + 1)); if (!(p in used)) { used[p] = 1; print p; c++ } } }' |
        tee -a "$WORK/ports.taken"
}

# --- CPU and noise ----------------------------------------------------------------------

# cpu_ticks PID: user + system clock ticks PID has used (0 once it is gone).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# ticks_of PID...: the sum of cpu_ticks over the PIDs.
ticks_of() { local t=0 p; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }
# busy_ticks: the machine's busy clock ticks so far, all CPUs (/proc/stat).
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# own_ticks: ticks of this script, of everything it ran and reaped (its cutime), and of
# the DAEMONS still running.
own_ticks() {
    local t p
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$$/stat")
    for p in "${DAEMONS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
# foreign BUSY0 OWN0: CPU-seconds used by processes outside this benchmark since
# busy_ticks and own_ticks gave BUSY0 and OWN0.
foreign() {
    awk -v b=$(($(busy_ticks) - $1)) -v o=$(($(own_ticks) - $2)) -v hz="$HZ" \
        'BEGIN { f = (b - o) / hz; if (f < 0) f = 0; printf "%.1f", f }'
}
# Other builds on this small machine skew results: rustc_count says how many rustc run.
rustc_count() { pgrep -c -x rustc 2>/dev/null || true; }
# noise: the load average and the rustc count, for log lines.
noise() { echo "load avg $(cut -d' ' -f1-3 /proc/loadavg), rustc processes: $(rustc_count)"; }

# start_sampler: once a second (for at most an hour) appends "epoch rustc_count load1"
# to $WORK/sampler.txt, to tell afterwards whether another build ran (sampler_summary).
start_sampler() {
    (
        for _ in $(seq 1 3600); do
            echo "$(date +%s) $(rustc_count) $(cut -d' ' -f1 /proc/loadavg)"
            sleep 1
        done
    ) >"$WORK/sampler.txt" 2>/dev/null &
    PIDS+=("$!")
    DAEMONS+=("$!")
}
# sampler_summary T0 T1 FOREIGN: one sentence on the samples from epoch T0 to T1, with
# FOREIGN (from foreign) as the CPU-seconds other processes used meanwhile.
sampler_summary() {
    awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b { n++; if ($2 > 0) busy++; if ($3 > mx) mx = $3 }
        END { printf "other processes used %s CPU-s of the %d available; rustc ran in %d of %d sampled seconds; max load1 %.2f (includes our own processes)", f, n * c, busy, n, mx }' \
        f="$3" c="$(nproc)" "$WORK/sampler.txt"
}
# cpu_desc: "N CPUs (model name)".
cpu_desc() { echo "$(nproc) CPUs ($(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo))"; }

# git_rev: ROOT's short commit, with "+dirty" when tracked files differ from it.
git_rev() {
    local rev
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then rev="$rev+dirty"; fi
    echo "$rev"
}

# mesh_rev: what to call the mesh binary: MESH_REV if set (a binary built elsewhere, see
# README), else git_rev.
mesh_rev() { echo "${MESH_REV:-$(git_rev)}"; }

# --- mTLS peers -------------------------------------------------------------------------

# make_pki DNS_NAME SERVICE: in PKI=$WORK/pki, a private CA (ca.pem) and two ECDSA P-256
# leaves (the same key type as mesh's leaves) signed by it, each as NAME.crt, NAME.key
# and NAME.pem (both): "server" for DNS_NAME and the SPIFFE ID of SERVICE, "client" for
# the SPIFFE ID of web.
make_pki() {
    PKI="$WORK/pki"
    mkdir -p "$PKI"
    (
        cd "$PKI" || exit 1
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
        openssl req -x509 -new -key ca.key -sha256 -days 2 -subj /CN=bench-ca -out ca.pem 2>/dev/null
        local who san
        for who in server client; do
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$who.key" 2>/dev/null
            openssl req -new -key "$who.key" -subj "/CN=$who" -out "$who.csr" 2>/dev/null
            if [[ $who == server ]]; then
                san="DNS:$1,URI:spiffe://bench.consul/ns/default/dc/dc1/svc/$2"
            else
                san="URI:spiffe://bench.consul/ns/default/dc/dc1/svc/web"
            fi
            printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$who.ext"
            openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
                -extfile "$who.ext" -out "$who.crt" 2>/dev/null
            cat "$who.crt" "$who.key" >"$who.pem"
        done
    )
}

# start_haproxy_pair: checks $WORK/haproxy-a.cfg and haproxy-b.cfg (exits 1 if one is
# invalid), then runs B (A's upstream) and A in the foreground (-db) with spawn; sets
# HAP_A_PID and HAP_B_PID.
start_haproxy_pair() {
    local side
    for side in a b; do
        haproxy -c -q -f "$WORK/haproxy-$side.cfg" || { log "haproxy-$side.cfg is invalid"; exit 1; }
    done
    spawn haproxy-b haproxy -db -f "$WORK/haproxy-b.cfg"
    HAP_B_PID=$SPAWNED
    spawn haproxy-a haproxy -db -f "$WORK/haproxy-a.cfg"
    HAP_A_PID=$SPAWNED
}

# fetch_mesh_leaf SERVICE: the leaf certificate of SERVICE and the CA roots from the mesh
# agent at CONSUL_HTTP_ADDR, as $PKI/mesh-SERVICE.crt, $PKI/mesh-SERVICE.key and
# $PKI/mesh-roots.pem. Fails if the agent gives none.
fetch_mesh_leaf() {
    curl -fsS "http://$CONSUL_HTTP_ADDR/v1/agent/connect/ca/leaf/$1" >"$WORK/$1-leaf.json" || return 1
    jq -r .CertPEM "$WORK/$1-leaf.json" >"$PKI/mesh-$1.crt" || return 1
    jq -r .PrivateKeyPEM "$WORK/$1-leaf.json" >"$PKI/mesh-$1.key" || return 1
    curl -fsS "http://$CONSUL_HTTP_ADDR/v1/agent/connect/ca/roots" | jq -r '.Roots[].RootCert' >"$PKI/mesh-roots.pem"
}

# tls_of PORT CERT KEY CA [sig]: what a TLS handshake with 127.0.0.1:PORT, presenting
# CERT/KEY and trusting CA, negotiates: "protocol ciphersuite", and with "sig" the
# peer's signature type after them in parentheses.
tls_of() {
    openssl s_client -connect "127.0.0.1:$1" -cert "$2" -key "$3" -CAfile "$4" -brief </dev/null 2>&1 |
        awk -F': *' -v sig="${5:-}" '/^Protocol version/{p=$2} /^Ciphersuite/{c=$2} /^Peer signature type/{s=$2}
            END{ if (sig) print p" "c" ("s")"; else print p" "c }'
}

# --- results ----------------------------------------------------------------------------

# results_init: an empty RES=$WORK/results.tsv, "path <TAB> metric <TAB> value", one row
# per round (rec writes it, med reads it).
results_init() { RES="$WORK/results.tsv"; : >"$RES"; }
# rec PATH METRIC VALUE: one row of RES.
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }
# med PATH METRIC: the median over rounds ("-" if none): whole for "errors", one decimal
# for "share*", otherwise 3 significant-ish digits.
med() {
    awk -F'\t' -v p="$1" -v m="$2" '$1 == p && $2 == m { print $3 }' "$RES" | sort -g |
        awk -v metric="$2" '{ v[++n] = $1 } END { if (!n) { print "-"; exit }
              m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
              if (metric == "errors") printf "%d\n", m; else if (metric ~ /^share/) printf "%.1f\n", m
              else if (m >= 100) printf "%.0f\n", m; else if (m >= 10) printf "%.1f\n", m; else printf "%.2f\n", m }'
}
# ratio A B: A / B to 2 decimals, "-" unless both are numbers and B is not 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b == 0) print "-"; else printf "%.2f", a / b }'; }

# uptime_note WHEN: logs `uptime` as "uptime WHEN: ..." and keeps it in UPTIME_BEFORE or
# UPTIME_AFTER (WHEN is before or after) for the table.
uptime_note() {
    local up
    up="$(uptime)"
    log "uptime $1: $up"
    if [[ $1 == before ]]; then UPTIME_BEFORE="$up"; else UPTIME_AFTER="$up"; fi
}
# table_footer LABEL BUSY: the table's closing lines: uptime before and after, "LABEL:
# BUSY" (a sampler_summary) and the wall time since the script started.
table_footer() {
    echo "uptime before: $UPTIME_BEFORE"
    echo "uptime after:  $UPTIME_AFTER"
    echo "$1: $2"
    echo "total wall time: $((SECONDS - START_SECONDS)) s"
}

# --- three-server clusters (bench/cluster/) ---------------------------------------------

# Mesh servers are numbered from 0; servers 3k, 3k+1 and 3k+2 form cluster k (each joins
# the next through gossip). Per server: M_HTTP (its API port: HTTPS when M_TLS names a
# config), M_DNS, M_RPC, M_SERF, M_PID, and M_TLS (a -config-file with a `tls` block, or
# empty for plain HTTP and RPC). CURL_TLS: curl's flags for https:// members (--cacert,
# --cert, --key); ignored for http:// ones. FIRST: set by add_mesh_cluster.
M_HTTP=() M_DNS=() M_RPC=() M_SERF=() M_PID=() M_TLS=()
CURL_TLS=()

# add_mesh_cluster [TLS_PREFIX]: picks the ports of three more servers and sets FIRST to
# the first one's number; with TLS_PREFIX, server I is started with
# -config-file=TLS_PREFIX$I.json and serves HTTPS (no plain HTTP) on its API port.
add_mesh_cluster() {
    local p i
    FIRST=${#M_HTTP[@]}
    mapfile -t p < <(pick_ports 12)
    for i in 0 1 2; do
        M_HTTP+=("${p[i]}") M_DNS+=("${p[i + 3]}") M_RPC+=("${p[i + 6]}") M_SERF+=("${p[i + 9]}")
        M_PID+=(0) M_TLS+=("${1:+$1$((FIRST + i)).json}")
    done
}
# start_mesh I: starts server I (-bootstrap-expect=3, its own data dir, kept across
# restarts) and sets M_PID[I].
start_mesh() {
    local i=$1 first=$(($1 - $1 % 3)) api
    if [[ -n "${M_TLS[$i]}" ]]; then
        api=(-https-port="${M_HTTP[$i]}" -http-port=-1 -config-file="${M_TLS[$i]}")
    else
        api=(-http-port="${M_HTTP[$i]}")
    fi
    mkdir -p "$WORK/mesh$i"
    spawn "mesh$i" "$MESH" agent -server -bootstrap-expect=3 -node="m$i" \
        -data-dir="$WORK/mesh$i" -bind=127.0.0.1 "${api[@]}" \
        -dns-port="${M_DNS[$i]}" -server-port="${M_RPC[$i]}" -serf-lan-port="${M_SERF[$i]}" \
        -retry-join="127.0.0.1:${M_SERF[$((first + (i - first + 1) % 3))]}" -retry-interval=200ms
    M_PID[$i]=$SPAWNED
}
mesh_url() { if [[ -n "${M_TLS[$1]}" ]]; then echo "https://127.0.0.1:${M_HTTP[$1]}"; else echo "http://127.0.0.1:${M_HTTP[$1]}"; fi; }
# mesh_urls FIRST: the API URLs of servers FIRST..FIRST+2, comma-separated.
mesh_urls() { echo "$(mesh_url "$1"),$(mesh_url $(($1 + 1))),$(mesh_url $(($1 + 2)))"; }
mesh_leader() { curl "${CURL_TLS[@]}" -fsS --max-time 2 "$(mesh_url "$1")/v1/status/leader" | tr -d '"'; }
# mesh_healthy [FIRST]: every server of cluster FIRST (default 0) names one leader and
# autopilot reports all healthy.
mesh_healthy() {
    local f=${1:-0} l0
    l0="$(mesh_leader "$f")" && [[ -n "$l0" ]] &&
        curl "${CURL_TLS[@]}" -fsS --max-time 2 "$(mesh_url "$f")/v1/operator/autopilot/health" | grep -q '"Healthy":true' &&
        [[ "$(mesh_leader $((f + 1)))" == "$l0" && "$(mesh_leader $((f + 2)))" == "$l0" ]]
}
# mesh_pids FIRST: the PIDs of servers FIRST..FIRST+2, space-separated.
mesh_pids() { echo "${M_PID[$1]} ${M_PID[$(($1 + 1))]} ${M_PID[$(($1 + 2))]}"; }

# One three-member etcd cluster (static --initial-cluster). E_CLIENT, E_PEER, E_PID per
# member. ETCD_PKI: unset, plain http; set, a directory of `mesh tls` certificates
# (consul-agent-ca.pem, dc1-server-consul-I.pem and -key.pem for member I) and etcd runs
# with client and peer TLS, both requiring a certificate from that CA, https:// everywhere.
E_CLIENT=() E_PEER=() E_PID=(0 0 0)
# etcd_ports: picks the six ports.
etcd_ports() {
    local q
    mapfile -t q < <(pick_ports 6)
    E_CLIENT=("${q[0]}" "${q[1]}" "${q[2]}") E_PEER=("${q[3]}" "${q[4]}" "${q[5]}")
}
etcd_scheme() { if [[ -n "${ETCD_PKI:-}" ]]; then echo https; else echo http; fi; }
# start_etcd I STATE: starts member I with --initial-cluster-state STATE (new or existing).
start_etcd() {
    local i=$1 s tls=() cluster
    s="$(etcd_scheme)"
    local url="$s://127.0.0.1:${E_CLIENT[$i]}" peer="$s://127.0.0.1:${E_PEER[$i]}"
    cluster="e0=$s://127.0.0.1:${E_PEER[0]},e1=$s://127.0.0.1:${E_PEER[1]},e2=$s://127.0.0.1:${E_PEER[2]}"
    if [[ -n "${ETCD_PKI:-}" ]]; then
        local crt="$ETCD_PKI/dc1-server-consul-$i.pem" key="$ETCD_PKI/dc1-server-consul-$i-key.pem" ca="$ETCD_PKI/consul-agent-ca.pem"
        tls=(--cert-file "$crt" --key-file "$key" --trusted-ca-file "$ca" --client-cert-auth
            --peer-cert-file "$crt" --peer-key-file "$key" --peer-trusted-ca-file "$ca" --peer-client-cert-auth)
    fi
    spawn "etcd$i" etcd --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "$url" --advertise-client-urls "$url" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$cluster" --initial-cluster-state "$2" --log-level warn "${tls[@]}"
    E_PID[$i]=$SPAWNED
}
etcd_url() { echo "$(etcd_scheme)://127.0.0.1:${E_CLIENT[$1]}"; }
etcd_urls() { echo "$(etcd_url 0),$(etcd_url 1),$(etcd_url 2)"; }
etcd_status() { curl "${CURL_TLS[@]}" -fsS --max-time 2 -X POST -d '{}' "$(etcd_url "$1")/v3/maintenance/status"; }
etcd_is_leader() { # etcd_is_leader I: its member id equals the leader it reports
    local s
    s="$(etcd_status "$1")" || return 1
    python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["header"]["member_id"] == s["leader"] else 1)' "$s"
}
etcd_healthy() {
    local i
    for i in 0 1 2; do curl "${CURL_TLS[@]}" -fsS --max-time 2 "$(etcd_url "$i")/health" | grep -q '"health":"true"' || return 1; done
}
