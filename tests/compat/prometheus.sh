#!/usr/bin/env bash
# Prometheus (Debian's 2.42) discovers mesh's metrics endpoints through the
# agent and scrapes them; the test then reads the series back through
# Prometheus's HTTP API.
#
#   tests/compat/prometheus.sh path/to/mesh
#
# Debian builds Prometheus 2.42 without Consul service discovery (its
# changelog: "Disable Consul SD until its Debian package is back in shape"),
# so `consul_sd_configs` cannot be loaded. Prometheus discovers through
# `http_sd_configs` pointed at the agent's /v1/agent/prometheus-sd instead,
# which labels targets exactly as consul_sd does: the relabelling below is the
# one a consul_sd_configs job would use.
#
# Prints "prometheus: N passed, N failed" and exits non-zero on any failure.
set -euo pipefail

MESH=${1:?usage: prometheus.sh path/to/mesh}
[[ "$MESH" == /* ]] || MESH="$PWD/$MESH"
DEADLINE=60

if ! command -v prometheus >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || { echo "prometheus: install Debian's prometheus package" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus
fi

SUITE=prometheus
# shellcheck source=tests/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$MESH" agent -dev -http-port=0 -dns-port=0 -server-port=0 -serf-lan-port=0 >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=($!)
wait_for "the agent" agent_up
HTTP_PORT=$(http_port)
HTTP="http://127.0.0.1:$HTTP_PORT"
export CONSUL_HTTP_ADDR="127.0.0.1:$HTTP_PORT"

# The agent's own metrics endpoint, registered like any metrics target.
curl -sf -X PUT "$HTTP/v1/agent/service/register" -d "{
  \"Name\": \"mesh-agent\", \"Address\": \"127.0.0.1\", \"Port\": $HTTP_PORT,
  \"Meta\": {\"metrics_port\": \"$HTTP_PORT\", \"metrics_path\": \"/v1/agent/metrics\",
             \"metrics_format\": \"prometheus\"}}" >/dev/null

PROM_PORT=$(free_port)
cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mesh
    http_sd_configs:
      - url: $HTTP/v1/agent/prometheus-sd
        refresh_interval: 1s
    relabel_configs:
      # Only instances that say where their metrics are.
      - source_labels: [__meta_consul_service_metadata_metrics_port]
        regex: .+
        action: keep
      - source_labels: [__meta_consul_address, __meta_consul_service_metadata_metrics_port]
        separator: ":"
        target_label: __address__
      - source_labels: [__meta_consul_service_metadata_metrics_path]
        regex: (.+)
        target_label: __metrics_path__
      - source_labels: [__meta_consul_service_metadata_metrics_format]
        regex: (.+)
        target_label: __param_format
      - source_labels: [__meta_consul_service]
        target_label: consul_service
YAML
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM="http://127.0.0.1:$PROM_PORT"

# query PROMQL: prints the first result's value, or nothing.
query() {
    curl -sf --max-time 5 -G "$PROM/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")' 2>/dev/null || true
}
# at_least PROMQL N: the query returns a value >= N.
at_least() {
    local v
    v=$(query "$1")
    [[ -n "$v" ]] && python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$v" "$2"
}

wait_for "Prometheus to scrape the agent" at_least 'up{consul_service="mesh-agent"}' 1
ok "Prometheus discovers the agent through /v1/agent/prometheus-sd and scrapes it"

curl -sf -X PUT "$HTTP/v1/kv/compat/prom" -d hello >/dev/null
wait_for "the agent's Raft counter" at_least 'mesh_raft_applies_total{consul_service="mesh-agent"}' 1
wait_for "the agent's KV PUT counter" at_least \
    'mesh_http_requests_total{consul_service="mesh-agent",method="PUT",path="/v1/kv/{*key}"}' 1
ok "mesh_raft_applies_total and mesh_http_requests_total read back through Prometheus's API"

# Two sidecars with metrics: billing (HTTP, behind python's http.server) and
# web, whose upstream is billing. Each registration says where its metrics
# are (Meta.metrics_port) and asks its proxy to serve them there
# (Proxy.Config.prometheus_bind_addr).
BACKEND_PORT=$(free_port)
mkdir -p "$WORK/www"
echo "billing" >"$WORK/www/index.html"
python3 -m http.server "$BACKEND_PORT" --bind 127.0.0.1 --directory "$WORK/www" \
    >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/billing-defaults.hcl" <<'HCL'
Kind     = "service-defaults"
Name     = "billing"
Protocol = "http"
HCL
"$MESH" config write "$WORK/billing-defaults.hcl" >/dev/null

UPSTREAM_PORT=$(free_port)
register() { # NAME PORT UPSTREAMS_JSON: registers NAME with a metrics-serving sidecar
    local name=$1 port=$2 upstreams=$3 sidecar metrics
    sidecar=$(free_port)
    metrics=$(free_port)
    curl -sf -X PUT "$HTTP/v1/agent/service/register" -d "{
      \"Name\": \"$name\", \"Port\": $port,
      \"Connect\": {\"SidecarService\": {\"Port\": $sidecar,
        \"Meta\": {\"metrics_port\": \"$metrics\"},
        \"Proxy\": {\"Upstreams\": $upstreams,
                    \"Config\": {\"prometheus_bind_addr\": \"127.0.0.1:$metrics\",
                                 \"bind_address\": \"127.0.0.1\"}}}}}" >/dev/null
    "$MESH" proxy -sidecar-for "$name" >"$WORK/$name-proxy.out" 2>"$WORK/$name-proxy.log" &
    PIDS+=($!)
}
register billing "$BACKEND_PORT" '[]'
register web 1 "[{\"DestinationName\": \"billing\", \"LocalBindPort\": $UPSTREAM_PORT}]"

served() { [[ "$(curl -s --max-time 2 "http://127.0.0.1:$UPSTREAM_PORT/")" == billing ]]; }
wait_for "an HTTP request through web's sidecar to billing" served
for _ in $(seq 20); do curl -sf "http://127.0.0.1:$UPSTREAM_PORT/" >/dev/null; done
ok "HTTP requests cross the web and billing sidecars"

wait_for "both sidecars scraped" at_least 'count(up{consul_service=~".*-sidecar-proxy"} == 1)' 2
ok "Prometheus discovers both sidecars' metrics endpoints from their registrations"
wait_for "web's outbound request counter" at_least \
    'sum(mesh_proxy_requests_total{consul_service="web-sidecar-proxy",direction="outbound",upstream="billing",code_class="2xx"})' 20
wait_for "billing's inbound request counter" at_least \
    'sum(mesh_proxy_requests_total{consul_service="billing-sidecar-proxy",direction="inbound",code_class="2xx"})' 20
ok "mesh_proxy_requests_total from both proxies read back through Prometheus's API"

echo "prometheus: $passed passed, 0 failed"
