#!/usr/bin/env bash
# Three mesh servers on one machine (127.0.0.1..3, each with its own ports and
# data dir), encrypted gossip, bootstrapped with -bootstrap-expect=3. Ctrl-C stops
# them. Then try: mesh members; mesh operator raft list-peers; kill one server
# and watch `mesh members` and /v1/health/node/NAME.
set -euo pipefail
MESH=${MESH:-mesh}
DIR=$(mktemp -d /tmp/mesh-cluster.XXXXXX)
KEY=$("$MESH" keygen)
trap 'kill 0' EXIT
for i in 1 2 3; do
    join=()
    ((i == 1)) || join=(-retry-join=127.0.0.1 -retry-interval=1s)
    "$MESH" agent -server -bootstrap-expect=3 -node="s$i" -data-dir="$DIR/s$i" \
        -bind="127.0.0.$i" -client="127.0.0.$i" -encrypt="$KEY" "${join[@]}" \
        >"$DIR/s$i.log" 2>&1 &
done
echo "servers started; HTTP on 127.0.0.1:8500, 127.0.0.2:8500, 127.0.0.3:8500; logs in $DIR"
echo "export CONSUL_HTTP_ADDR=127.0.0.1:8500 and run: $MESH members"
wait
