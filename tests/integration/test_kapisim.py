"""Fidelity tests of the simulated Kubernetes API server (tests/kapisim).

Real clients nobody here wrote (kubectl, python3-kubernetes) talk to it, and
direct protocol checks cover what those clients do not exercise
(selectors, watch, pagination, errors and the simulator described in
tests/kapisim/README.md).

Run: /usr/bin/python3 -m pytest tests/integration/test_kapisim.py
Every wait is a poll with a deadline; processes are stopped by PID.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
from kapisim_client import SimError, make_ca_and_cert, start_sim  # noqa

# The simulator is Python and runs no ferry code: once is enough, in the
# release pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="tests the simulated API server, not the binary under test: "
    "once, in the release pass")

TOKEN = "tok-admin-123"
SVC = "/api/v1/namespaces/default/services"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


# --------------------------------------------------------------- helpers


def wait_for(pred, deadline=10.0, what="condition", step=0.05):
    end = time.monotonic() + deadline
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(step)


def svc_obj(name, labels=None, **spec):
    spec.setdefault("ports", [{"name": "http", "port": 80,
                               "targetPort": 8080}])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec}


def slice_obj(name, svc, addrs=("198.18.1.10",), port=8080):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}}
                          for a in addrs],
            "ports": [{"name": "http", "protocol": "TCP", "port": port}]}


class WatchStream:
    """A raw watch over http.client, read line by line with deadlines."""

    def __init__(self, sim, path, token=True, timeout=10.0):
        u = urllib.parse.urlsplit(sim.url)
        if u.scheme == "https":
            self.conn = http.client.HTTPSConnection(
                u.hostname, u.port, timeout=timeout,
                context=ssl.create_default_context(cafile=sim.ca_file))
        else:
            self.conn = http.client.HTTPConnection(u.hostname, u.port,
                                                   timeout=timeout)
        hdrs = {"Accept": "application/json"}
        tok = sim.token if token is True else token
        if tok:
            hdrs["Authorization"] = "Bearer " + tok
        self.conn.request("GET", path, headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.events = []
        self.eof = False

    def next(self, deadline=5.0):
        """The next event, or None at a clean end of stream."""
        self.conn.sock.settimeout(deadline)
        line = self.resp.readline()
        if not line:
            self.eof = True
            return None
        assert line.endswith(b"\n"), line
        ev = json.loads(line)
        self.events.append(ev)
        return ev

    def until(self, pred, deadline=5.0):
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching event; got %r" %
                                     [(e["type"]) for e in self.events])
            ev = self.next(left)
            if ev is None:
                raise AssertionError("stream ended; got %r" %
                                     [(e["type"]) for e in self.events])
            if pred(ev):
                return ev

    def close(self):
        self.conn.close()


def rv_of(obj):
    return int(obj["metadata"]["resourceVersion"])


# -------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="kapisim-pki-")
    try:
        yield make_ca_and_cert(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tls_sim(tmp_path, pki):
    sim = start_sim(tmp_path, tls=pki, tokens={
        TOKEN: "admin", "tok-reader": "reader list,watch,get:services"},
        bookmark_interval=0.2, endpoints_null_when_empty=False)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def sim(tmp_path):
    sim = start_sim(tmp_path, bookmark_interval=0.2, too_large_wait=0.3)
    try:
        yield sim
    finally:
        sim.stop()


# ---------------------------------------------------------------- kubectl


def _find_kubectl():
    """KAPISIM_KUBECTL (e.g. Debian's 1.20 unpacked somewhere), else the
    kubectl on PATH, else Debian's kubernetes-client unpacked in scratch."""
    path = os.environ.get("KAPISIM_KUBECTL") or shutil.which("kubectl")
    if path:
        return path, None
    scratch = tempfile.mkdtemp(prefix="kapisim-kubectl-")
    try:
        subprocess.run(["apt-get", "download", "kubernetes-client"],
                       cwd=scratch, check=True, capture_output=True,
                       timeout=120)
        deb = [f for f in os.listdir(scratch) if f.endswith(".deb")][0]
        subprocess.run(["dpkg-deb", "-x", deb, "root"], cwd=scratch,
                       check=True, capture_output=True, timeout=60)
        path = os.path.join(scratch, "root", "usr", "bin", "kubectl")
        if os.access(path, os.X_OK):
            return path, None
        return None, "kubernetes-client package holds no usr/bin/kubectl"
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return None, "no kubectl on PATH and apt-get download " \
            "kubernetes-client failed: %s" % e


@pytest.fixture(scope="module")
def kubectl_bin():
    path, why = _find_kubectl()
    if path is None:
        pytest.skip(why)
    return path


class Kubectl:
    def __init__(self, binary, sim, tmp_path, token=TOKEN):
        self.binary = binary
        self.dir = tmp_path
        os.makedirs(tmp_path, exist_ok=True)
        self.kubeconfig = os.path.join(tmp_path, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(
                "apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                "clusters:\n- name: sim\n  cluster:\n"
                "    server: %s\n    certificate-authority: %s\n"
                "contexts:\n- name: sim\n  context: {cluster: sim, user: u, "
                "namespace: default}\n"
                "users:\n- name: u\n  user: {token: %s}\n" % (
                    sim.url, sim.ca_file, token))
        self.cache = os.path.join(tmp_path, "kcache")
        self.env = dict(os.environ, HOME=str(tmp_path))
        self.env.pop("KUBECONFIG", None)

    def argv(self, *args):
        return [self.binary, "--kubeconfig", self.kubeconfig, "--cache-dir",
                self.cache, "--request-timeout", "20s"] + list(args)

    def run(self, *args, check=True, stdin=None):
        p = subprocess.run(self.argv(*args), capture_output=True, text=True,
                           input=stdin, env=self.env, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def background(self, *args):
        # Appending: kubectl's writes go to the end whatever offset the
        # test's reads (a seek to 0 on the same open file) left behind; a
        # row written in two parts once had its second part land at 0.
        out = open(os.path.join(self.dir, "bg-%d.out" % time.time_ns()),
                   "a+")
        p = subprocess.Popen(self.argv(*args), stdout=out,
                             stderr=subprocess.STDOUT, env=self.env)
        return p, out


def yaml_of(obj):
    return json.dumps(obj)  # JSON is YAML; kubectl reads both


def stop_proc(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_kubectl_create_get_replace_delete(kubectl_bin, tls_sim, tmp_path):
    k = Kubectl(kubectl_bin, tls_sim, str(tmp_path))
    r = k.run("create", "--validate=false", "-f", "-",
              stdin=yaml_of(svc_obj("web", {"app": "web"},
                                    selector={"app": "web"})))
    assert "service/web created" in r.stdout
    r = k.run("create", "--validate=false", "-f", "-",
              stdin=yaml_of(slice_obj("web-x7k2p", "web")))
    assert "web-x7k2p created" in r.stdout

    r = k.run("get", "services")
    assert "kubernetes" in r.stdout and "web" in r.stdout
    r = k.run("get", "endpointslices.discovery.k8s.io")
    assert "web-x7k2p" in r.stdout
    svc = json.loads(k.run("get", "service", "web", "-o", "json").stdout)
    assert svc["kind"] == "Service" and svc["metadata"]["uid"]
    assert svc["spec"]["clusterIP"].startswith("198.18.")
    assert svc["spec"]["ports"][0]["protocol"] == "TCP"
    lst = json.loads(k.run("get", "endpointslices", "-A", "-o",
                           "json").stdout)
    names = [i["metadata"]["name"] for i in lst["items"]]
    assert "web-x7k2p" in names and "kubernetes" in names

    svc["metadata"]["labels"]["tier"] = "front"
    r = k.run("replace", "--validate=false", "-f", "-", stdin=yaml_of(svc))
    assert "service/web replaced" in r.stdout
    got = tls_sim.get("services", "web")
    assert got["metadata"]["labels"]["tier"] == "front"
    assert rv_of(got) > rv_of(svc)
    # replacing with the now stale resourceVersion is a conflict
    r = k.run("replace", "--validate=false", "-f", "-", stdin=yaml_of(svc),
              check=False)
    assert r.returncode != 0 and "the object has been modified" in r.stderr

    r = k.run("delete", "service", "web")
    assert 'service "web" deleted' in r.stdout
    r = k.run("delete", "endpointslice", "web-x7k2p")
    assert "deleted" in r.stdout
    r = k.run("get", "service", "web", check=False)
    assert r.returncode != 0
    assert 'services "web" not found' in r.stderr


def test_kubectl_watch_sees_changes(kubectl_bin, tls_sim, tmp_path):
    k = Kubectl(kubectl_bin, tls_sim, str(tmp_path))
    w1, out1 = k.background("get", "services", "-A", "--watch",
                            "--output-watch-events")
    w2, out2 = k.background("get", "services", "-A", "--watch-only",
                            "--output-watch-events")
    try:
        def text(f):
            f.seek(0)
            return f.read()

        wait_for(lambda: "kubernetes" in text(out1), 15, "initial list")
        wait_for(lambda: tls_sim.state()["watches"] >= 2, 15, "two watches")
        tls_sim.create("services", svc_obj("watched"))
        wait_for(lambda: any(l.split()[:1] == ["ADDED"] and "watched" in l
                             for l in text(out2).splitlines()), 10,
                 "ADDED in --watch-only")
        cur = tls_sim.get("services", "watched")
        cur["metadata"]["labels"] = {"v": "2"}
        tls_sim.replace("services", cur)
        tls_sim.delete("services", "watched")
        for name, f in (("--watch", out1), ("--watch-only", out2)):
            # 20 s: a loaded CI machine once took longer than 10.
            try:
                wait_for(lambda: any(l.split()[:1] == ["DELETED"]
                                     and "watched" in l
                                     for l in text(f).splitlines()), 20,
                         "DELETED")
            except AssertionError:
                raise AssertionError("kubectl get %s printed no DELETED "
                                     "in 20 s:\n%s" % (name, text(f)))
            lines = [l.split()[0] for l in text(f).splitlines()
                     if "watched" in l]
            assert lines == ["ADDED", "MODIFIED", "DELETED"], text(f)
        assert "kubernetes" not in text(out2)   # --watch-only: no list
        assert w1.poll() is None and w2.poll() is None
    finally:
        stop_proc(w1)
        stop_proc(w2)
        out1.close()
        out2.close()


def test_kubectl_errors(kubectl_bin, tls_sim, tmp_path):
    # 401 during discovery (cold cache): 1.20 prints the Status message,
    # newer kubectl its generic 401 text
    bad = Kubectl(kubectl_bin, tls_sim, str(tmp_path / "bad"), token="nope")
    r = bad.run("get", "services", check=False)
    assert r.returncode != 0
    assert "You must be logged in to the server (Unauthorized)" in r.stderr \
        or "You must be logged in to the server (the server has asked for " \
        "the client to provide credentials)" in r.stderr
    # 401 on the request itself (warm discovery cache): our Status message
    k = Kubectl(kubectl_bin, tls_sim, str(tmp_path))
    k.run("get", "services")
    bad.cache = k.cache
    r = bad.run("get", "services", check=False)
    assert r.returncode != 0
    assert "You must be logged in to the server (Unauthorized)" in r.stderr

    obj = yaml_of(svc_obj("twice"))
    k.run("create", "--validate=false", "-f", "-", stdin=obj)
    r = k.run("create", "--validate=false", "-f", "-", stdin=obj,
              check=False)
    assert r.returncode != 0
    assert "AlreadyExists" in r.stderr and \
        'services "twice" already exists' in r.stderr

    ro = Kubectl(kubectl_bin, tls_sim, str(tmp_path / "ro"),
                 token="tok-reader")
    assert "twice" in ro.run("get", "services").stdout
    r = ro.run("delete", "service", "twice", check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr
    assert 'User "reader" cannot delete resource "services"' in r.stderr


# -------------------------------------------------------- python3-kubernetes


@pytest.fixture
def kube(tls_sim):
    try:
        from kubernetes import client
    except ImportError as e:
        pytest.skip("python3-kubernetes not importable by %s: %s "
                    "(apt-get install python3-kubernetes)" %
                    (sys.executable, e))
    cfg = client.Configuration()
    cfg.host = tls_sim.url
    cfg.ssl_ca_cert = tls_sim.ca_file
    cfg.api_key = {"authorization": TOKEN}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(cfg)
    yield client, client.CoreV1Api(api), client.DiscoveryV1Api(api)
    api.close()


def test_python_list(kube, tls_sim):
    client, core, disc = kube
    tls_sim.create("services", svc_obj("py", {"app": "py"}, type="NodePort"))
    tls_sim.create("endpointslices", slice_obj("py-1", "py"))
    empty = slice_obj("py-2", "py")
    empty["endpoints"] = []
    tls_sim.create("endpointslices", empty)
    svcs = core.list_service_for_all_namespaces()
    names = {s.metadata.name: s for s in svcs.items}
    assert set(names) >= {"kubernetes", "py"}
    py = names["py"]
    assert py.spec.type == "NodePort"
    assert 30000 <= py.spec.ports[0].node_port <= 32767
    assert int(svcs.metadata.resource_version) >= int(
        py.metadata.resource_version)
    sl = disc.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=py")
    assert sorted(s.metadata.name for s in sl.items) == ["py-1", "py-2"]
    assert sl.items[0].endpoints[0].addresses == ["198.18.1.10"]
    assert sl.items[1].endpoints == []
    got = core.read_namespaced_service("py", "default")
    assert got.metadata.uid == py.metadata.uid
    with pytest.raises(client.exceptions.ApiException) as ei:
        core.read_namespaced_service("absent", "default")
    assert ei.value.status == 404


def test_python_watch(kube, tls_sim):
    client, core, disc = kube
    from kubernetes import watch
    start = core.list_namespaced_service("default").metadata.resource_version
    tls_sim.create("services", svc_obj("pw"))
    cur = tls_sim.get("services", "pw")
    cur["metadata"]["labels"] = {"x": "y"}
    tls_sim.replace("services", cur)
    tls_sim.delete("services", "pw")
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_service, "default",
                       resource_version=start, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "pw"), ("MODIFIED", "pw"), ("DELETED", "pw")]
    # slices, from "now" (synthetic ADDED first), with bookmarks allowed
    tls_sim.create("endpointslices", slice_obj("pw-1", "pw"))
    types = []
    for ev in w.stream(disc.list_endpoint_slice_for_all_namespaces,
                       allow_watch_bookmarks=True, timeout_seconds=5):
        types.append(ev["type"])
        if ev["type"] == "BOOKMARK":
            w.stop()
    assert types.count("ADDED") >= 2 and types[-1] == "BOOKMARK"


def test_python_pagination(kube, tls_sim):
    client, core, disc = kube
    for i in range(7):
        tls_sim.create("services", svc_obj("page-%d" % i, {"pg": "1"}))
    names, cont, pages, rvs = [], None, 0, set()
    while True:
        kw = {"limit": 3}
        if cont:
            kw["_continue"] = cont
        lst = core.list_namespaced_service("default", **kw)
        pages += 1
        rvs.add(lst.metadata.resource_version)
        names += [s.metadata.name for s in lst.items]
        cont = lst.metadata._continue
        if not cont:
            break
        assert lst.metadata.remaining_item_count == 8 - len(names)
        # a change between pages does not show up: pages are a snapshot
        if pages == 1:
            tls_sim.create("services", svc_obj("page-zz"))
    assert pages == 3 and len(rvs) == 1
    assert names == ["kubernetes"] + ["page-%d" % i for i in range(7)]


def test_python_410_after_compaction(kube, tls_sim):
    client, core, disc = kube
    from kubernetes import watch
    old = core.list_namespaced_service("default").metadata.resource_version
    tls_sim.create("services", svc_obj("gone-1"))
    tls_sim.create("services", svc_obj("gone-2"))
    tls_sim.fault(action="compact")
    w = watch.Watch()
    # no timeout_seconds: python retries once from its RV, then raises
    with pytest.raises(client.exceptions.ApiException) as ei:
        for _ in w.stream(core.list_namespaced_service, "default",
                          resource_version=old):
            pass
    assert ei.value.status == 410
    assert "too old resource version" in ei.value.reason
    reqs = [r for r in tls_sim.requests() if r["watch"]]
    assert len(reqs) == 2 and all(r["query"]["resourceVersion"] == old
                                  for r in reqs)


# ------------------------------------------------------ protocol checks


def test_rv_monotonic_and_delete_rv(sim):
    seen = []
    w = WatchStream(sim, "/api/v1/services?watch=true&resourceVersion=%d" %
                    sim.state()["revision"])
    try:
        a = sim.create("services", svc_obj("m1"))
        b = sim.create("endpointslices", slice_obj("m1-a", "m1"))
        c = sim.create("namespaces", {"metadata": {"name": "other"}})
        d = sim.create("services", svc_obj("m2"), ns="other")
        sim.delete("services", "m1")
        for o in (a, b, c, d):
            seen.append(rv_of(o))
        assert seen == sorted(seen) and len(set(seen)) == 4
        assert rv_of(b) == rv_of(a) + 1       # one counter for all kinds
        lst = sim.list("services")
        assert int(lst["metadata"]["resourceVersion"]) > rv_of(d)
        assert all("kind" not in i and "apiVersion" not in i
                   for i in lst["items"])
        evs = [w.until(lambda e: True) for _ in range(3)]
        assert [e["type"] for e in evs] == ["ADDED", "ADDED", "DELETED"]
        assert [e["object"]["metadata"]["namespace"] for e in evs] == [
            "default", "other", "default"]
        rvs = [rv_of(e["object"]) for e in evs]
        assert rvs == sorted(rvs) and rvs[2] == int(
            lst["metadata"]["resourceVersion"])     # deletion revision
        assert evs[0]["object"]["kind"] == "Service"
    finally:
        w.close()


def test_watch_bookmarks_and_timeout(sim):
    w = WatchStream(sim, "/apis/discovery.k8s.io/v1/endpointslices?"
                    "watch=1&allowWatchBookmarks=true&timeoutSeconds=30")
    try:
        assert w.status == 200
        assert w.resp.getheader("Transfer-Encoding") == "chunked"
        ev = w.until(lambda e: e["type"] == "BOOKMARK" and "annotations" not
                     in e["object"]["metadata"], 3)
        obj = ev["object"]
        assert obj["kind"] == "EndpointSlice"
        assert obj["addressType"] == "" and obj["endpoints"] is None
        assert int(obj["metadata"]["resourceVersion"]) == \
            sim.state()["revision"]
    finally:
        w.close()


def test_watch_pre_deadline_bookmark_and_close(tmp_path):
    sim = start_sim(tmp_path, bookmark_interval=60)
    try:
        rv = sim.state()["revision"]
        t0 = time.monotonic()
        w = WatchStream(sim, "/api/v1/services?watch=true&resourceVersion=%d"
                        "&allowWatchBookmarks=true&timeoutSeconds=4" % rv)
        # headers arrive at once, before any event
        assert w.status == 200 and time.monotonic() - t0 < 1.5
        ev = w.next(5)
        assert ev["type"] == "BOOKMARK"
        assert ev["object"]["spec"] == {} and \
            ev["object"]["status"] == {"loadBalancer": {}}
        t_bm = time.monotonic() - t0
        assert 1.5 < t_bm < 3.5                      # deadline - 2 s
        assert w.next(5) is None                     # clean close at 4 s
        assert 3.8 < time.monotonic() - t0 < 6.0
        w.close()
    finally:
        sim.stop()


def test_watch_410_after_compaction(sim):
    old = sim.state()["revision"]
    sim.create("services", svc_obj("c1"))
    sim.create("services", svc_obj("c2"))
    sim.fault(action="compact")
    st = sim.state()
    w = WatchStream(sim, "/api/v1/services?watch=true&resourceVersion=%d" %
                    old)
    try:
        assert w.status == 200
        ev = w.next()
        assert ev == {"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version: "
            "%d (%d)" % (old, st["compactedRevision"]),
            "reason": "Expired", "code": 410}}
        assert w.next() is None
    finally:
        w.close()
    # watching from the compacted revision itself is fine
    w = WatchStream(sim, "/api/v1/services?watch=true&resourceVersion=%d" %
                    st["revision"])
    try:
        sim.create("services", svc_obj("c3"))
        assert w.until(lambda e: True)["object"]["metadata"]["name"] == "c3"
    finally:
        w.close()
    # the forced 410 fault hits the next watch only
    sim.fault(action="gone", path="/api/v1/services")
    for expect in ("ERROR", "ADDED"):
        w = WatchStream(sim, "/api/v1/services?watch=true")
        try:
            assert w.next()["type"] == expect
        finally:
            w.close()


def test_continue_token_expiry(tmp_path):
    sim = start_sim(tmp_path, continue_ttl=1)
    try:
        for i in range(4):
            sim.create("endpointslices", slice_obj("e-%d" % i, "e"))
        first = sim.list("endpointslices", "default", limit=2)
        tok = first["metadata"]["continue"]
        raw = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) %
                                                               4)))
        assert raw["v"] == "meta.k8s.io/v1" and raw["rv"] == int(
            first["metadata"]["resourceVersion"])
        assert raw["start"] == "e-1\x00"    # key after the last item
        # TTL expiry: poll until the token is refused
        path = SLICES + "?limit=2&continue=" + tok

        def refused():
            st, _, body = sim.request("GET", path)
            return body if st == 410 else None

        body = wait_for(refused, 5, "continue token TTL expiry")
        assert body["reason"] == "Expired" and body["message"].startswith(
            "The provided continue parameter is too old")
        inc = body["metadata"]["continue"]
        raw = json.loads(base64.urlsafe_b64decode(inc + "=" * (-len(inc) %
                                                               4)))
        assert raw["rv"] == -1
        # the rv:-1 token continues from now (inconsistent)
        sim.create("endpointslices", slice_obj("e-9", "e"))
        rest = sim.list("endpointslices", "default", limit=50,
                        **{"continue": inc})
        assert [i["metadata"]["name"] for i in rest["items"]] == [
            "e-2", "e-3", "e-9", "kubernetes"]
        # compaction expires tokens too
        tok = sim.list("endpointslices", "default", limit=1)["metadata"][
            "continue"]
        sim.create("endpointslices", slice_obj("e-10", "e"))
        sim.fault(action="compact")
        st, _, body = sim.request("GET", SLICES + "?limit=1&continue=" + tok)
        assert st == 410 and body["code"] == 410
    finally:
        sim.stop()


