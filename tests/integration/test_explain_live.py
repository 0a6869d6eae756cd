"""ferry explain --trace and --watch (README: ferry explain): the way of
an EndpointSlice change through every stage to each worker, read from
GET /explain/trace and the command; the connections to a frontend as
GET /explain/watch and the command show them, bounded by a count, and
nothing queued while nobody watches."""

import collections
import datetime
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
import kubetest as kt  # noqa: E402
from ferrytest import wait_for  # noqa: E402

FakePod = collections.namedtuple("FakePod", "name ip")


def cli(ferry_bin, *args):
    return subprocess.run([ferry_bin, "explain", *args], capture_output=True,
                          text=True, timeout=30)


def status_of(admin, path):
    return at.http(admin, "GET", path)[0]


# ----------------------------------------------------------------- trace

def kube_ferry(start_ferry, tmp_path, admin):
    """ferry in Kubernetes mode against kapisim (plain HTTP), two
    workers, an admin server."""
    from kapisim_client import start_sim
    (tmp_path / "sim").mkdir()
    sim = start_sim(str(tmp_path / "sim"), bookmark_interval=0.5)
    kc = ft.write_kubeconfig(tmp_path / "kubeconfig", sim.url)
    conf = {
        "drain_timeout": "1s",
        "relay": {"workers": 2},
        "kubernetes": {"enabled": True, "kubeconfig": str(kc),
                       "node_name": kt.NODE},
        "node": {"vip_interface": "none", "healthz_listen": ft.free_addr(),
                 "dataplane": "proxy", "proxy_steering": "listen"},
        "admin": {"enabled": True, "listen": admin},
    }
    return sim, start_ferry(ft.to_yaml(conf) + "\n", wait=False)


def trace(admin, svc="default/web"):
    return at.get_json(admin, "/explain/trace?service=" + svc)


