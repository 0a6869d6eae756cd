"""The watcher end to end against the simulated API server (kapisim).

Drives watcher/ferry-watch-dump, which runs the watcher on a libev loop and
prints each published service table as one JSON line. Checks list + watch,
the first table waiting for both lists, 410 relists, 429 Retry-After, 401
and token rotation, an API server outage (last table kept), RV regression,
pagination (and its 410 fallback) and TLS with a kubeconfig.

Run: /usr/bin/python3 -m pytest tests/integration/test_watcher_kapisim.py
Binary: $FERRY_WATCH_DUMP, else build/watcher/ferry-watch-dump.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest  # noqa: E402
from ferrytest import wait_for  # noqa: E402
from kapisim_client import start_sim  # noqa: E402


def dump_bin():
    env = os.environ.get("FERRY_WATCH_DUMP")
    if env:
        return str(Path(env).resolve())
    return str(ferrytest.REPO_ROOT / "build" / "watcher" / "ferry-watch-dump")


class Dump:
    """A running ferry-watch-dump; tables collects the parsed lines."""

    def __init__(self, tmp_path, args, env=None):
        self.err_path = tmp_path / "dump.stderr"
        self.tables = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            [dump_bin(), "--log-level", "debug"] + args,
            stdout=subprocess.PIPE, stderr=open(self.err_path, "w"),
            text=True, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.tables.append(json.loads(line))

    def count(self):
        with self.lock:
            return len(self.tables)

    def last(self):
        with self.lock:
            return self.tables[-1] if self.tables else None

    def last_by_name(self, name):
        return [x for x in self.last()["services"] if x["name"] == name][0]

    def log(self):
        return self.err_path.read_text()

    def wait_table(self, pred, what, timeout=None):
        """Wait for a published table satisfying pred(services by name)."""
        def check():
            t = self.last()
            return t is not None and pred({s["name"]: s
                                           for s in t["services"]})
        return wait_for(check, timeout=timeout, what=what)

    def wait_log(self, text, timeout=None):
        return wait_for(lambda: text in self.log(), timeout=timeout,
                        what="log line containing %r" % text)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=ferrytest.scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def dump_factory(tmp_path, request):
    if not os.access(dump_bin(), os.X_OK):
        pytest.fail("ferry-watch-dump not found at %s: build it or set "
                    "FERRY_WATCH_DUMP" % dump_bin())
    dumps = []

    def start(args, env=None):
        d = Dump(tmp_path, args, env)
        dumps.append(d)
        return d

    yield start
    for d in dumps:
        rc = d.stop()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") \
                else False:
            sys.stderr.write("---- ferry-watch-dump log ----\n" + d.log())
        assert rc == 0, "ferry-watch-dump exited %s:\n%s" % (rc, d.log())


@pytest.fixture
def sim(tmp_path):
    holder = {}

    def start(**kw):
        kw.setdefault("bookmark_interval", 0.5)
        holder["sim"] = start_sim(tmp_path, **kw)
        return holder["sim"]

    yield start
    if "sim" in holder:
        holder["sim"].stop()


def web_service(name="web", **spec):
    s = {"ports": [{"name": "http", "port": 80}]}
    s.update(spec)
    return {"metadata": {"name": name}, "spec": s}


def web_slice(name, svc, eps, port=8080):
    return {"metadata": {"name": name,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": eps}


def ep(ip, ready=True, serving=True, terminating=False, node="node-b"):
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": serving,
                           "terminating": terminating},
            "targetRef": {"kind": "Pod", "name": "pod-" + ip}}


def backends(svc):
    return sorted(b["addr"] for b in svc["backends"])


def lists_of(sim, path):
    return [r for r in sim.requests()
            if r["path"] == path and not r["watch"]]


def test_list_watch_and_changes(sim, dump_factory):
    s = sim()
    s.create("services", web_service(type="NodePort"))
    d = dump_factory(["--api-server", s.url, "--node-name", "node-a",
                      "--node-addr", "198.18.1.1"])
    t = d.wait_table(lambda m: "default/web:http" in m, "web listed")
    assert t
    first = d.last()["services"]
    web = [x for x in first if x["name"] == "default/web:http"][0]
    assert web["backends"] == []
    assert any(f.startswith("198.18.1.1:") for f in web["frontends"])

    s.create("endpointslices", web_slice("web-1", "web", [
        ep("198.18.2.1", node="node-a"), ep("198.18.2.2")]))
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.1:8080", "198.18.2.2:8080"], "two backends")
    local = [b for b in d.last()["services"][1]["backends"]
             if "local" in b["flags"]]
    assert [b["name"] for b in local] == ["pod-198.18.2.1"]

    # One endpoint starts terminating: it leaves the ready set.
    s.replace("endpointslices", web_slice("web-1", "web", [
        ep("198.18.2.1", ready=False, terminating=True, node="node-a"),
        ep("198.18.2.2")]), ns="default")
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.2:8080"], "terminating endpoint dropped")

    s.delete("services", "web")
    d.wait_table(lambda m: "default/web:http" not in m, "web deleted")
    assert d.last()["latency_ms"] >= 0
    assert d.last()["status"]["relists"] == 0


def test_a_slice_change_is_patched_into_the_last_table(sim, dump_factory):
    """An endpoint change, a slice added or a slice deleted translates its
    Service only, into the table before (translate_patch()); a Service's
    ports changed builds the table whole. Either way the table says what
    the objects say."""
    s = sim()
    s.create("services", web_service("web"))
    s.create("services", web_service("api"))
    s.create("endpointslices", web_slice("web-1", "web", [
        ep("198.18.2.1"), ep("198.18.2.2")]))
    s.create("endpointslices", web_slice("api-1", "api", [ep("198.18.3.1")]))
    d = dump_factory(["--api-server", s.url, "--node-name", "node-a"])
    d.wait_table(lambda m: backends(m.get("default/web:http", {"backends": []}))
                 == ["198.18.2.1:8080", "198.18.2.2:8080"]
                 and backends(m.get("default/api:http", {"backends": []}))
                 == ["198.18.3.1:8080"], "both listed")
    assert d.last()["patched"] is None  # the first table is built whole

    s.replace("endpointslices", web_slice("web-1", "web", [
        ep("198.18.2.1", ready=False), ep("198.18.2.2")]), ns="default")
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.2:8080"], "not ready endpoint dropped")
    assert d.last()["patched"] == ["default/web:http"]
    api = [x for x in d.last()["services"] if x["name"] == "default/api:http"]
    assert backends(api[0]) == ["198.18.3.1:8080"]
    d.wait_log("translated into the last table")

    # A new slice of the Service, then one deleted: patched too.
    s.create("endpointslices", web_slice("web-2", "web", [ep("198.18.2.3")]))
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.2:8080", "198.18.2.3:8080"], "second slice")
    assert d.last()["patched"] == ["default/web:http"]
    s.create("endpointslices", web_slice("web-3", "web", [ep("198.18.2.4")]))
    d.wait_table(lambda m: len(backends(m["default/web:http"])) == 3,
                 "third slice")
    s.delete("endpointslices", "web-3")
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.2:8080", "198.18.2.3:8080"], "third slice gone")
    assert d.last()["patched"] == ["default/web:http"]

    # The other Service's endpoints, then this one's ports.
    s.replace("endpointslices", web_slice("api-1", "api", [
        ep("198.18.3.1"), ep("198.18.3.2")]), ns="default")
    d.wait_table(lambda m: backends(m["default/api:http"]) ==
                 ["198.18.3.1:8080", "198.18.3.2:8080"], "api grows")
    assert d.last()["patched"] == ["default/api:http"]
    # A change skipped in part (a bad annotation) is built whole, so that
    # its note is counted and logged (the table is the same: not
    # published).
    s.replace("services", {"metadata": {"name": "api", "annotations": {
        "ferry.dev/balance": "bogus"}}, "spec": {"ports": [
            {"name": "http", "port": 80}]}}, ns="default")
    d.wait_log('ferry.dev/balance "bogus"')
    s.replace("services", {"metadata": {"name": "web"}, "spec": {"ports": [
        {"name": "http", "port": 80}, {"name": "admin", "port": 81}]}},
        ns="default")
    d.wait_table(lambda m: "default/web:admin" in m, "second port")
    assert d.last()["patched"] is None
    assert backends(d.last_by_name("default/web:http")) == [
        "198.18.2.2:8080", "198.18.2.3:8080"]


def test_first_table_waits_for_both_lists(sim, dump_factory):
    s = sim()
    s.fault(action="fail", path="/apis/discovery.k8s.io/v1/endpointslices",
            watch=False, status=500, count=2)
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: "default/kubernetes:https" in m, "first table")
    first = d.tables[0]
    k = [x for x in first["services"]
         if x["name"] == "default/kubernetes:https"][0]
    assert k["backends"], "first table published before slices were listed"
    assert len(lists_of(s, "/apis/discovery.k8s.io/v1/endpointslices")) >= 3


def test_watch_410_relists(sim, dump_factory):
    s = sim()
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: "default/kubernetes:https" in m, "synced")
    wait_for(lambda: s.state() and True, what="sim state")
    s.fault(action="gone", path="/api/v1/services", watch=True)
    s.fault(action="end_watches")
    s.create("services", web_service("after-gone"))
    d.wait_table(lambda m: "default/after-gone:http" in m,
                 "service created around the 410")
    d.wait_log("watch expired")
    wait_for(lambda: len(lists_of(s, "/api/v1/services")) >= 2,
             what="a second services LIST")
    # A compacted resourceVersion is the API's normal course: listed again
    # without calling the server lost or retrying as after an error (the
    # watch ended at once before it is one, as client-go counts it).
    wait_for(lambda: "listed" in d.log().split("watch expired", 1)[1],
             what="the list after the 410")
    after = d.log().split("watch expired", 1)[1]
    assert "lost the API server" not in after \
        and "retrying list" not in after, after


def test_429_retry_after_rewatches_same_rv(sim, dump_factory):
    s = sim()
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: "default/kubernetes:https" in m, "synced")
    s.fault(action="fail", path="/api/v1/services", watch=True, status=429,
            retryAfter=2, format="text", count=1)
    s.fault(action="end_watches")
    d.wait_log("HTTP 429")
    s.create("services", web_service("after-429"))
    d.wait_table(lambda m: "default/after-429:http" in m,
                 "service seen after the 429")
    # The sim records a watch when it ends: end the current one.
    s.fault(action="end_watches")

    def after_429():
        reqs = [r for r in s.requests() if r["path"] == "/api/v1/services"]
        i = [i for i, r in enumerate(reqs) if r["status"] == 429][0]
        nxt = [r for r in reqs[i + 1:] if r["watch"]]
        return (reqs, i, nxt) if nxt else None
    reqs, i429, nxt = wait_for(after_429, what="the watch after the 429")
    assert nxt[0]["time"] - reqs[i429]["time"] >= 1.9, "Retry-After ignored"
    assert not [r for r in reqs[i429 + 1:] if not r["watch"]], \
        "a 429 must not relist"


def test_401_and_token_rotation(sim, dump_factory, tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok-one\n")
    s = sim(tokens={"tok-one": "lb"})
    d = dump_factory(["--api-server", s.url, "--sa-dir", str(sa)])
    d.wait_table(lambda m: "default/kubernetes:https" in m, "synced")

    # The server stops accepting the token before the file rotates.
    s.set_tokens({"tok-two": "lb"})
    s.fault(action="end_watches")
    d.wait_log("401 Unauthorized")
    tmp = sa / "token.new"
    tmp.write_text("tok-two")
    os.replace(tmp, sa / "token")
    s.create("services", web_service("after-rotation"))
    d.wait_table(lambda m: "default/after-rotation:http" in m,
                 "recovered with the rotated token", timeout=ferrytest.scaled(60))
    assert "tok-one" not in d.log() and "tok-two" not in d.log()


def test_forbidden_logs_rbac_once(sim, dump_factory, tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok")
    s = sim(tokens={"tok": "lb get,list,watch:services"})
    d = dump_factory(["--api-server", s.url, "--sa-dir", str(sa)])
    d.wait_log('needs get, list and watch on "endpointslices"')
    time.sleep(ferrytest.scaled(3))  # let a few retries happen
    assert d.log().count("forbidden to list endpointslices") == 1
    assert d.count() == 0


def test_api_outage_keeps_last_table(sim, dump_factory):
    s = sim()
    s.create("services", web_service())
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: "default/web:http" in m, "synced")
    n = d.count()
    s.stop()
    d.wait_log("keeping the last table")
    assert d.count() == n
    s.restart()
    s.create("services", web_service("after-outage"))
    d.wait_table(lambda m: "default/after-outage:http" in m
                 and "default/web:http" in m, "back after the outage",
                 timeout=ferrytest.scaled(60))
    d.wait_log("API server reachable again")


def test_rv_regression_relists(sim, dump_factory):
    s = sim()
    s.create("services", web_service("a"))
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: "default/a:http" in m, "synced")
    rev = int(s.list("services")["metadata"]["resourceVersion"])
    s.create("services", web_service("b"))
    d.wait_table(lambda m: "default/b:http" in m, "b seen")
    # An etcd restore: the store goes back to before b existed.
    s.fault(action="regress", revision=rev, closeWatches=True)
    d.wait_table(lambda m: "default/b:http" not in m
                 and "default/a:http" in m, "b gone after the restore",
                 timeout=ferrytest.scaled(60))


def test_pagination_and_expired_continue(sim, dump_factory):
    s = sim(continue_ttl=300)
    for i in range(520):
        s.create("services", web_service("s%03d" % i))
    d = dump_factory(["--api-server", s.url])
    d.wait_table(lambda m: len([k for k in m if k.startswith("default/s")])
                 == 520, "all 520 services", timeout=ferrytest.scaled(60))
    q = [r["query"] for r in lists_of(s, "/api/v1/services")]
    assert any("continue" in x for x in q), q
    d.stop()

    s.restart(continue_ttl=0)  # every continue token is already too old
    d2 = dump_factory(["--api-server", s.url])
    d2.wait_table(lambda m: len([k for k in m if k.startswith("default/s")])
                  == 520, "all 520 after the 410 fallback",
                  timeout=ferrytest.scaled(60))
    d2.wait_log("continue token expired")


def test_tls_kubeconfig(sim, dump_factory, tmp_path):
    s = sim(tls=True, tokens={"abc123": "lb"})
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
        "clusters:\n- name: sim\n  cluster:\n    server: %s\n"
        "    certificate-authority: %s\n"
        "contexts:\n- name: sim\n  context: {cluster: sim, user: lb}\n"
        "users:\n- name: lb\n  user: {token: abc123}\n"
        % (s.url, os.path.relpath(s.ca_file, tmp_path)))
    d = dump_factory(["--kubeconfig", str(cfg)])
    d.wait_table(lambda m: "default/kubernetes:https" in m, "synced over TLS")
    assert "abc123" not in d.log()

    # Without the CA the server is not trusted: no table, a clear error.
    bad = tmp_path / "kubeconfig-noca"
    bad.write_text(cfg.read_text().replace(
        "    certificate-authority: %s\n"
        % os.path.relpath(s.ca_file, tmp_path), ""))
    d2 = dump_factory(["--kubeconfig", str(bad)])
    wait_for(lambda: "certificate" in d2.log().lower()
             and "list services" in d2.log(), what="TLS failure logged")
    assert d2.count() == 0


def failsize_env(lo, hi):
    """An environment in which the first allocation of lo..hi bytes fails
    (tests/tools/failsize.c)."""
    if os.environ.get("FERRY_SANITIZED"):
        pytest.skip("a preloaded allocator cannot come before a sanitizer's")
    so = Path(dump_bin()).parents[1] / "tests" / "tools" / "failsize.so"
    assert so.exists(), "build tests/tools/failsize.so first"
    env = dict(os.environ)
    env.update(LD_PRELOAD=str(so), FAILSIZE_MIN=str(lo), FAILSIZE_MAX=str(hi))
    return env


def big_slice(name, svc, n=1000, pod_len=250):
    """A slice of <n> endpoints (the API's most) whose Pods have names of
    <pod_len> characters: about 400 KB of JSON, and a decoded slice of
    about n * (32 + pod_len) bytes in one block (kslice.c)."""
    eps = [ep("198.18.%d.%d" % (3 + i // 250, i % 250 + 1))
           for i in range(n)]
    for i, e in enumerate(eps):
        e["targetRef"]["name"] = "web-%s-%04d" % ("p" * (pod_len - 10), i)
    return web_slice(name, svc, eps)


def test_out_of_memory_on_a_watch_event_takes_it_again(sim, dump_factory):
    """Memory that runs out while a watch event is taken is not the
    event's fault: the cache and its resourceVersion stay, the watch
    starts again from there, the server sends the event again and it is
    applied. Nothing is counted as skipped. The refused allocation is the
    copy of the one watch line of 380-480 KB (the line buffer and the
    parser's array grow in powers of two, outside that window)."""
    s = sim()
    s.create("services", web_service("web"))
    s.create("endpointslices", web_slice("web-1", "web", [ep("198.18.2.1")]))
    d = dump_factory(["--api-server", s.url],
                     env=failsize_env(380000, 480000))
    d.wait_table(lambda m: backends(m["default/web:http"]) ==
                 ["198.18.2.1:8080"], "one backend")
    s.create("endpointslices", big_slice("web-2", "web"))
    d.wait_table(lambda m: len(m["default/web:http"]["backends"]) == 1001,
                 "the event taken after the watch started again")
    d.wait_log("out of memory while taking an event: watching again from "
               "resourceVersion")
    log = d.log()
    assert "out_of_memory" not in log and "skipped" not in log, log
    assert "lost the API server" not in log, log  # not the server's fault
    assert d.last()["status"]["relists"] == 0
    assert d.last()["status"]["nomem_api"] == 1
    assert d.last()["status"]["errors"] == 0


def test_out_of_memory_in_a_list_lists_again(sim, dump_factory):
    """Memory that runs out while a list's page is taken refuses the page,
    and the list is made again: the object is not skipped (which would
    have served its Service without it, and dropped it from a relist's
    result as if deleted). The refused allocation is the decoded slice's
    block, 270-300 KB (kslice.c); the page and the parser's array grow in
    powers of two, outside that window."""
    s = sim()
    s.create("services", web_service("web"))
    s.create("endpointslices", big_slice("web-big", "web"))
    d = dump_factory(["--api-server", s.url],
                     env=failsize_env(270000, 300000))
    d.wait_table(lambda m: len(m["default/web:http"]["backends"]) == 1000,
                 "the slice taken by the second list")
    log = d.log()
    assert "endpointslices list: out of memory while taking a page" in log, log
    assert "skipped" not in log and "lost the API server" not in log, log
    assert d.last()["status"]["nomem_api"] == 1
    with d.lock:
        tables = list(d.tables)
    assert all(len(x["backends"]) == 1000 for t in tables
               for x in t["services"] if x["name"] == "default/web:http")


def test_out_of_memory_in_a_build_tries_again(sim, dump_factory):
    """A table build that runs out of memory keeps the table in force and
    is tried again a second later, with no change needed to start it.
    The refused allocation is the arrays of the Service's 1,000 backends
    (names of 100 characters: 140-150 KB); the slice's decoded block is
    132 KB and the buffers grow in powers of two."""
    s = sim()
    s.create("services", web_service("web"))
    s.create("endpointslices", big_slice("web-big", "web", pod_len=100))
    d = dump_factory(["--api-server", s.url],
                     env=failsize_env(140000, 150000))
    d.wait_table(lambda m: len(m["default/web:http"]["backends"]) == 1000,
                 "the table built again")
    log = d.log()
    assert "cannot build the service table: out of memory" in log, log
    assert d.last()["status"]["nomem_builds"] == 1