def test_selector_transitions(sim):
    path = SVC + "?watch=true&labelSelector=" + urllib.parse.quote(
        "app in (web),!service.kubernetes.io/headless")
    sim.create("services", svc_obj("sel", {"app": "db"}))
    w = WatchStream(sim, path)
    try:
        cur = sim.get("services", "sel")
        cur["metadata"]["labels"] = {"app": "web"}
        on = sim.replace("services", cur)
        cur = dict(on, metadata=dict(on["metadata"], labels={
            "app": "web", "service.kubernetes.io/headless": ""}))
        off = sim.replace("services", cur)
        sim.delete("services", "sel")
        sim.create("services", svc_obj("sel2", {"app": "web"}))
        evs = [w.until(lambda e: True) for _ in range(3)]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] \
            == [("ADDED", "sel"), ("DELETED", "sel"), ("ADDED", "sel2")]
        assert rv_of(evs[0]["object"]) == rv_of(on)
        # DELETED carries the old state with the event's revision
        assert "service.kubernetes.io/headless" not in \
            evs[1]["object"]["metadata"]["labels"]
        assert rv_of(evs[1]["object"]) == rv_of(off)
    finally:
        w.close()
    lst = sim.list("services", labelSelector="app notin (db),app")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["sel2"]
    lst = sim.list("services", fieldSelector="metadata.namespace=default,"
                   "spec.type!=NodePort,metadata.name==sel2")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["sel2"]


