"""ferry in Kubernetes mode, end to end: the real ferry binary follows the
simulated API server (kapisim, TLS + bearer token from a kubelet-style
service-account directory) and routes NodePort connections to real
backends (one `ferry-bench serve --mode http` per pod, each on its own
127.0.0.x address, the address the EndpointSlice names).

What is checked is what a client sees: which pod answers, and that no
connection fails where none may. Continuous load is a thread making
connections one after another (bounded in count and time) and counting
failures. The admin server's /readyz says when ferry serves and /status
when a table is in force; every wait is a poll with a deadline.

Run: /usr/bin/python3 -m pytest tests/integration/test_kube_e2e.py
Binaries: $FERRY_BIN, $FERRY_BENCH_BIN (default build/...). kubectl from
PATH for the kubectl test (skipped without it).
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest as ft  # noqa: E402
import kubetest as kt  # noqa: E402
from ferrytest import wait_for  # noqa: E402
from kapisim_client import make_ca_and_cert, start_sim  # noqa: E402
from kubetest import (Held, Load, ask, ep, put_slice, svc_obj,  # noqa: E402
                      wait_answers)

WEB = "default/web:http"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
ADMIN_TOKEN = "tok-admin-e2e"
FERRY_TOKEN = "tok-ferry-one"
FERRY_TOKEN2 = "tok-ferry-two"
READER = "get,list,watch:*"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI for the sim's TLS certificate")
    return make_ca_and_cert(str(tmp_path_factory.mktemp("pki")))


class Env:
    """One scenario's world: a sim, pods, one ferry, clients. Everything
    is stopped by close() (ferry by the start_ferry fixture)."""

    def __init__(self, tmp_path, pki, start_ferry, vip_interface="none"):
        self.tmp = tmp_path
        self.vip_interface = vip_interface
        self._start_ferry = start_ferry
        self.sim = start_sim(
            str(tmp_path), tls=pki,
            tokens={ADMIN_TOKEN: "admin",
                    FERRY_TOKEN: "ferry " + READER},
            bookmark_interval=0.5, service_cidr=kt.service_cidr())
        self.sa = kt.ServiceAccount(tmp_path / "sa", self.sim.ca_file,
                                    FERRY_TOKEN)
        self.admin = kt.Admin(ft.free_addr())
        self.ferry = None
        self.all_pods = []
        self.loads = []
        self.held = []
        self.nodeports = set()

    # -- parts

    def pods(self, names, first_ip=2, ips=None):
        p = kt.start_pods(names, self.tmp, first_ip, ips)
        self.all_pods += p.values()
        return p

    def nodeport(self):
        np = kt.node_port(self.nodeports)
        self.nodeports.add(np)
        return np

    def start_ferry(self, ready=True, extra=None, **kw):
        """Start ferry; <extra>: more top-level config keys (a dict); <kw>
        to ferrytest.Ferry (prefix, ...)."""
        text = kt.kube_config(self.sim.url, self.sa.path, self.admin.addr,
                              vip_interface=self.vip_interface)
        if extra:
            text += ft.to_yaml(extra) + "\n"
        self.ferry = self._start_ferry(text, wait=False, **kw)
        if ready:
            self.admin.wait_ready(self.ferry)
        return self.ferry

    def load(self, addr):
        lo = Load(addr)
        self.loads.append(lo)
        lo.start()
        lo.wait_more(5, "load started")
        return lo

    def hold(self, addr):
        """A Held connection, opened once ferry has no other open one on
        web (so that held_backend() finds the right backend)."""
        wait_for(lambda: (self.admin.service(WEB) or {}).get(
            "counters", {}).get("active") == 0, kt.dl(10),
            "no open connection on %s" % WEB)
        h = Held(addr)
        self.held.append(h)
        return h

    def web(self, pods, ready_names=None, np=None, annotations=None):
        """Service web (NodePort) and its slice web-1 with <pods>; returns
        the NodePort address."""
        np = np or self.nodeport()
        obj = svc_obj("web", [("http", 80, np)])
        if annotations:
            obj["metadata"]["annotations"] = annotations
        self.sim.create("services", obj)
        port = next(iter(pods.values())).port
        put_slice(self.sim, "web-1", "web",
                  [ep(p) for n, p in pods.items()
                   if ready_names is None or n in ready_names], port)
        return "127.0.0.1:%d" % np

    def requests(self, path=None, **match):
        return [r for r in self.sim.requests()
                if (path is None or r["path"] == path)
                and all(r.get(k) == v for k, v in match.items())]

    def close(self):
        for h in self.held:
            h.close()
        for lo in self.loads:
            lo.stopping.set()
        for lo in self.loads:
            lo.join(kt.dl(15))
        for p in self.all_pods:
            p.stop()
        self.sim.stop()


@pytest.fixture
def env(tmp_path, pki, start_ferry):
    e = Env(tmp_path, pki, start_ferry)
    try:
        yield e
    finally:
        e.close()


def held_backend(admin, svc=WEB):
    """The name of the only backend of <svc> with an open connection."""
    s = admin.service(svc)
    if s is None or s["counters"]["active"] != 1:
        return None
    busy = [b["name"] for b in s["backends"] if b["active"] > 0]
    return busy[0] if len(busy) == 1 else None


def settled(load, names, n=None):
    """Let the load make n more connections and check that all of them,
    except the one that may have been in flight already, were answered by
    exactly <names>."""
    n = n or 3 * len(names)
    mark = load.wait_more(n + 1)
    got = load.since(mark + 1)
    assert set(got) == set(names), load.report()


# ------------------------------------------------------------- the sync


def test_serves_only_after_first_full_sync(env):
    """Point 5: with EndpointSlices failing to list, ferry is not ready and
    serves nothing (not even the Services it has listed); once both kinds
    are listed it serves them."""
    pods = env.pods(["pod-1"])
    addr = env.web(pods)
    env.sim.fault(action="fail", path=SLICES, watch=False, status=500,
                  count=-1)
    f = env.start_ferry(ready=False)
    wait_for(lambda: len(env.requests(SLICES, status=500)) >= 2, kt.dl(15),
             "two failed EndpointSlice lists")
    assert env.requests("/api/v1/services", status=200, watch=False)
    st, body = env.admin.readyz()
    assert st == 503 and "not ready" in body, (st, body)
    assert ft.is_refused(addr), "NodePort served before the first sync"
    assert env.admin.metric("ferry_ready") == 0
    env.sim.clear_faults()
    env.admin.wait_ready(f)
    assert ask(addr) == "pod-1"
    f.wait_log("first full sync")


# ------------------------------------------------------------ routing


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl not on PATH")
def test_kubectl_create_change_delete_route(env):
    """Services and slices created, changed and deleted with kubectl (and
    the sim's API) route connections to the right pods, and only them."""
    k = kt.Kubectl(env.sim, env.tmp, ADMIN_TOKEN)
    pods = env.pods(["pod-1", "pod-2", "pod-3", "pod-4"])
    port = pods["pod-1"].port
    web_np, api_np = env.nodeport(), env.nodeport()
    out = k.apply_obj("create", svc_obj("web", [("http", 80, web_np)]))
    assert "service/web created" in out
    out = k.apply_obj("create", kt.slice_obj(
        "web-1", "web", [ep(pods["pod-1"]), ep(pods["pod-2"])], port))
    assert "web-1 created" in out
    env.sim.create("services", svc_obj("api", [("http", 8080, api_np)]))
    put_slice(env.sim, "api-1", "api", [ep(pods["pod-3"])], port)
    env.start_ferry()
    web, api = "127.0.0.1:%d" % web_np, "127.0.0.1:%d" % api_np
    wait_answers(web, ["pod-1", "pod-2"])
    wait_answers(api, ["pod-3"])

    # The slice changes: pod-1 goes, pod-4 comes.
    out = k.apply_obj("replace", kt.slice_obj(
        "web-1", "web", [ep(pods["pod-2"]), ep(pods["pod-4"])], port))
    assert "web-1 replaced" in out
    wait_answers(web, ["pod-2", "pod-4"])

    # The Service changes: a new NodePort; the old one stops listening.
    svc = json.loads(k.run("get", "service", "web", "-o", "json"))
    new_np = env.nodeport()
    svc["spec"]["ports"][0]["nodePort"] = new_np
    assert "service/web replaced" in k.apply_obj("replace", svc)
    web2 = "127.0.0.1:%d" % new_np
    wait_answers(web2, ["pod-2", "pod-4"])
    wait_for(lambda: ft.is_refused(web), kt.dl(15), "old NodePort closed")

    # The slice is deleted: the Service stays, with nothing behind it.
    assert "deleted" in k.run("delete", "endpointslice", "web-1")
    env.admin.wait_backends(WEB, [])
    assert ft.rejected_how(web2, kt.dl(5)) in ("reset", "eof")

    # The Service is deleted: its port closes; the other one is untouched.
    assert 'service "web" deleted' in k.run("delete", "service", "web")
    env.admin.wait_backends(WEB, None)
    wait_for(lambda: ft.is_refused(web2), kt.dl(15), "NodePort closed")
    assert kt.ask_many(api, 3) == ["pod-3"] * 3


def test_not_ready_and_removal_keep_open_connections(env):
    """A pod turning not ready gets no new connections while its open one
    keeps working; deleting the slice and the Service does not cut an
    open connection either (point 5)."""
    pods = env.pods(["pod-1", "pod-2", "pod-3"])
    addr = env.web(pods)
    env.start_ferry()
    wait_answers(addr, pods)

    h = env.hold(addr)
    victim = wait_for(lambda: held_backend(env.admin), kt.dl(10),
                      "the held connection's backend")
    others = [n for n in pods if n != victim]
    put_slice(env.sim, "web-1", "web",
              [ep(p, ready=(n != victim)) for n, p in pods.items()],
              pods[victim].port)
    env.admin.wait_backends(WEB, others)
    got = kt.ask_many(addr, 3 * len(others))
    assert set(got) == set(others), got
    assert h.finish() == victim

    # Removal: the slice, then the Service, go while a connection is open.
    h2 = env.hold(addr)
    holder = wait_for(lambda: held_backend(env.admin), kt.dl(10),
                      "the second held connection's backend")
    assert holder in others
    env.sim.delete("endpointslices", "web-1")
    env.admin.wait_backends(WEB, [])
    env.sim.delete("services", "web")
    env.admin.wait_backends(WEB, None)
    wait_for(lambda: ft.is_refused(addr), kt.dl(15), "NodePort closed")
    assert h2.finish() == holder


def test_drain_timeout_annotation_bounds_a_removed_endpoint(env):
    """README "Removing a backend": with ferry.dev/drain-timeout, an
    endpoint gone from the EndpointSlice keeps its open connection that
    long at most; then it is reset and counted."""
    import admintest as at
    pods = env.pods(["pod-1", "pod-2"])
    addr = env.web(pods, annotations={"ferry.dev/drain-timeout": "300ms"})
    env.start_ferry()
    wait_answers(addr, pods)
    h = env.hold(addr)
    victim = wait_for(lambda: held_backend(env.admin), kt.dl(10),
                      "the held connection's backend")
    others = [n for n in pods if n != victim]
    put_slice(env.sim, "web-1", "web", [ep(pods[n]) for n in others],
              pods[victim].port)
    assert ft.closed_how(h.sock, kt.dl(10)) == "reset"
    assert at.sample(at.scrape(env.admin.addr), "ferry_drain_closed_total",
                     service=WEB) == 1
    assert set(kt.ask_many(addr, 2)) == set(others)


def test_rolling_update_loses_no_connection(env):
    """A1..A3 ready -> B1..B3 added -> A not ready (terminating) -> A's
    slice deleted and A's pods stopped, under continuous connections:
    none fails, and B serves at the end."""
    a_names = ["a-1", "a-2", "a-3"]
    b_names = ["b-1", "b-2", "b-3"]
    pods = env.pods(a_names + b_names)
    port = pods["a-1"].port
    a = {n: pods[n] for n in a_names}
    b = {n: pods[n] for n in b_names}
    addr = env.web(a)
    env.start_ferry()
    wait_answers(addr, a_names)
    load = env.load(addr)

    put_slice(env.sim, "web-2", "web", [ep(p) for p in b.values()], port)
    env.admin.wait_backends(WEB, a_names + b_names)
    settled(load, a_names + b_names, 30)

    put_slice(env.sim, "web-1", "web",
              [ep(p, ready=False, serving=True, terminating=True)
               for p in a.values()], port)
    env.admin.wait_backends(WEB, b_names)
    settled(load, b_names, 30)

    env.sim.delete("endpointslices", "web-1")
    for p in a.values():
        p.stop()
    settled(load, b_names, 30)
    load.stop()
    assert not load.failures, load.report()
    assert set(load.names) == set(a_names + b_names), load.report()


def test_scale_3_to_1_to_3(env):
    """Scaling down to one pod and back, under continuous connections."""
    names = ["pod-1", "pod-2", "pod-3"]
    pods = env.pods(names)
    port = pods["pod-1"].port
    addr = env.web(pods)
    env.start_ferry()
    wait_answers(addr, names)
    load = env.load(addr)

    put_slice(env.sim, "web-1", "web", [ep(pods["pod-1"])], port)
    env.admin.wait_backends(WEB, ["pod-1"])
    settled(load, ["pod-1"], 6)

    put_slice(env.sim, "web-1", "web", [ep(p) for p in pods.values()], port)
    env.admin.wait_backends(WEB, names)
    settled(load, names)
    load.stop()
    assert not load.failures, load.report()


def test_a_change_translates_only_its_service(env):
    """README: a change translates only the Services it touched. With
    three Services served, a new slice for one of them is translated
    alone (ferry_api_services_translated_total grows by one), and the
    Services that did not change are still served."""
    names = ["pod-1", "pod-2", "pod-3"]
    pods = env.pods(names)
    port = pods["pod-1"].port
    addr = env.web(pods)
    api_np = env.nodeport()
    env.sim.create("services", svc_obj("api", [("http", 8080, api_np)]))
    put_slice(env.sim, "api-1", "api", [ep(p) for p in pods.values()], port)
    env.sim.create("services", svc_obj("noise", [("http", 80, env.nodeport())]))
    env.start_ferry()
    wait_answers(addr, names)
    api = "127.0.0.1:%d" % api_np
    wait_answers(api, names)
    first = env.admin.metric("ferry_api_services_translated_total")
    assert first is not None and first >= 3, first
    gen = env.admin.metric("ferry_table_generation")

    put_slice(env.sim, "web-1", "web", [ep(pods["pod-1"])], port)
    env.admin.wait_backends(WEB, ["pod-1"])
    wait_for(lambda: env.admin.metric("ferry_table_generation") > gen,
             kt.dl(10), "a new table")
    wait_for(lambda: env.admin.metric(
        "ferry_api_services_translated_total") > first, kt.dl(10),
        "the change translated")
    assert env.admin.metric("ferry_api_services_translated_total") \
        == first + 1
    wait_answers(api, names)
    # The same slice changed again: its Service is patched into the table
    # in force.
    patched = env.admin.metric("ferry_api_tables_patched_total")
    assert patched is not None
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-2"])], port)
    env.admin.wait_backends(WEB, ["pod-2"])
    wait_for(lambda: env.admin.metric("ferry_api_tables_patched_total")
             > patched, kt.dl(10), "the change patched")
    assert env.admin.metric("ferry_api_services_translated_total") \
        == first + 2
    wait_answers(api, names)
    # The CPU the changes took, by part: each part has counted some, and
    # the next change adds to the API's and the tables' parts.
    parts = ("api", "tables", "workers")

    def cpu(part):
        return env.admin.metric('ferry_control_cpu_seconds_total{part="%s"}'
                                % part)
    before = {p: cpu(p) for p in parts}
    assert all(v is not None and v > 0 for v in before.values()), before
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-1"])], port)
    env.admin.wait_backends(WEB, ["pod-1"])
    for p in ("api", "tables"):
        wait_for(lambda: cpu(p) > before[p], kt.dl(10),
                 "the change's CPU counted in part %s" % p)


def test_idle_kubernetes_services_write_no_series(env):
    """README (Metrics): a Kubernetes Service's per-service series appear
    once it has had a connection; an idle one writes none."""
    pods = env.pods(["pod-1"])
    addr = env.web(pods)
    idle_np = env.nodeport()
    env.sim.create("services", svc_obj("idle", [("http", 80, idle_np)]))
    put_slice(env.sim, "idle-1", "idle", [ep(pods["pod-1"])],
              pods["pod-1"].port)
    env.start_ferry()
    wait_answers(addr, ["pod-1"])
    env.admin.wait_backends("default/idle:http", ["pod-1"])
    label = 'service="%s"'
    st, body = env.admin.get("/metrics")
    assert st == 200
    assert (label % WEB) in body
    assert (label % "default/idle:http") not in body
    # A connection to it makes it appear.
    assert ask("127.0.0.1:%d" % idle_np) == "pod-1"
    wait_for(lambda: (label % "default/idle:http")
             in env.admin.get("/metrics")[1], kt.dl(10),
             "the idle Service's series after a connection")


# ------------------------------------------------------------- the API


def test_api_outage_keeps_serving_and_converges(env):
    """Point 5: the API server goes away; ferry keeps serving the last
    table, says so in its log and stays ready; when the server is back a
    change is applied, and neither an established connection nor the
    continuous load loses anything."""
    names = ["pod-1", "pod-2", "pod-3"]
    pods = env.pods(names)
    addr = env.web(pods, ready_names=["pod-1", "pod-2"])
    f = env.start_ferry()
    wait_answers(addr, ["pod-1", "pod-2"])
    h = env.hold(addr)
    holder = wait_for(lambda: held_backend(env.admin), kt.dl(10),
                      "the held connection's backend")
    load = env.load(addr)

    off = f.log_size()
    env.sim.stop()
    f.wait_log(r"lost the API server; keeping the last table", off,
               kt.dl(20))
    assert env.admin.readyz()[0] == 200
    settled(load, ["pod-1", "pod-2"])

    env.sim.start()
    put_slice(env.sim, "web-1", "web",
              [ep(pods["pod-2"]), ep(pods["pod-3"])], pods["pod-1"].port)
    env.admin.wait_backends(WEB, ["pod-2", "pod-3"])
    f.wait_log(r"API server reachable again", off)
    settled(load, ["pod-2", "pod-3"])
    assert h.finish() == holder
    load.stop()
    assert not load.failures, load.report()


def _cut(env):
    env.restarts = env.admin.metric("ferry_api_watch_restarts_total") or 0
    off = env.ferry.log_size()
    env.sim.fault(action="end_watches", mode="abort")
    env.ferry.wait_log(r"endpointslices watch broke", off, kt.dl(15))
    # The restart shows in /metrics before any change is published.
    wait_for(lambda: (env.admin.metric("ferry_api_watch_restarts_total")
                      or 0) > env.restarts,
             timeout=kt.dl(10), what="watch restart counted in /metrics")


def _cut_check(env):
    assert env.admin.metric("ferry_api_watch_restarts_total") > env.restarts


def _restart(env):
    env.sim.restart()


def _compaction(env):
    """The watches fail (500) while the change happens and history is
    compacted past it: the re-watch from the old resourceVersion gets the
    410 ERROR event and ferry relists."""
    before = env.admin.metric("ferry_api_relists_total") or 0
    # An event first, so that the end of the slices watch is a normal one
    # (resumed at once) rather than "ended at once with no event" (relist).
    put_slice(env.sim, "noise-1", "noise", [], 80)
    env.sim.fault(action="fail", path=SLICES, watch=True, status=500,
                  count=-1)
    env.sim.fault(action="end_watches")
    wait_for(lambda: env.requests(SLICES, watch=True, status=500),
             kt.dl(15), "a refused EndpointSlice watch")
    env.change()
    rev = int(env.sim.state()["revision"])
    env.sim.fault(action="compact", revision=rev)
    env.sim.clear_faults()
    env.ferry.wait_log(r"watch expired", 0, kt.dl(20))
    wait_for(lambda: env.admin.metric("ferry_api_relists_total") > before,
             kt.dl(15), "a relist")


def _too_many(env):
    env.sim.fault(action="fail", watch=True, status=429, retryAfter=1,
                  format="text", count=2)
    env.sim.fault(action="end_watches")
    env.ferry.wait_log(r"watch \S+: HTTP 429", 0, kt.dl(15))
    assert env.requests(watch=True, status=429)


def _rotate(env):
    """The kubelet rotates the token file and the old token stops working
    at the same moment."""
    env.sa.rotate(FERRY_TOKEN2)
    env.sim.set_tokens({ADMIN_TOKEN: "admin",
                        FERRY_TOKEN2: "ferry2 " + READER})
    env.sim.fault(action="end_watches")


def _rotate_check(env):
    env.sim.fault(action="end_watches")
    wait_for(lambda: env.requests(user="ferry2", status=200), kt.dl(15),
             "a request with the rotated token")
    log = env.ferry.log_text()
    assert FERRY_TOKEN not in log and FERRY_TOKEN2 not in log


def _unauthorized(env):
    """The server refuses ferry's token for a while: ferry keeps serving
    the last table and stays ready (within api_failure_grace); once the
    token is accepted again, it catches up with what changed meanwhile."""
    env.sim.set_tokens({ADMIN_TOKEN: "admin"})
    env.sim.fault(action="end_watches")
    env.ferry.wait_log(r"401 Unauthorized", 0, kt.dl(15))
    env.change()
    assert env.admin.readyz()[0] == 200
    settled(env.loads[0], ["pod-1", "pod-2"])
    env.sim.set_tokens({ADMIN_TOKEN: "admin",
                        FERRY_TOKEN: "ferry " + READER})


FAULTS = {
    "watch_cut": (_cut, _cut_check),
    "api_restart": (_restart, None),
    "compaction_410": (_compaction, None),
    "429_retry_after": (_too_many, None),
    "rotated_token": (_rotate, _rotate_check),
    "401": (_unauthorized, None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_api_fault_survived(env, fault):
    """Each API fault is survived: the load never fails, and a change made
    after (or during) the fault is served at the end."""
    inject, check = FAULTS[fault]
    names = ["pod-1", "pod-2", "pod-3"]
    pods = env.pods(names)
    addr = env.web(pods, ready_names=["pod-1", "pod-2"])
    env.start_ferry()
    wait_answers(addr, ["pod-1", "pod-2"])
    load = env.load(addr)
    changed = []

    def change():
        if not changed:
            put_slice(env.sim, "web-1", "web",
                      [ep(pods["pod-2"]), ep(pods["pod-3"])],
                      pods["pod-1"].port)
            changed.append(1)
    env.change = change

    inject(env)
    change()
    env.admin.wait_backends(WEB, ["pod-2", "pod-3"])
    settled(load, ["pod-2", "pod-3"])
    if check is not None:
        check(env)
    load.stop()
    assert not load.failures, load.report()


# ------------------------------------------------------- malformed objects


def _inject_state(sim, services=(), slices=()):
    """Stop the sim, add objects to its state file as they are (no
    validation: a corrupt store or a newer server's objects), bump the
    revision, start it again."""
    sim.stop()
    with open(sim.state_file) as fh:
        st = json.load(fh)
    rev = int(st["revision"])
    for plural, objs in (("services", services), ("endpointslices", slices)):
        for o in objs:
            rev += 1
            o.setdefault("metadata", {})["resourceVersion"] = str(rev)
            st["objects"].setdefault(plural, []).append(o)
    st["revision"] = rev
    tmp = sim.state_file + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(st, fh)
    os.replace(tmp, sim.state_file)
    sim.start()


def _bad_objects(tag, pods, port):
    bad_svcs = [
        {"metadata": {"name": "bad-spec-" + tag, "namespace": "default",
                      "uid": "u1" + tag},
         "spec": {"type": 7, "clusterIP": 42,
                  "ports": [{"name": 5, "port": "eighty"}]}},
        {"metadata": {"name": "bad-ip-" + tag, "namespace": "default"},
         "spec": {"type": "NodePort", "clusterIP": "999.1.2.3",
                  "ports": [{"name": "http", "port": 80, "nodePort": 5}]}},
        {"metadata": {"name": "no-ns-" + tag},
         "spec": {"clusterIP": "198.18.250.1", "ports": {}}},
    ]
    bad_slices = [
        # a second slice for web, broken in every field
        {"metadata": {"name": "web-bad-" + tag, "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "endpoints": {"addresses": "x"},
         "ports": [{"name": "http", "port": "eighty"}]},
        {"metadata": {"name": "web-junk-" + tag, "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": ["not-an-ip"]}, {"addresses": []},
                       {"conditions": {"ready": True}}, 7],
         "ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
    ]
    return bad_svcs, bad_slices


def test_malformed_objects_are_skipped(env):
    """Malformed Services and EndpointSlices in the API's lists (first
    sync, and a relist after the server comes back with more of them) are
    skipped; everything else is served and later changes still apply."""
    names = ["pod-1", "pod-2", "pod-3"]
    pods = env.pods(names)
    port = pods["pod-1"].port
    addr = env.web(pods, ready_names=["pod-1"])
    other_np = env.nodeport()
    env.sim.create("services", svc_obj("other", [("http", 81, other_np)]))
    put_slice(env.sim, "other-1", "other", [ep(pods["pod-2"])], port)
    other = "127.0.0.1:%d" % other_np
    _inject_state(env.sim, *_bad_objects("a", pods, port))

    f = env.start_ferry()
    wait_answers(addr, ["pod-1"])
    wait_answers(other, ["pod-2"])
    assert "skipping" in f.log_text()
    names_in_table = [s["name"] for s in env.admin.status()["services"]]
    assert not [n for n in names_in_table if "bad" in n or "no-ns" in n]

    # A watch event after the sync is still applied.
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-1"]), ep(pods["pod-3"])],
              port)
    wait_answers(addr, ["pod-1", "pod-3"])

    # The server comes back with more malformed objects (and a newer
    # revision: ferry's watch gets 410 and relists).
    load = env.load(addr)
    _inject_state(env.sim, *_bad_objects("b", pods, port))
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-3"])], port)
    env.admin.wait_backends(WEB, ["pod-3"])
    settled(load, ["pod-3"])
    wait_answers(other, ["pod-2"])
    load.stop()
    assert not load.failures, load.report()


# ------------------------------------------- skipped objects: counted, logged


SKIP_LOG_BURST = 5  # watcher/skip.h: lines per reason and window


def _skips(admin):
    """ferry_api_objects_skipped_total by (kind, reason)."""
    st, body = admin.get("/metrics")
    assert st == 200, (st, body)
    rx = re.compile(r'^ferry_api_objects_skipped_total\{kind="([^"]*)",'
                    r'reason="([^"]*)"\} (\d+)$')
    out = {}
    for ln in body.splitlines():
        m = rx.match(ln)
        if m:
            out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


def _wait_skips(admin, want):
    """Wait until the counters include <want> ({(kind, reason): n})."""
    def ok():
        got = _skips(admin)
        return all(got.get(k) == n for k, n in want.items())
    wait_for(ok, kt.dl(15), "skip counters %s" % want)
    return _skips(admin)


def _bad_but_decodable(pods, port):
    """Objects the API would refuse (port 0, 70000, protocol FOO, an
    endpoint address that is no IP) and one kube-proxy ignores without a
    word (ExternalName)."""
    ips = iter(range(10, 20))

    def svc(name, ports, **spec):
        s = {"clusterIP": "198.18.250.%d" % next(ips), "ports": ports}
        s.update(spec)
        return {"metadata": {"name": name, "namespace": "default"},
                "spec": s}
    services = [
        svc("zero-port", [{"name": "http", "port": 0, "protocol": "TCP"}]),
        svc("big-port", [{"name": "http", "port": 70000}]),
        svc("odd-proto", [{"name": "x", "port": 80, "protocol": "FOO"}]),
        svc("assoc", [{"name": "s", "port": 53, "protocol": "SCTP"}]),
        {"metadata": {"name": "ext", "namespace": "default"},
         "spec": {"type": "ExternalName", "externalName": "example.org"}},
    ]
    slices = [
        {"metadata": {"name": "web-bad", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4",
         "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["not-an-ip"]}, ep(pods["pod-2"])]},
    ]
    return services, slices


def test_skipped_objects_counted_and_logged_once(env):
    """Objects ferry does not serve are counted in /metrics by kind and
    reason and logged once each, with kind, namespace/name and reason;
    the rest of each object and of the table is served. Quiet reasons
    (ExternalName) are counted but not logged at info level. A watch line
    of 1 MiB of nested arrays, or one over the line cap, is refused
    without stalling the watch; a storm of undecodable lines is counted
    in full but logged only a few times."""
    pods = env.pods(["pod-1", "pod-2", "pod-3"])
    port = pods["pod-1"].port
    addr = env.web(pods, ready_names=["pod-1"])
    _inject_state(env.sim, *_bad_but_decodable(pods, port))
    f = env.start_ferry()
    # pod-2 comes from the slice with the bad endpoint: its good one.
    wait_answers(addr, ["pod-1", "pod-2"])
    want = {("Service", "bad_port"): 2, ("Service", "bad_protocol"): 1,
            ("Service", "unsupported_protocol"): 1,
            ("Service", "external_name"): 1,
            ("EndpointSlice", "bad_address"): 1}
    _wait_skips(env.admin, want)
    log = f.log_text()
    zero = re.findall(r'warn +watcher: skipping Service default/zero-port: '
                      r'port "http": 0 not in 1-65535 \(bad_port\)', log)
    assert len(zero) == 1, log
    assert len(re.findall(r"skipping Service default/big-port: .*"
                          r"\(bad_port\)", log)) == 1, log
    assert len(re.findall(r"skipping EndpointSlice default/web-bad: "
                          r'endpoints\[0\]: address "not-an-ip".*'
                          r"\(bad_address\)", log)) == 1, log
    assert len(re.findall(r'info +watcher: skipping Service default/assoc: '
                          r'port "s": the proxy serves no SCTP \(the '
                          r'nftables dataplane does\) '
                          r'\(unsupported_protocol\)', log)) == 1, log
    assert "default/ext" not in log, log  # quiet: debug level only

    # A change rebuilds the table: nothing new is counted or logged.
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-3"])], port)
    wait_answers(addr, ["pod-2", "pod-3"])
    assert _skips(env.admin) == want
    assert len(re.findall(r"skipping Service default/zero-port",
                          f.log_text())) == 1

    # 1 MiB of '[' on the EndpointSlice watch: refused at jansson's
    # depth cap, logged, and the next change still applies.
    off = f.log_size()
    env.sim.fault(action="inject", path=SLICES, text="[", repeat=1 << 20)
    f.wait_log(r"skipping EndpointSlice \(unnamed\): bad JSON: maximum "
               r"parsing depth.*\(malformed\)", off, kt.dl(15))
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-1"])], port)
    wait_answers(addr, ["pod-1", "pod-2"])
    want[("EndpointSlice", "malformed")] = 1

    # A line over the 16 MiB cap is dropped unread, counted, and the
    # stream goes on at the next line.
    env.sim.fault(action="inject", path=SLICES, text="x",
                  repeat=(16 << 20) + 1)
    want[("EndpointSlice", "too_large")] = 1
    _wait_skips(env.admin, want)
    put_slice(env.sim, "web-1", "web", [ep(pods["pod-3"])], port)
    wait_answers(addr, ["pod-2", "pod-3"])

    # A storm of 300 undecodable lines on the Service watch: all
    # counted, a few lines logged.
    off = f.log_size()
    env.sim.fault(action="inject", path="/api/v1/services", text="{nope",
                  lines=300)
    want[("Service", "malformed")] = 300
    _wait_skips(env.admin, want)
    lines = re.findall(r"skipping Service .*\(malformed\)",
                       f.log_text(off))
    assert 1 <= len(lines) <= SKIP_LOG_BURST, lines
    wait_answers(addr, ["pod-2", "pod-3"])


def test_file_service_keeps_a_contested_address(env):
    """A service of the file and an API Service claim the same frontend:
    the file's wins, the API Service port is left out whole, counted as a
    conflict and logged once (not at every table change)."""
    pods = env.pods(["pod-1", "pod-2", "pod-3"])
    np = env.nodeport()
    addr = env.web(pods, ready_names=["pod-1"], np=np)
    other_np = env.nodeport()
    env.sim.create("services", svc_obj("other", [("http", 81, other_np)]))
    put_slice(env.sim, "other-1", "other", [ep(pods["pod-2"])],
              pods["pod-2"].port)
    p3 = pods["pod-3"]
    f = env.start_ferry(extra={"services": [{
        "name": "static", "listen": ["0.0.0.0:%d" % np],
        "backends": [{"address": "%s:%d" % (p3.ip, p3.port),
                      "name": "file-pod"}]}]})
    wait_answers("127.0.0.1:%d" % other_np, ["pod-2"])
    wait_answers(addr, ["pod-3"])
    want = {("Service", "conflict"): 1}
    _wait_skips(env.admin, want)
    rx = (r"kubernetes: skipping Service default/web:http: listen address "
          r"0\.0\.0\.0:%d already used by service \"static\" \(conflict\)"
          % np)
    assert len(re.findall(rx, f.log_text())) == 1, f.log_text()
    # Changes to the API side rebuild the merge: nothing new to say.
    put_slice(env.sim, "other-1", "other", [ep(pods["pod-1"])],
              pods["pod-2"].port)
    wait_answers("127.0.0.1:%d" % other_np, ["pod-1"])
    wait_answers(addr, ["pod-3"])
    assert _skips(env.admin) == want
    assert len(re.findall(rx, f.log_text())) == 1, f.log_text()


# ------------------------------------------------- real service addresses


def test_cluster_ip_external_ip_and_local_policy_in_netns(tmp_path, pki,
                                                          start_ferry):
    """In a network namespace of its own (everything in 198.18.0.0/15),
    ferry puts the ClusterIP on an interface and serves it and an
    externalIP; internalTrafficPolicy Local narrows the ClusterIP to this
    node's endpoint while the externalIP keeps all (externalTrafficPolicy
    Cluster); deleting the Service takes its address away."""
    why = kt.netns_missing()
    if why:
        pytest.skip(why)
    ns = kt.Netns()
    try:
        ns.run(lambda: _netns_body(tmp_path, pki, start_ferry, ns),
               kt.dl(90))
    finally:
        ns.delete()


def _netns_body(tmp_path, pki, start_ferry, ns):
    pod_ips = ["198.18.1.2", "198.18.1.3", "198.18.1.4"]
    for ip in pod_ips:
        ns.add_addr(ip + "/32")
    e = Env(tmp_path, pki, start_ferry, vip_interface="auto")
    try:
        names = ["pod-1", "pod-2", "pod-3"]
        pods = e.pods(names, ips=pod_ips)
        ext = "198.18.201.7"
        svc = e.sim.create("services", svc_obj(
            "web", [("http", 80, None)], type="ClusterIP",
            externalIPs=[ext]))
        cip = svc["spec"]["clusterIP"]
        assert cip.startswith("198.18."), cip
        put_slice(e.sim, "web-1", "web",
                  [ep(pods["pod-1"]), ep(pods["pod-2"], node="n2"),
                   ep(pods["pod-3"], node="n2")], pods["pod-1"].port)
        e.start_ferry()
        wait_for(lambda: cip in ns.addrs() and ext in ns.addrs(),
                 kt.dl(15), "ClusterIP and externalIP on lo")
        wait_answers(cip + ":80", names)
        wait_answers(ext + ":80", names)

        svc = e.sim.get("services", "web")
        svc["spec"]["internalTrafficPolicy"] = "Local"
        e.sim.replace("services", svc)
        wait_answers(cip + ":80", ["pod-1"])
        wait_answers(ext + ":80", names)

        e.sim.delete("services", "web")
        wait_for(lambda: cip not in ns.addrs() and ext not in ns.addrs(),
                 kt.dl(15), "service addresses removed")
        assert kt.try_ask(cip + ":80", kt.dl(2)) is None
    finally:
        e.close()


def test_admin_drains_a_kubernetes_backend(env):
    """Runtime control reaches API services, whose names hold slashes
    ("default/web:http"): a drained pod gets no new connections until it
    is enabled again."""
    import urllib.request
    pods = env.pods(["pod-1", "pod-2"])
    addr = env.web(pods)
    env.start_ferry()
    wait_answers(addr, pods)
    _, host, port = ft.parse_addr(env.admin.addr)
    base = "http://%s:%d" % (host, port)

    def post(path):
        req = urllib.request.Request(base + path, data=b"", method="POST",
                                     headers={"X-Ferry-Control": "1"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status

    assert post("/backends/" + WEB + "/pod-1/drain") == 200
    got = kt.ask_many(addr, 6)
    assert set(got) == {"pod-2"}, got
    assert post("/backends/" + WEB + "/pod-1/enable") == 200
    wait_for(lambda: "pod-1" in kt.ask_many(addr, 4), kt.dl(10),
             "pod-1 back in rotation")


def test_udp_service_port_served(env):
    """node.dataplane: proxy (README: "Where ferry differs from
    kube-proxy"): a UDP Service port is a UDP service, here its NodePort
    on the node's addresses, to the endpoints of the slice's UDP port."""
    import socket

    from test_udp import UdpBackend
    backend = UdpBackend("u1")
    try:
        port = int(backend.addr.rsplit(":", 1)[1])
        np = env.nodeport()
        obj = svc_obj("dnsu", [("dns", 53, np)])
        obj["spec"]["ports"][0].update(protocol="UDP", targetPort=port)
        env.sim.create("services", obj)
        sl = kt.slice_obj("dnsu-1", "dnsu", [{
            "addresses": ["127.0.0.1"], "nodeName": kt.NODE,
            "conditions": {"ready": True, "serving": True,
                           "terminating": False}}], port, port_name="dns")
        sl["ports"][0]["protocol"] = "UDP"
        env.sim.create("endpointslices", sl)
        env.start_ferry()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(0.2)

            def answered():
                c.sendto(b"q", ("127.0.0.1", np))
                try:
                    return c.recvfrom(100)[0]
                except socket.timeout:
                    return None
            assert wait_for(answered, kt.dl(15), "a UDP answer") == b"u1:q"
        svc = env.admin.service("default/dnsu:dns")
        assert svc["protocol"] == "udp"
        assert svc["counters"]["udp"]["flows"] == 1
    finally:
        backend.close()


def test_out_of_memory_is_taken_again_and_counted(env):
    """README: memory that runs out while a watch event is taken is not
    the object's fault: ferry (the real binary, its allocations refused
    by a preloaded failsize.so) starts the watch again from the last
    resourceVersion, takes the event, serves the slice, and counts it in
    ferry_out_of_memory_total{part="api"}. The refused allocation is the
    copy of the one watch line of 380-480 KB: a slice of 1,000 endpoints
    with long Pod names."""
    if os.environ.get("FERRY_SANITIZED"):
        pytest.skip("a preloaded allocator cannot come before a sanitizer's")
    build = os.environ.get("FERRY_BUILD_DIR") or os.path.join(
        str(ft.REPO_ROOT), "build")
    so = os.path.join(build, "tests", "tools", "failsize.so")
    assert os.path.exists(so), "build tests/tools/failsize.so first"
    pods = env.pods(["pod-1"])
    env.web(pods)
    env.start_ferry(prefix=["env", "LD_PRELOAD=" + so,
                            "FAILSIZE_MIN=380000", "FAILSIZE_MAX=480000"])
    env.admin.wait_backends(WEB, ["pod-1"])
    port = pods["pod-1"].port
    eps = [{"addresses": ["198.18.%d.%d" % (40 + i // 250, i % 250 + 1)],
            "nodeName": kt.NODE, "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "namespace": "default",
                          "name": "big-%s-%04d" % ("p" * 240, i)}}
           for i in range(1000)]
    put_slice(env.sim, "web-2", "web", eps, port)

    def count(part):
        return env.admin.metric('ferry_out_of_memory_total{part="%s"}'
                                % part)
    wait_for(lambda: count("api") == 1, kt.dl(20),
             "the event refused once for memory")
    wait_for(lambda: (env.admin.service(WEB) or {}).get("backends_total")
             == 1001, kt.dl(20), "the event taken again")
    assert count("tables") == 0 and count("workers") == 0
    log = env.ferry.log_text()
    assert "out of memory while taking an event: watching again from " \
        "resourceVersion" in log, log
    # Not the API server's fault: it was never counted as lost.
    assert "lost the API server" not in log, log