def test_trace_endpointslice_change(start_ferry, tmp_path, ferry_bin):
    """A Service, then a change of its EndpointSlice carrying the
    trigger-time annotation: the trace names the slice and shows every
    stage in order, times never going back, and each worker on the
    generation posted; the command prints the timeline."""
    admin = ft.free_addr()
    sim, f = kube_ferry(start_ferry, tmp_path, admin)
    try:
        a, b = FakePod("a", "127.0.0.2"), FakePod("b", "127.0.0.3")
        # Objects listed at the start are not changes: these come after,
        # as watch events.
        kt.Admin(admin).wait_ready(f)
        sim.create("services", kt.svc_obj("web", [("http", 80, None)],
                                          type="ClusterIP"))
        kt.put_slice(sim, "web-1", "web", [kt.ep(a)], 8080)
        # Two watches: the slice's event may come before the Service's.
        want = {("Service", "web", "ADDED"),
                ("EndpointSlice", "web-1", "ADDED")}
        wait_for(lambda: want <= {(c["kind"], c["object"], c["event"])
                                  for c in trace(admin)["changes"]},
                 kt.dl(10), "the Service's first changes traced")
        # Listed at the start: not a change.
        assert trace(admin, "default/kubernetes")["changes"] == []

        t0 = time.time()
        obj = kt.slice_obj("web-1", "web", [kt.ep(a), kt.ep(b)], 8080)
        trig = datetime.datetime.fromtimestamp(
            t0, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        obj["metadata"]["annotations"] = {
            "endpoints.kubernetes.io/last-change-trigger-time": trig}
        sim.replace("endpointslices", obj)

        def done():
            ch = trace(admin)["changes"]
            if not ch or ch[0]["event"] != "MODIFIED":
                return None
            st = ch[0]["stages"]
            if any(s["at"] is None for s in st if s["stage"] != "kernel"):
                return None
            return ch[0]
        c = wait_for(done, kt.dl(10), "the slice change on every worker")
        assert (c["kind"], c["object"]) == ("EndpointSlice", "web-1")
        st = c["stages"]
        assert [s["stage"] for s in st] == [
            "trigger", "received", "built", "posted", "worker", "worker",
            "kernel"], st
        assert abs(st[0]["at"] - t0) < 1e-3
        chain = [s["at"] for s in st[:4]]
        assert chain == sorted(chain), st
        posted = st[3]
        for w in st[4:6]:
            assert w["at"] >= posted["at"], st
            assert w["generation"] == posted["generation"], st
        assert sorted(w["worker"] for w in st[4:6]) == [0, 1]
        assert st[6]["at"] is None and c["kernel"] == "no kernel dataplane"
        ans = trace(admin)
        assert ans["generation"] == posted["generation"]
        assert ans["workers"] == 2

        r = cli(ferry_bin, "--trace", "default/web", "--admin", admin)
        assert r.returncode == 0, r.stderr
        assert "EndpointSlice web-1 MODIFIED" in r.stdout
        for line in ("trigger time", "API event", "table built",
                     "posted to workers", "worker 0", "worker 1"):
            assert line in r.stdout, r.stdout
        assert "generation %d" % posted["generation"] in r.stdout
        j = json.loads(cli(ferry_bin, "--trace", "default/web", "--json",
                           "--admin", admin).stdout)
        assert j["changes"][0]["seq"] == c["seq"]

        # The status page: the Service's explanation with its changes.
        if shutil.which("chromium") is not None:
            from test_admin_page import browse
            cip = sim.get("services", "web")["spec"]["clusterIP"]
            dom = browse(tmp_path, "http://%s/#explain/%s:80/tcp"
                         % (admin, cip), "trace", ["--dump-dom"])
            assert "recent changes of Service default/web" in dom, dom[-3000:]
            assert "EndpointSlice web-1 MODIFIED" in dom, dom[-3000:]
            for stage in ("trigger", "received", "built", "posted",
                          "worker 0", "worker 1"):
                assert 'data-stage="%s"' % stage in dom, stage

        # At most 16 changes per Service, newest first; a deletion is
        # one too, without a trigger time.
        for i in range(17):
            kt.put_slice(sim, "web-1", "web", [kt.ep(a)] if i % 2 else
                         [kt.ep(a), kt.ep(b)], 8080)
        wait_for(lambda: trace(admin)["changes"][0]["seq"] == c["seq"] + 17,
                 kt.dl(10), "17 more changes")
        seqs = [x["seq"] for x in trace(admin)["changes"]]
        assert seqs == list(range(c["seq"] + 17, c["seq"] + 1, -1)), seqs
        sim.delete("endpointslices", "web-1")
        wait_for(lambda: not kt.Admin(admin).backend_names("default/web:http"),
                 kt.dl(10), "the slice gone from the table")
        gone = trace(admin)["changes"][0]
        assert gone["seq"] == c["seq"] + 18, gone
        assert (gone["kind"], gone["object"], gone["event"]) == (
            "EndpointSlice", "web-1", "DELETED"), gone
        assert [x["stage"] for x in gone["stages"]][:2] == [
            "received", "built"], gone

        # A Service never seen, and bad names.
        assert trace(admin, "default/nope")["changes"] == []
        for bad in ("web", "default/", "/web", "Default/web", "a/b/c",
                    "-a/b", "x" * 64 + "/web"):
            assert status_of(admin, "/explain/trace?service=" + bad) == 400
        assert status_of(admin, "/explain/trace") == 400
        assert status_of(admin, "/explain/trace?service=a/b&x=1") == 400
        r = cli(ferry_bin, "--trace", "Web", "--admin", admin)
        assert r.returncode == 2 and "not NAMESPACE/NAME" in r.stderr
    finally:
        sim.stop()


# ----------------------------------------------------------------- watch

def talk(addr):
    """Read the greeting, send 5 bytes, read them back, end cleanly.
    Returns the backend's name."""
    s = ft.connect(addr)
    try:
        name = ft.read_line(s)
        s.sendall(b"ping\n")
        assert ft.read_line(s) == "ping"
    except BaseException:
        s.close()
        raise
    ft.close_and_wait(s)
    return name


def test_watch_connections(start_ferry, backends, ferry_bin):
    """Nothing is queued while nobody watches; a watch shows each
    connection (backend, a failed attempt, bytes) and stops at its
    count; bad questions get 400."""
    b, q = backends("b"), backends("q")
    bad = ft.RefusingPort()
    web, quiet, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    start_ferry(at.with_admin(ft.config([
        ft.service("web", web, [(bad.addr, 1, "bad"), b], retries=1),
        ft.service("quiet", quiet, [q]),
    ]), admin))
    try:
        for _ in range(3):
            assert talk(quiet) == "q"
        start = at.get_json(admin, "/explain/watch?addr=%s&count=2" % quiet)
        assert start["queued_total"] == 0  # nobody watched: nothing queued
        assert start["service"] == "quiet" and start["count"] == 2

        out = []
        p = subprocess.Popen([ferry_bin, "explain", "--watch", web,
                              "--count", "3", "--seconds", "20", "--admin",
                              admin], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(
            target=lambda: out.extend(iter(p.stdout.readline, "")),
            daemon=True)
        reader.start()
        try:
            wait_for(lambda: out, ft.scaled(10), "the watch started")
            assert out[0].startswith("watching service web: 3 connection")
            for _ in range(5):
                assert talk(web) == "b"
            p.wait(ft.scaled(10))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        reader.join(5)
        assert p.returncode == 0, p.stderr.read()
        conns = [ln for ln in out if ln.startswith("conn ")]
        assert len(conns) == 3, out
        assert out[-1] == "3 connection(s) seen\n", out
        for ln in conns:
            assert " -> %s " % b.addr in ln, ln
            assert "bytes_up=5 bytes_down=7 " in ln, ln
            assert ln.rstrip().endswith("cause=client_close"), ln
        # Round robin tries "bad" within the first two: refused, then b.
        failed = [ln for ln in conns if "failed=[%s " % bad.addr in ln]
        assert len(failed) == 1 and "attempts=2" in failed[0], conns

        # --seconds ends a watch that sees nothing; --json prints the
        # records as they come.
        t0 = time.monotonic()
        r = cli(ferry_bin, "--watch", quiet, "--seconds", "0.3", "--admin",
                admin)
        assert r.returncode == 0 and r.stdout.endswith(
            "0 connection(s) seen\n"), (r.stdout, r.stderr)
        assert time.monotonic() - t0 < 5
        p = subprocess.Popen([ferry_bin, "explain", "--watch", quiet,
                              "--count", "1", "--json", "--admin", admin],
                             stdout=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: talk(quiet) and p.poll() is not None,
                     ft.scaled(10), "the --json watch done")
            got = [json.loads(ln) for ln in p.stdout.read().splitlines()]
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
        assert [(g["backend"], g["bytes_up"]) for g in got] == [(q.addr, 5)]

        # The quiet watch: done after its two, then gone.
        for _ in range(3):
            talk(quiet)
        rd = at.get_json(admin, "/explain/watch?id=%d" % start["id"])
        assert rd["done"] is True and rd["ended"] == 2
        assert [r["backend"] for r in rd["records"]] == [q.addr] * 2
        assert status_of(admin, "/explain/watch?id=%d" % start["id"]) == 404
        queued = rd["queued_total"]
        talk(quiet)
        talk(web)
        assert at.get_json(admin, "/explain/watch?addr=%s&count=1"
                           % quiet)["queued_total"] == queued

        for bad_q in ("addr=nope", "addr=%s&proto=udp" % web,
                      "addr=%s&count=0" % web, "addr=%s&count=x" % web,
                      "addr=%s&seconds=0" % web,
                      "addr=%s&seconds=1e9" % web, "id=abc", "id=-1",
                      "id=1&addr=%s" % web, "", "addr=%s&from=1.2.3.4" % web):
            assert status_of(admin, "/explain/watch?" + bad_q) == 400, bad_q
        assert status_of(admin, "/explain/watch?addr=127.0.0.1:1") == 404
        # Defaults, caps, and four watches at once.
        w = at.get_json(admin, "/explain/watch?addr=%s" % quiet)
        assert (w["count"], w["seconds"]) == (100, 30)
        w = at.get_json(admin, "/explain/watch?addr=%s&count=10000"
                        "&seconds=600" % quiet)
        assert (w["count"], w["seconds"]) == (10000, 600)
        for big in ("count=10001", "seconds=601", "seconds=600.5"):
            assert status_of(admin, "/explain/watch?addr=%s&%s"
                             % (quiet, big)) == 400, big
        assert status_of(admin, "/explain/watch?addr=%s" % quiet) == 200
        assert status_of(admin, "/explain/watch?addr=%s" % quiet) == 503
        assert status_of(admin, "/explain/watch?id=999999") == 404
        # No Kubernetes here: nothing to trace.
        assert status_of(admin, "/explain/trace?service=default/web") == 404
        r = cli(ferry_bin, "--watch", web, "--from", "1.2.3.4")
        assert r.returncode == 2 and "no --from" in r.stderr
        r = cli(ferry_bin, web, "--count", "3")
        assert r.returncode == 2 and "go with --watch" in r.stderr
    finally:
        bad.close()
