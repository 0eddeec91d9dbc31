#!/usr/bin/env bash
# Partition test: three mesh servers, each in its own network namespace,
# joined by a bridge through veth pairs. The leader is cut off; the majority
# elects a new leader and keeps serving writes while the minority refuses
# them; after the link comes back, the old leader converges on the majority's
# data and the write it could not commit is nowhere.
#
#   tests/compat/partition.sh path/to/mesh
#
# Needs root and `ip netns`; prints SKIP with the reason and exits 0 where
# namespaces are unavailable. Inside each namespace the agents use Consul's
# default ports: every namespace has its own port space, so nothing else on
# the machine can collide with them.
set -euo pipefail

MESH=${1:?usage: partition.sh path/to/mesh}
[[ "$MESH" == /* ]] || MESH="$PWD/$MESH"
DEADLINE=${DEADLINE:-60}

skip() {
    echo "partition: SKIP: $*"
    exit 0
}
[[ $(id -u) == 0 ]] || skip "network namespaces need root"
command -v ip >/dev/null 2>&1 || skip "no ip command (Debian package iproute2)"
command -v curl >/dev/null 2>&1 || skip "no curl"

TAG=mp$(($$ % 10000))
SUBNET=10.213.$(($$ % 250))
NS=("${TAG}a" "${TAG}b" "${TAG}c")
BR="${TAG}br"
SUITE=partition
# shellcheck source=tests/compat/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Run by lib.sh's exit trap once the servers have stopped.
teardown() {
    for ns in "${NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    for i in 0 1 2; do ip link del "${TAG}v$i" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
}

fail() {
    echo "partition: FAIL: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ network

err=$(ip netns add "${NS[0]}" 2>&1) || skip "cannot create a network namespace: $err"
ip netns add "${NS[1]}"
ip netns add "${NS[2]}"
ip link add "$BR" type bridge
ip link set "$BR" up
for i in 0 1 2; do
    ns=${NS[$i]}
    ip link add "${TAG}v$i" type veth peer name "${TAG}p$i"
    ip link set "${TAG}p$i" netns "$ns"
    ip link set "${TAG}v$i" master "$BR"
    ip link set "${TAG}v$i" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$SUBNET.$((i + 1))/24" dev "${TAG}p$i"
    ip -n "$ns" link set "${TAG}p$i" up
done

# ------------------------------------------------------------------ servers

for i in 0 1 2; do
    mkdir -p "$WORK/data$i"
    ip netns exec "${NS[$i]}" "$MESH" agent -server -bootstrap-expect=3 -node="s$i" \
        -bind="$SUBNET.$((i + 1))" -client=127.0.0.1 -data-dir="$WORK/data$i" \
        -retry-join="$SUBNET.$(((i + 1) % 3 + 1))" -retry-interval=1s \
        >"$WORK/s$i.out" 2>"$WORK/s$i.log" &
    PIDS+=($!)
done

# api I PATH [CURL ARGS...]: a request to server I's HTTP API, from inside
# its namespace.
api() {
    local i=$1 path=$2
    shift 2
    ip netns exec "${NS[$i]}" curl -s --max-time 20 "$@" "http://127.0.0.1:8500$path"
}
leader_of() { api "$1" /v1/status/leader | tr -d '"[:space:]'; }
peers_of() { api "$1" /v1/status/peers | grep -o "$SUBNET" | wc -l; }
formed() {
    local l0 l1 l2
    l0=$(leader_of 0) l1=$(leader_of 1) l2=$(leader_of 2)
    [[ -n "$l0" && "$l0" == "$l1" && "$l1" == "$l2" && $(peers_of 0) == 3 ]]
}
wait_for "three servers to elect a leader" formed
LEADER_ADDR=$(leader_of 0)
leader_ip=${LEADER_ADDR%%:*}
L=$((${leader_ip##*.} - 1))
A=$(((L + 1) % 3)) B=$(((L + 2) % 3))
ok "three servers in three namespaces elected s$L"

[[ $(api "$A" /v1/kv/before -X PUT -d one) == true ]] || fail "write before the partition"
ok "a write before the partition"

# ------------------------------------------------------------------ partition

ip link set "${TAG}v$L" down
majority_leader() {
    local la lb
    la=$(leader_of "$A") lb=$(leader_of "$B")
    [[ -n "$la" && "$la" == "$lb" && "$la" != "$LEADER_ADDR" ]]
}
wait_for "the majority to elect a new leader" majority_leader
ok "the majority (s$A, s$B) elected $(leader_of "$A")"

[[ $(api "$B" /v1/kv/majority -X PUT -d two) == true ]] || fail "the majority refused a write"
ok "the majority serves writes"

code=$(api "$L" /v1/kv/minority -X PUT -d lost -o /dev/null -w '%{http_code}' || true)
[[ "$code" != 200 ]] || fail "the cut-off server acknowledged a write"
ok "the cut-off server refuses writes ($code)"
code=$(api "$L" "/v1/kv/before?consistent" -o /dev/null -w '%{http_code}' || true)
[[ "$code" != 200 ]] || fail "the cut-off server answered a consistent read"
ok "the cut-off server refuses consistent reads ($code)"
[[ $(api "$L" "/v1/kv/before?stale&raw") == one ]] || fail "a stale read on the cut-off server"
ok "the cut-off server still answers ?stale reads from what it has"

# ------------------------------------------------------------------ heal

ip link set "${TAG}v$L" up
converged() {
    [[ $(api "$L" "/v1/kv/majority?stale&raw") == two && "$(leader_of "$L")" == "$(leader_of "$A")" ]]
}
wait_for "the healed server to converge" converged
ok "after healing, s$L follows $(leader_of "$L") and has the majority's write"
for i in 0 1 2; do
    code=$(api "$i" "/v1/kv/minority?stale" -o /dev/null -w '%{http_code}')
    [[ "$code" == 404 ]] || fail "s$i has the write the minority never committed ($code)"
done
ok "the write the minority could not commit is on no server"
[[ $(api "$L" /v1/kv/after -X PUT -d three) == true ]] || fail "a write through the healed server"
ok "the healed server forwards writes again"
alive_everywhere() {
    for i in 0 1 2; do
        [[ $(api "$i" /v1/agent/members | grep -o '"Status":1' | wc -l) == 3 ]] || return 1
    done
}
wait_for "gossip to see all three alive again" alive_everywhere
ok "gossip sees all three alive again"

echo "partition: $passed passed"
