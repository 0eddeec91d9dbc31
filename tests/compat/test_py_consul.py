"""Drives a running mesh agent with py-consul, a real Consul client library.

run.sh starts the agent (-dev, ephemeral ports, -enable-script-checks, a config
dir holding the "web-1" service) and exports MESH_HTTP_PORT, MESH_DNS_PORT and
MESH_NODE. Apart from reading the shared web-1 service, every test uses its own
keys, services and sessions, and undoes what it changed, so tests do not depend
on each other's order.

Anything asynchronous (health checks running, anti-entropy reaching the
catalog, lock-delay running out) is waited for with a polling deadline, never a
fixed sleep.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid

import consul
import pytest
from consul.callback import CB

if "MESH_HTTP_PORT" not in os.environ or "MESH_NODE" not in os.environ:
    pytest.exit("run this through tests/compat/run.sh, which starts the agent and sets MESH_HTTP_PORT/MESH_NODE", 2)
HTTP_PORT = int(os.environ["MESH_HTTP_PORT"])
NODE = os.environ["MESH_NODE"]

# How long anything asynchronous may take before a test gives up.
DEADLINE = 20.0


# ----------------------------------------------------------------- helpers


def wait_until(probe, what: str, timeout: float = DEADLINE, interval: float = 0.05):
    """Polls probe() until it returns a truthy value, and returns that value.

    Fails with *what* and the last value seen once *timeout* has passed."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def c():
    client = consul.Consul(host="127.0.0.1", port=HTTP_PORT)
    # The agent is up when run.sh starts pytest, but a leader may take a moment.
    wait_until(lambda: client.status.leader(), "a raft leader")
    return client


@pytest.fixture
def services(c):
    """Service IDs registered through the agent; deregistered after the test."""
    ids: list[str] = []
    yield ids
    for sid in ids:
        c.agent.service.deregister(sid)


@pytest.fixture
def sessions(c):
    """Session IDs created by the test; destroyed after it."""
    ids: list[str] = []
    yield ids
    for sid in ids:
        c.session.destroy(sid)


def check_status(c, check_id):
    """The agent's view of a check's status, or None if it has no such check."""
    check = c.agent.checks().get(check_id)
    return check and check["Status"]


def wait_status(c, check_id, status, timeout=DEADLINE):
    wait_until(
        lambda: check_status(c, check_id) == status,
        f"check {check_id} to become {status} (now {check_status(c, check_id)})",
        timeout=timeout,
    )


def passing_ids(c, service):
    """Service IDs that /v1/health/service/NAME?passing returns."""
    _, entries = c.health.service(service, passing=True)
    return sorted(e["Service"]["ID"] for e in entries)


def catalog_ids(c, service):
    _, entries = c.catalog.service(service)
    return sorted(e["ServiceID"] for e in entries)


def kv_value(c, key):
    _, entry = c.kv.get(key)
    return entry and entry["Value"]