def test_invalid_requests(sim):
    def check(path, code, reason, text):
        st, _, body = sim.request("GET", path)
        assert st == code, (path, st, body)
        assert body["reason"] == reason and text in body["message"], body
        return body

    check(SVC + "?resourceVersionMatch=NotOlderThan", 422, "Invalid",
          "resourceVersionMatch is forbidden unless resourceVersion is "
          "provided")
    body = check(SVC + "?resourceVersion=0&resourceVersionMatch=Exact", 422,
                 "Invalid", "forbidden")
    assert body["details"]["kind"] == "ListOptions"
    check(SVC + "?resourceVersion=5&resourceVersionMatch=Bogus", 422,
          "Invalid", "Unsupported value")
    check(SVC + "?sendInitialEvents=true", 422, "Invalid",
          "sendInitialEvents is forbidden for list")
    check(SVC + "?resourceVersion=5&continue=abc", 400, "BadRequest",
          "specifying resource version is not allowed when using continue")
    check(SVC + "?continue=%%%", 400, "BadRequest", "invalid continue token")
    check(SVC + "?labelSelector=a+in+b", 400, "BadRequest",
          "unable to parse requirement")
    check(SVC + "?fieldSelector=spec.foo%3Dx", 400, "BadRequest",
          "field label not supported: spec.foo")
    rev = sim.state()["revision"]
    t0 = time.monotonic()
    st, hdrs, body = sim.request("GET", SVC + "?resourceVersion=%d&"
                                 "resourceVersionMatch=NotOlderThan" %
                                 (rev + 100))
    assert st == 504 and hdrs["Retry-After"] == "1"
    assert body["message"] == "Timeout: Too large resource version: %d, " \
        "current: %d" % (rev + 100, rev)
    assert body["details"]["causes"][0]["reason"] == \
        "ResourceVersionTooLarge"
    assert time.monotonic() - t0 >= 0.25
    sim.create("services", svc_obj("x1"))
    sim.fault(action="compact")
    check(SVC + "?resourceVersion=%d&resourceVersionMatch=Exact" % rev, 410,
          "Expired", "The resourceVersion for the provided list is too old.")
    # Exact within history gives the old snapshot
    lst = sim.list("services", "default", resourceVersion=sim.state()[
        "revision"], resourceVersionMatch="Exact")
    assert "x1" in [i["metadata"]["name"] for i in lst["items"]]
    st, _, body = sim.request(
        "GET", SVC + "?watch=1&sendInitialEvents=true")
    assert st == 422 and "resourceVersionMatch" in body["message"]
    st, _, body = sim.request("GET", "/api/v1/namespaces/default/pods")
    assert st == 404


def test_send_initial_events(sim):
    sim.create("services", svc_obj("init"))
    rev = sim.state()["revision"]
    w = WatchStream(sim, SVC + "?watch=true&sendInitialEvents=true&"
                    "resourceVersionMatch=NotOlderThan&allowWatchBookmarks="
                    "true&resourceVersion=")
    try:
        evs = [w.until(lambda e: True) for _ in range(3)]
        assert [e["type"] for e in evs] == ["ADDED", "ADDED", "BOOKMARK"]
        md = evs[2]["object"]["metadata"]
        assert md["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert md["resourceVersion"] == str(rev)
    finally:
        w.close()
    sim.fault(action="reject_send_initial_events")
    st, _, body = sim.request("GET", SVC + "?watch=true&sendInitialEvents="
                              "true&resourceVersionMatch=NotOlderThan&"
                              "allowWatchBookmarks=true")
    assert st == 422 and "WatchList feature gate" in body["message"]


def test_writes(sim):
    s = sim.create("services", svc_obj("w", type="LoadBalancer",
                                       externalTrafficPolicy="Local"))
    spec = s["spec"]
    assert spec["healthCheckNodePort"] and spec["ports"][0]["nodePort"]
    assert spec["clusterIPs"] == [spec["clusterIP"]]
    g = sim.create("services", {"metadata": {"generateName": "gen-"},
                                "spec": {"ports": [{"port": 1}]}})
    name = g["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == 9
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in name[4:])
    # conflict on a stale resourceVersion, unconditional without one
    stale = dict(s)
    sim.replace("services", dict(s, metadata=dict(s["metadata"],
                                                  labels={"a": "b"})))
    with pytest.raises(SimError) as ei:
        sim.replace("services", stale)
    assert ei.value.status == 409 and ei.value.body["message"] == (
        'Operation cannot be fulfilled on services "w": the object has been '
        'modified; please apply your changes to the latest version and try '
        'again')
    nov = dict(s, metadata={"name": "w"})
    assert sim.replace("services", nov)["spec"]["clusterIP"] == \
        spec["clusterIP"]
    # status subresource
    cur = sim.get("services", "w")
    cur["status"] = {"loadBalancer": {"ingress": [{"ip": "198.18.5.5"}]}}
    st, _, body = sim.request("PUT", SVC + "/w/status", cur)
    assert st == 200 and body["status"]["loadBalancer"]["ingress"][0][
        "ipMode"] == "VIP"
    # dry run does not persist
    sim.create("services", svc_obj("dry"), dryRun="All")
    with pytest.raises(SimError) as ei:
        sim.get("services", "dry")
    assert ei.value.body["message"] == 'services "dry" not found'
    # patches
    st, _, body = sim.request("PATCH", SVC + "/w", {"metadata": {
        "labels": {"p": "1"}}}, ctype="application/merge-patch+json")
    assert st == 200 and body["metadata"]["labels"]["p"] == "1"
    st, _, body = sim.request("PATCH", SVC + "/w", {"spec": {"ports": [
        {"port": 80, "name": "web"}]}},
        ctype="application/strategic-merge-patch+json")
    assert st == 200 and body["spec"]["ports"][0]["name"] == "web"
    assert body["spec"]["ports"][0]["nodePort"] == spec["ports"][0][
        "nodePort"]
    st, _, body = sim.request("PATCH", SVC + "/w", {}, ctype="text/plain")
    assert st == 415 and body["reason"] == "UnsupportedMediaType"
    # delete: preconditions, Services return the object, slices a Status
    st, _, body = sim.request("DELETE", SVC + "/w", {
        "preconditions": {"resourceVersion": "1"}})
    assert st == 409 and body["message"].startswith(
        "Precondition failed: ResourceVersion in precondition: 1, "
        "ResourceVersion in object meta: ")
    assert sim.delete("services", "w")["kind"] == "Service"
    sl = sim.create("endpointslices", slice_obj("w-1", "w"))
    st, _, body = sim.request("DELETE", SLICES + "/w-1")
    assert st == 200 and body["status"] == "Success" and body["details"] == {
        "name": "w-1", "group": "discovery.k8s.io", "kind": "endpointslices",
        "uid": sl["metadata"]["uid"]}
    st, _, body = sim.request("GET", SLICES + "/w-1")
    assert st == 404 and body["message"] == \
        'endpointslices.discovery.k8s.io "w-1" not found'
    # validation, namespaces
    st, _, body = sim.request("POST", SLICES, {"metadata": {"name": "bad"}})
    assert st == 422 and "addressType: Required value" in body["message"]
    st, _, body = sim.request("POST", "/api/v1/namespaces/nope/services",
                              svc_obj("x"))
    assert st == 404 and body["message"] == 'namespaces "nope" not found'
    st, _, body = sim.request("POST", SVC, dict(svc_obj("x"), metadata={
        "name": "x", "namespace": "other"}))
    assert st == 400


def test_fault_injection_429(sim):
    sim.fault(action="fail", path="/api/v1/services", status=429,
              retryAfter=2, format="text")
    st, hdrs, body = sim.request("GET", "/api/v1/services")
    assert st == 429 and hdrs["Retry-After"] == "2"
    assert hdrs["Content-Type"].startswith("text/plain")
    assert body == "Too many requests, please try again later.\n"
    st, _, _ = sim.request("GET", "/api/v1/services")
    assert st == 200                                  # count 1 by default
    # end a watch after 2 events, events split across chunks
    sim.fault(rules=[{"action": "end_watch", "afterEvents": 2},
                     {"action": "chunking", "mode": "split"}])
    sim.create("services", svc_obj("f1"))
    w = WatchStream(sim, "/api/v1/services?watch=true")
    try:
        assert [w.next()["type"], w.next()["type"]] == ["ADDED", "ADDED"]
        assert w.next() is None
    finally:
        w.close()
    sim.clear_faults()
    st = sim.state()
    assert st["faults"] == {"rules": [], "flags": {}}


def test_token_rotation(tmp_path):
    sim = start_sim(tmp_path, tokens={"old-token": "lb"})
    try:
        assert sim.request("GET", SVC)[0] == 200
        st, _, body = sim.request("GET", SVC, token="wrong")
        assert st == 401 and body == {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "Unauthorized",
            "reason": "Unauthorized", "code": 401}
        assert sim.request("GET", SVC, token=None)[0] == 401
        assert sim.request("GET", "/healthz", token=None)[0] == 200
        sim.set_tokens({"new-token": "lb"})
        assert sim.request("GET", SVC, token="old-token")[0] == 401
        assert sim.request("GET", SVC, token="new-token")[0] == 200
    finally:
        sim.stop()


def test_restart_keeps_state(tmp_path):
    sim = start_sim(tmp_path)
    try:
        s = sim.create("services", svc_obj("keep", type="NodePort"))
        port, rev = sim.port, sim.state()["revision"]
        sim.restart()
        assert sim.port == port
        got = sim.get("services", "keep")
        assert got == s
        assert sim.state()["revision"] == rev
        # a watch from the last RV sees the next write with a higher RV
        w = WatchStream(sim, SVC + "?watch=true&resourceVersion=%d" % rev)
        try:
            sim.create("services", svc_obj("after"))
            ev = w.until(lambda e: True)
            assert ev["type"] == "ADDED" and rv_of(ev["object"]) == rev + 1
        finally:
            w.close()
        # open watches end cleanly on SIGTERM
        w = WatchStream(sim, SVC + "?watch=true&resourceVersion=%d" %
                        (rev + 1))
        try:
            sim.stop()
            assert w.next(5) is None
        finally:
            w.close()
        sim.start()
        assert sim.get("services", "after")["metadata"]["name"] == "after"
        assert sim.create("services", svc_obj("next"))["metadata"][
            "resourceVersion"] == str(rev + 2)
    finally:
        sim.stop()


def test_discovery(sim):
    for path, kind in (("/api", "APIVersions"), ("/apis", "APIGroupList"),
                       ("/api/v1", "APIResourceList"),
                       ("/apis/discovery.k8s.io/v1", "APIResourceList")):
        st, _, body = sim.request("GET", path)
        assert st == 200 and body["kind"] == kind
    st, _, body = sim.request("GET", "/version")
    assert body["major"] == "1"
    assert sim.request("GET", "/readyz")[2] == "ok"
    assert sim.request("GET", "/openapi/v2")[0] == 404
    names = [i["metadata"]["name"] for i in sim.list("namespaces")["items"]]
    assert names == ["default", "kube-node-lease", "kube-public",
                     "kube-system"]


def test_faults_cut_drop_regress(sim):
    # a namespaced page ignores other namespaces in remainingItemCount
    sim.create("namespaces", {"metadata": {"name": "aaa"}})
    for ns in ("aaa", "default"):
        for i in range(3):
            sim.create("services", svc_obj("r-%d" % i), ns=ns)
    lst = sim.list("services", "default", limit=2)
    assert lst["metadata"]["remainingItemCount"] == 2
    # abort: the watch connection is cut without the terminating chunk
    w = WatchStream(sim, SVC + "?watch=true&resourceVersion=%d" %
                    sim.state()["revision"])
    try:
        wait_for(lambda: sim.state()["watches"] == 1, 5, "watch open")
        sim.fault(action="end_watches", mode="abort")
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            w.next(5)
    finally:
        w.close()
    # drop: no answer at all
    sim.fault(action="drop", path=SVC)
    with pytest.raises((ConnectionError, http.client.HTTPException,
                        OSError)):
        sim.request("GET", SVC)
    assert sim.request("GET", SVC)[0] == 200
    # regress: back to an older revision, open watches end cleanly. The
    # aborted watch must be gone first, or the count below could be its
    # and the regress come before the new watch is open.
    wait_for(lambda: sim.state()["watches"] == 0, 5, "aborted watch gone")
    rev = sim.state()["revision"]
    sim.create("services", svc_obj("later"))
    w = WatchStream(sim, SVC + "?watch=true&resourceVersion=%d" % (rev + 1))
    try:
        wait_for(lambda: sim.state()["watches"] == 1, 5, "watch open")
        sim.fault(action="regress", revision=rev)
        assert w.next(5) is None
    finally:
        w.close()
    st = sim.state()
    assert st["revision"] == rev
    assert sim.request("GET", SVC + "/later")[0] == 404
    assert rv_of(sim.create("services", svc_obj("again"))) == rev + 1
    # delayed flushes still deliver every event
    sim.fault(action="delay_flush", seconds=0.2, path=SVC)
    w = WatchStream(sim, SVC + "?watch=true")
    try:
        t0 = time.monotonic()
        names = [w.next(5)["object"]["metadata"]["name"] for _ in range(5)]
        assert "again" in names and time.monotonic() - t0 >= 0.8
    finally:
        w.close()