class StatusServer:
    """A local HTTP server whose answer code a test can change; counts requests."""

    def __init__(self):
        self.code = 200
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.hits += 1
                body = f"status {outer.code}\n".encode()
                self.send_response(outer.code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/health"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TcpListener:
    """A local TCP port that accepts and closes connections until closed."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        # shutdown() wakes the thread blocked in accept(); close() frees the port.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------ status


def test_status_leader_and_peers(c):
    leader = c.status.leader()
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+:\d+", leader), leader
    assert leader in c.status.peers()


def test_agent_self_reports_node(c):
    me = c.agent.self()
    assert me["Config"]["NodeName"] == NODE
    assert me["Config"]["Datacenter"] == "dc1"
    assert me["Config"]["Server"] is True


# -------------------------------------------------- services and checks


def test_config_dir_service_is_registered(c):
    svc = c.agent.services()["web-1"]
    assert svc["Service"] == "web"
    assert svc["Port"] == 8080
    assert svc["Tags"] == ["primary", "v1"]
    assert svc["Meta"] == {"team": "compat"}
    assert c.agent.service_definition("web-1")["Service"] == "web"
    wait_status(c, "web-alive", "passing")
    assert passing_ids(c, "web") == ["web-1"]
    _, tagged = c.health.service("web", tag="primary", passing=True)
    assert [e["Service"]["ID"] for e in tagged] == ["web-1"]
    _, untagged = c.health.service("web", tag="no-such-tag")
    assert untagged == []


def test_register_and_deregister_service(c, services):
    name = uniq("api")
    assert c.agent.service.register(
        name, service_id=f"{name}-1", port=7001, tags=["blue"], meta={"version": "3"}
    )
    services.append(f"{name}-1")
    svc = c.agent.services()[f"{name}-1"]
    assert (svc["Service"], svc["Port"], svc["Tags"], svc["Meta"]) == (name, 7001, ["blue"], {"version": "3"})
    # Anti-entropy carries it to the catalog.
    wait_until(lambda: catalog_ids(c, name) == [f"{name}-1"], f"{name}-1 in the catalog")
    _, entries = c.catalog.service(name)
    assert entries[0]["Node"] == NODE
    assert entries[0]["ServicePort"] == 7001
    assert entries[0]["ServiceMeta"] == {"version": "3"}
    # No checks of its own: only serfHealth, so it counts as passing.
    assert passing_ids(c, name) == [f"{name}-1"]

    assert c.agent.service.deregister(f"{name}-1")
    services.remove(f"{name}-1")
    assert f"{name}-1" not in c.agent.services()
    wait_until(lambda: catalog_ids(c, name) == [], f"{name}-1 gone from the catalog")
    assert name not in c.catalog.services()[1]


def test_ttl_check_pass_warn_fail(c, services):
    name = uniq("ttl")
    assert c.agent.service.register(name, port=7002, check=consul.Check.ttl("10s"))
    services.append(name)
    check_id = f"service:{name}"  # Consul's ID for a service's only check

    # A TTL check starts critical, so the instance is not "passing".
    assert check_status(c, check_id) == "critical"
    wait_until(lambda: catalog_ids(c, name) == [name], f"{name} in the catalog")
    assert passing_ids(c, name) == []

    assert c.agent.check.ttl_pass(check_id, notes="all good")
    assert check_status(c, check_id) == "passing"
    assert c.agent.checks()[check_id]["Output"] == "all good"
    wait_until(lambda: passing_ids(c, name) == [name], f"{name} passing in /v1/health/service")

    # ?passing leaves out warning instances too.
    assert c.agent.check.ttl_warn(check_id, notes="degraded")
    assert check_status(c, check_id) == "warning"
    wait_until(lambda: passing_ids(c, name) == [], f"{name} (warning) left out of ?passing")
    _, all_entries = c.health.service(name)
    assert [e["Service"]["ID"] for e in all_entries] == [name]

    assert c.agent.check.ttl_fail(check_id, notes="down")
    assert check_status(c, check_id) == "critical"
    wait_until(
        lambda: check_id in [ch["CheckID"] for ch in c.health.state("critical")[1]],
        f"{check_id} in /v1/health/state/critical",
    )
    _, checks = c.health.checks(name)
    assert [(ch["CheckID"], ch["Status"], ch["Output"]) for ch in checks] == [(check_id, "critical", "down")]


def test_ttl_check_expires_without_updates(c, services):
    name = uniq("ttl-expire")
    assert c.agent.service.register(name, port=7003, check=consul.Check.ttl("1s"))
    services.append(name)
    check_id = f"service:{name}"
    assert c.agent.check.ttl_pass(check_id)
    passed_at = time.monotonic()
    assert check_status(c, check_id) == "passing"
    wait_status(c, check_id, "critical", timeout=10)
    # Not before the TTL ran out (a little slack for clock granularity).
    assert time.monotonic() - passed_at >= 0.9
    assert "TTL expired" in c.agent.checks()[check_id]["Output"]


def test_http_check_follows_the_endpoint(c, services):
    server = StatusServer()
    try:
        name = uniq("http")
        assert c.agent.service.register(
            name, port=server.port, check=consul.Check.http(server.url, "1s", timeout="1s")
        )
        services.append(name)
        check_id = f"service:{name}"
        wait_status(c, check_id, "passing")
        assert server.hits >= 1
        wait_until(lambda: passing_ids(c, name) == [name], f"{name} passing in /v1/health/service")

        server.code = 500
        wait_status(c, check_id, "critical")
        wait_until(lambda: passing_ids(c, name) == [], f"{name} out of ?passing")

        # Consul maps 429 Too Many Requests to warning.
        server.code = 429
        wait_status(c, check_id, "warning")

        server.code = 200
        wait_status(c, check_id, "passing")
    finally:
        server.close()


def test_tcp_check_follows_the_listener(c, services):
    listener = TcpListener()
    try:
        name = uniq("tcp")
        assert c.agent.service.register(
            name, port=listener.port, check=consul.Check.tcp("127.0.0.1", listener.port, "1s", timeout="1s")
        )
        services.append(name)
        check_id = f"service:{name}"
        wait_status(c, check_id, "passing")
        assert listener.accepted >= 1
    finally:
        listener.close()
    wait_status(c, check_id, "critical")
    wait_until(lambda: passing_ids(c, name) == [], f"{name} out of ?passing")


def test_script_check_maps_exit_codes(c, services):
    # The agent runs with -enable-script-checks. Exit 0 is passing, 1 is
    # warning, anything else critical; the script's output becomes Output.
    with tempfile.TemporaryDirectory() as tmp:
        code_file = os.path.join(tmp, "code")
        with open(code_file, "w") as f:
            f.write("0")
        name = uniq("script")
        assert c.agent.service.register(name, port=7004)
        services.append(name)
        check_id = uniq("script-check")
        assert c.agent.check.register(
            "script says",
            check=consul.Check.script(["sh", "-c", f'c=$(cat {code_file}); echo "exit $c"; exit $c'], "1s"),
            check_id=check_id,
            service_id=name,
        )
        try:
            wait_status(c, check_id, "passing")
            assert c.agent.checks()[check_id]["ServiceID"] == name
            wait_until(lambda: "exit 0" in c.agent.checks()[check_id]["Output"], "the script's output")
            wait_until(lambda: passing_ids(c, name) == [name], f"{name} passing in /v1/health/service")

            for code, status in (("1", "warning"), ("2", "critical"), ("0", "passing")):
                with open(code_file, "w") as f:
                    f.write(code)
                wait_status(c, check_id, status)
        finally:
            assert c.agent.check.deregister(check_id)
        assert check_id not in c.agent.checks()


def test_node_level_check_shows_in_health_node(c):
    check_id = uniq("node-ttl")
    assert c.agent.check.register("node ttl", check=consul.Check.ttl("30s"), check_id=check_id)
    try:
        assert c.agent.check.ttl_pass(check_id, notes="node ok")
        wait_until(
            lambda: [ch for ch in c.health.node(NODE)[1] if ch["CheckID"] == check_id and ch["Status"] == "passing"],
            f"{check_id} passing in /v1/health/node/{NODE}",
        )
        _, checks = c.health.node(NODE)
        ids = [ch["CheckID"] for ch in checks]
        assert "serfHealth" in ids
        assert [ch["ServiceID"] for ch in checks if ch["CheckID"] == check_id] == [""]
    finally:
        assert c.agent.check.deregister(check_id)
    wait_until(
        lambda: check_id not in [ch["CheckID"] for ch in c.health.node(NODE)[1]],
        f"{check_id} gone from /v1/health/node",
    )


def set_maintenance(c, path, enable, reason=None):
    """PUT a maintenance toggle with enable=true/false spelled in lower case
    (py-consul sends Python's "True"/"False", which mesh rejects; see
    test_maintenance_with_py_consul)."""
    params = [("enable", "true" if enable else "false")]
    if reason:
        params.append(("reason", reason))
    return c.http.put(CB.boolean(), path, params=params)


def test_service_maintenance_mode(c, services):
    name = uniq("maint")
    assert c.agent.service.register(name, port=7006)
    services.append(name)
    wait_until(lambda: passing_ids(c, name) == [name], f"{name} passing")
    maint_id = f"_service_maintenance:{name}"

    assert set_maintenance(c, f"/v1/agent/service/maintenance/{name}", True, "upgrading")
    check = c.agent.checks()[maint_id]
    assert (check["Status"], check["Notes"], check["ServiceID"]) == ("critical", "upgrading", name)
    wait_until(lambda: passing_ids(c, name) == [], f"{name} out of ?passing while in maintenance")
    assert passing_ids(c, "web") == ["web-1"]  # other services unaffected

    assert set_maintenance(c, f"/v1/agent/service/maintenance/{name}", False)
    assert maint_id not in c.agent.checks()
    wait_until(lambda: passing_ids(c, name) == [name], f"{name} back in ?passing")


def test_node_maintenance_mode(c):
    try:
        assert set_maintenance(c, "/v1/agent/maintenance", True, "patching")
        check = c.agent.checks()["_node_maintenance"]
        assert (check["Status"], check["Notes"], check["ServiceID"]) == ("critical", "patching", "")
        # A node in maintenance takes all its services out of ?passing.
        wait_until(lambda: passing_ids(c, "web") == [], "web out of ?passing during node maintenance")
    finally:
        assert set_maintenance(c, "/v1/agent/maintenance", False)
    assert "_node_maintenance" not in c.agent.checks()
    wait_until(lambda: passing_ids(c, "web") == ["web-1"], "web back in ?passing")


def test_maintenance_with_py_consul(c, services):
    name = uniq("maint-py")
    assert c.agent.service.register(name, port=7007)
    services.append(name)
    assert c.agent.service.maintenance(name, True, reason="py-consul")
    assert c.agent.checks()[f"_service_maintenance:{name}"]["Status"] == "critical"
    assert c.agent.service.maintenance(name, False)
    assert f"_service_maintenance:{name}" not in c.agent.checks()


# ----------------------------------------------------------------- catalog


def test_catalog_queries(c):
    wait_until(lambda: catalog_ids(c, "web") == ["web-1"], "web-1 in the catalog")
    _, services = c.catalog.services()
    assert sorted(services["web"]) == ["primary", "v1"]

    _, nodes = c.catalog.nodes()
    me = [n for n in nodes if n["Node"] == NODE]
    assert len(me) == 1 and me[0]["Address"] == "127.0.0.1"

    _, entries = c.catalog.service("web")
    e = entries[0]
    assert (e["Node"], e["Address"], e["ServiceID"], e["ServicePort"]) == (NODE, "127.0.0.1", "web-1", 8080)
    assert e["ServiceTags"] == ["primary", "v1"]

    _, tagged = c.catalog.service("web", tag="primary")
    assert [x["ServiceID"] for x in tagged] == ["web-1"]
    _, untagged = c.catalog.service("web", tag="no-such-tag")
    assert untagged == []

    _, node = c.catalog.node(NODE)
    assert node["Node"]["Node"] == NODE
    assert node["Services"]["web-1"]["Port"] == 8080

    _, missing = c.catalog.service(uniq("no-such-service"))
    assert missing == []
    assert c.catalog.datacenters() == ["dc1"]


def test_catalog_register_external_node(c):
    # Canonical field names through py-consul's HTTP client, as Go clients send
    # them (py-consul's own lower-case keys: test_catalog_register_with_py_consul).
    node = uniq("ext-node")
    svc = uniq("ext-svc")
    body = {
        "Node": node,
        "Address": "127.0.0.5",
        "NodeMeta": {"rack": "r1"},
        "Service": {
            "Service": svc,
            "ID": f"{svc}-1",
            "Port": 9999,
            "Tags": ["ext"],
        },
    }
    assert c.http.put(CB.boolean(), "/v1/catalog/register", data=json.dumps(body))
    try:
        _, entries = c.catalog.service(svc)
        assert [(e["Node"], e["Address"], e["ServicePort"], e["ServiceTags"]) for e in entries] == [
            (node, "127.0.0.5", 9999, ["ext"])
        ]
        _, info = c.catalog.node(node)
        assert info["Node"]["Address"] == "127.0.0.5"
        assert info["Node"]["Meta"] == {"rack": "r1"}
        assert list(info["Services"]) == [f"{svc}-1"]
        # No health checks registered: the instance counts as passing.
        assert passing_ids(c, svc) == [f"{svc}-1"]
    finally:
        assert c.http.put(CB.boolean(), "/v1/catalog/deregister", data=json.dumps({"Node": node}))
    _, entries = c.catalog.service(svc)
    assert entries == []
    assert node not in [n["Node"] for n in c.catalog.nodes()[1]]


def test_catalog_register_service_and_check_without_indexes(c):
    # Consul's documented body: no CreateIndex/ModifyIndex anywhere.
    node = uniq("ext-node")
    svc = uniq("ext-svc")
    body = {
        "Node": node,
        "Address": "127.0.0.7",
        "Service": {"Service": svc, "ID": f"{svc}-1", "Port": 9997},
        "Check": {"CheckID": f"{svc}-check", "Name": "ext check", "Status": "passing", "ServiceID": f"{svc}-1"},
    }
    try:
        assert c.http.put(CB.boolean(), "/v1/catalog/register", data=json.dumps(body))
        assert passing_ids(c, svc) == [f"{svc}-1"]
        _, checks = c.health.checks(svc)
        assert [(ch["CheckID"], ch["Status"], ch["Node"]) for ch in checks] == [(f"{svc}-check", "passing", node)]
    finally:
        c.http.put(CB.boolean(), "/v1/catalog/deregister", data=json.dumps({"Node": node}))


def test_catalog_register_with_py_consul(c):
    node = uniq("ext-node")
    svc = uniq("ext-svc")
    try:
        assert c.catalog.register(node, "127.0.0.6", service={"Service": svc, "Port": 9998})
        _, entries = c.catalog.service(svc)
        assert [(e["Node"], e["ServicePort"]) for e in entries] == [(node, 9998)]
        assert c.catalog.deregister(node)
        assert c.catalog.service(svc)[1] == []
    finally:
        # Leave nothing behind whichever way the calls above went.
        c.http.put(CB.boolean(), "/v1/catalog/deregister", data=json.dumps({"Node": node}))


# ---------------------------------------------------------------------- KV


def test_kv_put_get_flags_and_missing(c):
    key = uniq("compat/kv") + "/bin"
    blob = b"\x00\xffbinary\nvalue"
    assert c.kv.put(key, blob, flags=42) is True
    index, entry = c.kv.get(key)
    assert entry["Key"] == key
    assert entry["Value"] == blob
    assert entry["Flags"] == 42
    assert entry["CreateIndex"] == entry["ModifyIndex"] > 0
    assert int(index) >= entry["ModifyIndex"]

    assert c.kv.put(key, "second") is True
    _, entry2 = c.kv.get(key)
    assert entry2["Value"] == b"second"
    assert entry2["CreateIndex"] == entry["CreateIndex"]
    assert entry2["ModifyIndex"] > entry["ModifyIndex"]

    index, none = c.kv.get(uniq("compat/kv/missing"))
    assert none is None
    assert int(index) > 0


def test_kv_cas(c):
    key = uniq("compat/cas") + "/k"
    # cas=0: create only if absent.
    assert c.kv.put(key, "v1", cas=0) is True
    assert c.kv.put(key, "v2", cas=0) is False
    assert kv_value(c, key) == b"v1"

    _, entry = c.kv.get(key)
    stale = entry["ModifyIndex"]
    assert c.kv.put(key, "v2") is True  # moves ModifyIndex on
    assert c.kv.put(key, "v3", cas=stale) is False
    assert kv_value(c, key) == b"v2"

    _, entry = c.kv.get(key)
    assert c.kv.put(key, "v3", cas=entry["ModifyIndex"]) is True
    assert kv_value(c, key) == b"v3"

    # DELETE with cas: a stale index leaves the key, the current one removes it.
    assert c.kv.delete(key, cas=stale) is False
    assert kv_value(c, key) == b"v3"
    _, entry = c.kv.get(key)
    assert c.kv.delete(key, cas=entry["ModifyIndex"]) is True
    assert c.kv.get(key)[1] is None


def test_kv_recurse_keys_and_delete(c):
    base = uniq("compat/tree")
    for k, v in [("dir/a", "1"), ("dir/b", "2"), ("dir/sub/c", "3"), ("dirx", "4")]:
        assert c.kv.put(f"{base}/{k}", v)

    _, entries = c.kv.get(f"{base}/dir/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in entries] == [
        (f"{base}/dir/a", b"1"),
        (f"{base}/dir/b", b"2"),
        (f"{base}/dir/sub/c", b"3"),
    ]
    _, keys = c.kv.get(f"{base}/", keys=True)
    assert keys == [f"{base}/dir/a", f"{base}/dir/b", f"{base}/dir/sub/c", f"{base}/dirx"]
    _, keys = c.kv.get(f"{base}/dir/", keys=True, separator="/")
    assert keys == [f"{base}/dir/a", f"{base}/dir/b", f"{base}/dir/sub/"]

    assert c.kv.delete(f"{base}/dir/a") is True
    assert c.kv.get(f"{base}/dir/a")[1] is None
    assert kv_value(c, f"{base}/dir/b") == b"2"

    # Recursive delete takes the prefix "dir/" only: "dirx" stays.
    assert c.kv.delete(f"{base}/dir/", recurse=True) is True
    assert c.kv.get(f"{base}/dir/", recurse=True)[1] is None
    _, keys = c.kv.get(f"{base}/", keys=True)
    assert keys == [f"{base}/dirx"]


# ---------------------------------------------------------------- sessions
#
# py-consul's session.create() sends its options with lower-case JSON keys
# ("ttl", "behavior", "lockdelay", "name"), which Consul (and mesh) decode
# case-insensitively: test_session_create_options_from_py_consul. new_session()
# sends Consul's canonical field names, as Go clients do.


def new_session(c, sessions, **fields):
    """Creates a session with canonical Consul field names; returns its ID."""
    body = {"LockDelay": "0s", "TTL": "30s", **fields}
    sid = c.http.put(CB.json(is_id=True), "/v1/session/create", data=json.dumps(body))
    sessions.append(sid)
    return sid


def test_session_create_info_list_renew(c, sessions):
    sid = new_session(c, sessions, Name="compat-info", TTL="30s", Behavior="release")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", sid)
    _, info = c.session.info(sid)
    assert (info["ID"], info["Name"], info["Node"], info["Behavior"], info["TTL"]) == (
        sid,
        "compat-info",
        NODE,
        "release",
        "30s",
    )
    assert info["LockDelay"] == 0
    assert sid in [s["ID"] for s in c.session.list()[1]]
    assert sid in [s["ID"] for s in c.session.node(NODE)[1]]
    renewed = c.session.renew(sid)
    assert renewed["ID"] == sid

    assert c.session.destroy(sid) is True
    sessions.remove(sid)
    assert c.session.info(sid)[1] is None
    assert sid not in [s["ID"] for s in c.session.list()[1]]
    with pytest.raises(consul.NotFound):
        c.session.renew(sid)


def test_session_defaults(c, sessions):
    # No options at all: a 15s lock-delay (reported in nanoseconds), release
    # behaviour, no TTL, tied to the node's serfHealth check.
    sid = c.session.create()
    sessions.append(sid)
    _, info = c.session.info(sid)
    assert info["LockDelay"] == 15_000_000_000
    assert info["Behavior"] == "release"
    assert info["Node"] == NODE
    assert not info.get("TTL")


def test_session_lock_acquire_release(c, sessions):
    key = uniq("compat/lock") + "/leader"
    s1 = new_session(c, sessions, Name="s1")
    s2 = new_session(c, sessions, Name="s2")

    assert c.kv.put(key, "s1 holds", acquire=s1) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"s1 holds")

    # Held: another session can neither take nor release it.
    assert c.kv.put(key, "s2 wants", acquire=s2) is False
    assert c.kv.put(key, "s2 frees", release=s2) is False
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["Value"]) == (s1, b"s1 holds")

    # The holder may re-acquire (update) without bumping LockIndex.
    assert c.kv.put(key, "s1 again", acquire=s1) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s1, 1, b"s1 again")

    assert c.kv.put(key, "s1 done", release=s1) is True
    _, entry = c.kv.get(key)
    assert not entry.get("Session")
    assert entry["Value"] == b"s1 done"

    assert c.kv.put(key, "s2 holds", acquire=s2) is True
    _, entry = c.kv.get(key)
    assert entry["Session"] == s2
    assert c.kv.put(key, "s1 wants back", acquire=s1) is False


def test_lock_index_counts_acquisitions_across_release(c, sessions):
    key = uniq("compat/lock") + "/count"
    s1 = new_session(c, sessions)
    s2 = new_session(c, sessions)
    assert c.kv.put(key, "1", acquire=s1) is True
    assert c.kv.put(key, "1", release=s1) is True
    _, entry = c.kv.get(key)
    assert entry["LockIndex"] == 1
    assert c.kv.put(key, "2", acquire=s2) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"]) == (s2, 2)


def test_session_destroy_releases_lock(c, sessions):
    key = uniq("compat/lock") + "/release"
    s1 = new_session(c, sessions, Name="holder", Behavior="release")
    s2 = new_session(c, sessions, Name="next")
    assert c.kv.put(key, "held", acquire=s1) is True
    assert c.kv.put(key, "blocked", acquire=s2) is False

    assert c.session.destroy(s1) is True
    sessions.remove(s1)
    _, entry = c.kv.get(key)
    assert entry is not None and entry["Value"] == b"held"  # "release" keeps the key
    assert not entry.get("Session")
    assert entry["LockIndex"] == 1

    assert c.kv.put(key, "mine now", acquire=s2) is True
    _, entry = c.kv.get(key)
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (s2, 2, b"mine now")


def test_session_destroy_with_delete_behavior_deletes_key(c, sessions):
    key = uniq("compat/lock") + "/ephemeral"
    keep = uniq("compat/lock") + "/unlocked"
    sid = new_session(c, sessions, Name="ephemeral", Behavior="delete")
    assert c.session.info(sid)[1]["Behavior"] == "delete"
    assert c.kv.put(key, "here while I live", acquire=sid) is True
    assert c.kv.put(keep, "not locked")
    assert c.session.destroy(sid) is True
    sessions.remove(sid)
    assert c.kv.get(key)[1] is None
    assert kv_value(c, keep) == b"not locked"


def test_session_lock_delay_blocks_reacquire(c, sessions):
    key = uniq("compat/lock") + "/delay"
    s1 = new_session(c, sessions, Name="delayed", LockDelay="2s")
    s2 = new_session(c, sessions, Name="waiter")
    assert c.kv.put(key, "held", acquire=s1) is True
    assert c.session.destroy(s1) is True
    sessions.remove(s1)
    invalidated = time.monotonic()

    # Inside the 2s lock-delay the lock cannot be taken ...
    assert c.kv.put(key, "too early", acquire=s2) is False
    # ... and once it runs out it can.
    wait_until(lambda: c.kv.put(key, "after delay", acquire=s2), "the lock-delay to run out", timeout=10)
    assert time.monotonic() - invalidated >= 1.5
    assert c.kv.get(key)[1]["Session"] == s2


def test_session_create_options_from_py_consul(c, sessions):
    sid = c.session.create(name="py-consul-opts", ttl=20, behavior="delete", lock_delay=3)
    sessions.append(sid)
    _, info = c.session.info(sid)
    assert (info["Name"], info["TTL"], info["Behavior"], info["LockDelay"]) == (
        "py-consul-opts",
        "20s",
        "delete",
        3_000_000_000,
    )


# -------------------------------------------------------- blocking queries


def test_kv_blocking_query_wakes_on_write(c):
    key = uniq("compat/block") + "/k"
    assert c.kv.put(key, "before")
    index, entry = c.kv.get(key)
    assert entry["Value"] == b"before"

    result = {}
    started = threading.Event()
    done = threading.Event()

    def blocker():
        started.set()
        t0 = time.monotonic()
        try:
            result["index"], result["entry"] = c.kv.get(key, index=index, wait="5s")
        except Exception as e:  # surfaced by the asserts below
            result["error"] = e
        result["elapsed"] = time.monotonic() - t0
        result["returned_at"] = time.monotonic()
        done.set()

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    assert started.wait(5)
    # The query must be held open while nothing changes (this is an assertion
    # with a bound, not a sleep that hopes: returning here is the failure).
    assert not done.wait(0.5), f"blocking query returned without a change: {result}"

    write_started = time.monotonic()
    assert c.kv.put(key, "after")
    assert done.wait(10), "blocking query did not return after the write"
    thread.join(5)

    assert "error" not in result, result
    assert result["entry"]["Value"] == b"after"
    assert int(result["index"]) > int(index)
    assert result["returned_at"] >= write_started  # woke because of the write
    assert result["elapsed"] < 5, f"took {result['elapsed']:.2f}s: it waited out the 5s wait"


def test_kv_blocking_query_times_out_unchanged(c):
    key = uniq("compat/block") + "/idle"
    assert c.kv.put(key, "same")
    index, _ = c.kv.get(key)
    t0 = time.monotonic()
    index2, entry = c.kv.get(key, index=index, wait="1s")
    elapsed = time.monotonic() - t0
    assert entry["Value"] == b"same"
    assert index2 == index
    # Held for the wait (Consul adds up to wait/16 of jitter), not answered at once.
    assert 0.9 <= elapsed < 3, elapsed


def test_health_blocking_query_wakes_on_registration(c, services):
    name = uniq("watched")
    index, entries = c.health.service(name, passing=True)
    assert entries == []
    result = {}

    def watcher():
        t0 = time.monotonic()
        try:
            result["index"], result["entries"] = c.health.service(name, passing=True, index=index, wait="10s")
        except Exception as e:  # surfaced by the asserts below
            result["error"] = e
        result["elapsed"] = time.monotonic() - t0

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive(), f"health blocking query returned without a change: {result}"
    assert c.agent.service.register(name, port=7005)
    services.append(name)
    thread.join(15)
    assert not thread.is_alive(), "health blocking query did not return after the registration"
    assert "error" not in result, result
    assert [e["Service"]["ID"] for e in result["entries"]] == [name]
    assert int(result["index"]) > int(index)
    assert result["elapsed"] < 10


# --------------------------------------------------------------------- txn


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_txn_applies_all_ops(c):
    base = uniq("compat/txn")
    result = c.txn.put(
        [
            {"KV": {"Verb": "set", "Key": f"{base}/a", "Value": b64("alpha")}},
            {"KV": {"Verb": "set", "Key": f"{base}/b", "Value": b64("beta"), "Flags": 7}},
            {"KV": {"Verb": "get", "Key": f"{base}/a"}},
        ]
    )
    assert not result.get("Errors")
    assert [r["KV"]["Key"] for r in result["Results"]] == [f"{base}/a", f"{base}/b", f"{base}/a"]
    assert base64.b64decode(result["Results"][2]["KV"]["Value"]) == b"alpha"
    assert kv_value(c, f"{base}/a") == b"alpha"
    _, b = c.kv.get(f"{base}/b")
    assert (b["Value"], b["Flags"]) == (b"beta", 7)


def test_txn_rolls_back_on_failed_op(c):
    base = uniq("compat/txn")
    assert c.kv.put(f"{base}/guarded", "orig")
    _, entry = c.kv.get(f"{base}/guarded")
    stale = entry["ModifyIndex"] + 1000
    with pytest.raises(consul.ConsulException, match="409") as err:
        c.txn.put(
            [
                {"KV": {"Verb": "set", "Key": f"{base}/new", "Value": b64("should not exist")}},
                {"KV": {"Verb": "cas", "Key": f"{base}/guarded", "Value": b64("changed"), "Index": stale}},
            ]
        )
    assert "OpIndex" in str(err.value)
    # Nothing from the failed transaction was applied.
    assert c.kv.get(f"{base}/new")[1] is None
    assert kv_value(c, f"{base}/guarded") == b"orig"

    # The same cas with the right index goes through.
    result = c.txn.put(
        [{"KV": {"Verb": "cas", "Key": f"{base}/guarded", "Value": b64("changed"), "Index": entry["ModifyIndex"]}}]
    )
    assert not result.get("Errors")
    assert kv_value(c, f"{base}/guarded") == b"changed"


# ------------------------------------------------------- the consul service


def test_server_registers_consul_service(c):
    # A Consul server registers itself as the "consul" service, on its RPC
    # port (8300 by default; the suite's agent picks a free one).
    rpc_port = c.agent.self()["DebugConfig"]["ServerPort"]
    assert rpc_port > 0
    _, services = c.catalog.services()
    assert "consul" in services
    _, entries = c.health.service("consul", passing=True)
    assert [(e["Node"]["Node"], e["Service"]["Port"]) for e in entries] == [(NODE, rpc_port)]


# ---------------------------------------------------------------- gRPC checks


def test_grpc_check_follows_the_standard_health_service(c, services):
    """A gRPC check against grpcio's own grpc.health.v1 server (an independent peer)."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("billing", health_pb2.HealthCheckResponse.SERVING)
        name = uniq("grpc-svc")
        check = consul.Check.grpc(f"127.0.0.1:{port}/billing", "200ms")
        assert c.agent.service.register(name, port=port, check=check)
        services.append(name)
        check_id = f"service:{name}"
        wait_status(c, check_id, "passing")
        servicer.set("billing", health_pb2.HealthCheckResponse.NOT_SERVING)
        wait_status(c, check_id, "critical")
        servicer.set("billing", health_pb2.HealthCheckResponse.SERVING)
        wait_status(c, check_id, "passing")

        unknown = uniq("grpc-unknown")
        check = consul.Check.grpc(f"127.0.0.1:{port}/no-such-service", "200ms")
        assert c.agent.service.register(unknown, port=port, check=check)
        services.append(unknown)
        # grpc.health.v1 answers NOT_FOUND for an unknown service: no message.
        wait_until(
            lambda: "gRPC check" in c.agent.checks()[f"service:{unknown}"]["Output"],
            "the unknown-service probe to run",
        )
        assert check_status(c, f"service:{unknown}") == "critical"
    finally:
        server.stop(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(args, log):
    """Starts `mesh proxy ARGS` against the agent, stderr to *log*; returns
    the process, its stdout readable line by line."""
    mesh = os.environ.get("MESH_BIN")
    assert mesh, "run this through tests/compat/run.sh, which sets MESH_BIN"
    env = dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{HTTP_PORT}")
    proc = subprocess.Popen(
        [mesh, "proxy", *args], stdout=subprocess.PIPE, stderr=log, env=env, text=True
    )
    return proc


def wait_line(proc, marker: str) -> str:
    """The rest of the first stdout line of *proc* containing *marker*."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the proxy exited before printing {marker!r}")
        if marker in line:
            return line.split(marker, 1)[1].strip()
    pytest.fail(f"no {marker!r} line within {DEADLINE}s")


def test_grpc_crosses_the_mesh(c, services):
    """grpcio's client calls grpcio's health server through two mesh sidecars:
    service-defaults says grpc, so the proxies carry HTTP/2 requests (h2c from
    the client, mTLS with ALPN h2 between the sidecars, h2c to the server)."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    procs = []
    try:
        name = uniq("grpcmesh")
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        defaults = {"Kind": "service-defaults", "Name": name, "Protocol": "grpc"}
        assert c.http.put(CB.boolean(), "/v1/config", data=json.dumps(defaults))
        body = {
            "ID": name,
            "Name": name,
            "Port": port,
            "Connect": {"SidecarService": {"Port": free_port(),
                                           "Proxy": {"Config": {"bind_address": "127.0.0.1"}}}},
        }
        assert c.http.put(CB.boolean(), "/v1/agent/service/register", data=json.dumps(body))
        services.append(name)
        services.append(f"{name}-sidecar-proxy")
        log = tempfile.TemporaryFile(mode="w+")
        sidecar = start_proxy(["-sidecar-for", name], log)
        procs.append(sidecar)
        wait_line(sidecar, "Public listener:")
        metrics = free_port()
        client = start_proxy(
            ["-service", "web", "-upstream", f"{name}:0", "-metrics-addr", f"127.0.0.1:{metrics}"],
            log,
        )
        procs.append(client)
        upstream = wait_line(client, f"Upstream {name}:")

        def serving():
            with grpc.insecure_channel(upstream) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
                except grpc.RpcError:
                    return None
                return reply.status == health_pb2.HealthCheckResponse.SERVING

        assert wait_until(serving, "a gRPC call through the sidecars")
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        with grpc.insecure_channel(upstream) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(20):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # A gRPC error status crosses the mesh as the server sent it.
            with pytest.raises(grpc.RpcError) as err:
                stub.Check(health_pb2.HealthCheckRequest(service="no-such-service"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # The calls were carried as HTTP/2 requests (L7), not as opaque bytes.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("mesh_proxy_requests_total{")
            and f'upstream="{name}"' in line
            and 'direction="outbound"' in line
        )
        assert counted >= 21, text
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=15)
        server.stop(0)


# ---------------------------------------------------------------- connect


def test_connect_ca_roots_and_configuration(c):
    roots = c.connect.ca.roots()
    assert roots["TrustDomain"].endswith(".consul")
    active = [r for r in roots["Roots"] if r["Active"]]
    assert len(active) == 1 and active[0]["ID"] == roots["ActiveRootID"]
    assert "BEGIN CERTIFICATE" in active[0]["RootCert"]
    conf = c.connect.ca.configuration()
    assert conf["Provider"] == "consul"
    assert conf["Config"]["LeafCertTTL"] == "72h"
    # Changing only the leaf TTL keeps the root.
    assert c.connect.ca.update_configuration("consul", {"LeafCertTTL": "48h"}) is True
    assert c.connect.ca.configuration()["Config"]["LeafCertTTL"] == "48h"
    assert c.connect.ca.roots()["ActiveRootID"] == roots["ActiveRootID"]
    with pytest.raises(consul.ConsulException):
        c.connect.ca.update_configuration("consul", {"LeafCertTTL": "soon"})


def test_intentions_exact_match_check_and_delete(c):
    dst = uniq("ixn-dst")
    assert c.connect.intentions.check("web", dst) is True
    assert c.connect.intentions.upsert("web", dst, action="deny", description="no") is True
    assert c.connect.intentions.upsert("*", dst, action="allow") is True
    try:
        assert c.connect.intentions.check("web", dst) is False
        assert c.connect.intentions.check("api", dst) is True
        one = c.connect.intentions.read("web", dst)
        assert (one["SourceName"], one["DestinationName"], one["Action"], one["Precedence"]) == (
            "web",
            dst,
            "deny",
            9,
        )
        matched = c.connect.intentions.match("destination", dst)[dst]
        assert [(i["SourceName"], i["Precedence"]) for i in matched] == [("web", 9), ("*", 8)]
        listed = [i for i in c.connect.intentions.list() if i["DestinationName"] == dst]
        assert len(listed) == 2
        entry = c.config.get("service-intentions", dst)
        assert {s["Name"] for s in entry["Sources"]} == {"web", "*"}
    finally:
        assert c.connect.intentions.delete("web", dst) is True
        assert c.connect.intentions.delete("*", dst) is True
    assert c.connect.intentions.check("web", dst) is True


def test_config_entries_with_cas(c):
    name = uniq("cfg-dst")
    body = {"Sources": [{"Name": "web", "Action": "allow"}]}
    assert c.config.set("service-intentions", name, body, cas=0) is True
    assert c.config.set("service-intentions", name, body, cas=0) is False
    entry = c.config.get("service-intentions", name)
    assert entry["Sources"][0]["Precedence"] == 9
    idx = entry["ModifyIndex"]
    assert name in [e["Name"] for e in c.config.list("service-intentions")]
    assert c.config.delete("service-intentions", name, cas=idx + 1000) is False
    assert c.config.delete("service-intentions", name, cas=idx) is True
    # py-consul maps Consul's 404 for a missing entry to None.
    assert c.config.get("service-intentions", name) is None
