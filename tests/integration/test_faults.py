"""Faults under continuous load (issue 9, point 2).

Each test runs a load loop through ferry -- a thread that opens
connections one after another, each a whole exchange (the backend's
greeting, our FIN, the relayed FIN back), bounded in count and time --
and counts every failed connection by kind. A fault is injected while the
loop runs; unless the test says otherwise, the client must see no failure
at all. Counters come from the admin server's /metrics, memory from
/proc/PID/status. Every wait is a poll with a deadline.

Run: /usr/bin/python3 -m pytest tests/integration/test_faults.py
"""

import collections
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import wait_for  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"


def dl(seconds):
    """A deadline, longer under the sanitizers."""
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


class Load(threading.Thread):
    """Connections to <addr> one after another until stop(), <max_count>
    or <max_seconds>. Each result is (start, end, answer or None, kind):
    kind is "ok" or the failure ("reset", "eof", "timeout", "refused",
    ...)."""

    def __init__(self, addr, max_count=20000, max_seconds=60.0,
                 timeout=None, pause=0.002):
        super().__init__(daemon=True, name=f"load-{addr}")
        self.addr = addr
        self.max_count = max_count
        self.max_seconds = dl(max_seconds)
        self.timeout = dl(5) if timeout is None else timeout
        self.pause = pause
        self.lock = threading.Lock()
        self.results = []
        self.stopping = threading.Event()

    def one(self):
        s = ft.connect(self.addr, self.timeout)
        try:
            name = ft.read_line(s, self.timeout)
            s.shutdown(socket.SHUT_WR)
            rest = ft.read_until_eof(s, self.timeout)
            if rest:
                raise ValueError(f"unexpected bytes {rest[:40]!r}")
            return name
        finally:
            s.close()

    def run(self):
        end = time.monotonic() + self.max_seconds
        for _ in range(self.max_count):
            if self.stopping.is_set() or time.monotonic() > end:
                return
            t0 = time.monotonic()
            try:
                name, kind = self.one(), "ok"
            except ConnectionResetError:
                name, kind = None, "reset"
            except ConnectionRefusedError:
                name, kind = None, "refused"
            except EOFError:
                name, kind = None, "eof"
            except socket.timeout:
                name, kind = None, "timeout"
            except (OSError, ValueError) as e:
                name, kind = None, type(e).__name__
            with self.lock:
                self.results.append((t0, time.monotonic(), name, kind))
            if self.pause:
                time.sleep(self.pause)  # pacing, not a wait

    def count(self):
        with self.lock:
            return len(self.results)

    def wait_more(self, n, what="load progress", timeout=None):
        start = self.count()
        self.wait_count(start + n, f"{what}: {n} more connections", timeout)
        return start

    def wait_count(self, n, what="load progress", timeout=None):
        """Wait until <n> connections in all have ended."""
        if not self.is_alive():
            raise AssertionError(f"load loop ended ({self.count()} "
                                 "connections)")
        wait_for(lambda: self.count() >= n,
                 dl(15) if timeout is None else timeout, what)

    def stop(self):
        self.stopping.set()
        self.join(dl(30))
        assert not self.is_alive(), "load loop did not stop"
        return self

    def failures(self, after=None, before=None):
        with self.lock:
            return [r for r in self.results if r[3] != "ok"
                    and (after is None or r[0] >= after)
                    and (before is None or r[0] < before)]

    def answers(self, after=None):
        with self.lock:
            return collections.Counter(r[2] for r in self.results
                                       if after is None or r[0] >= after)

    def report(self):
        with self.lock:
            kinds = collections.Counter(r[3] for r in self.results)
            return f"{len(self.results)} connections: {dict(kinds)}"


@pytest.fixture
def loads():
    """make(addr, **kw) -> a started Load, stopped at teardown."""
    made = []

    def make(addr, **kw):
        lo = Load(addr, **kw)
        made.append(lo)
        lo.start()
        lo.wait_more(5, "load started")
        return lo

    def many(addr, n, **kw):
        """<n> loops to <addr> at once, each started."""
        los = [Load(addr, **kw) for _ in range(n)]
        made.extend(los)
        for lo in los:
            lo.start()
        for lo in los:
            lo.wait_count(5, "load started: 5 connections", timeout=dl(40))
        return los

    make.many = many
    yield make
    for lo in made:
        lo.stopping.set()
    for lo in made:
        lo.join(dl(30))


def metric(admin, name, **labels):
    """One sample from /metrics, 0 when absent."""
    try:
        return at.sample(at.scrape(admin), name, **labels)
    except KeyError:
        return 0


def stall(backend, conn):
    """Accept, then never send; return when the peer closes."""
    conn.settimeout(dl(60))
    for _ in range(1 << 20):
        if backend.stopping.is_set() or not conn.recv(4096):
            return


def with_admin(text):
    admin = ft.free_addr()
    return at.with_admin(text, admin), admin


# --------------------------------------------------------------- backend


def test_backend_killed(start_ferry, backends, loads):
    """A backend dies under load: connections in flight to it may fail,
    every connection started after it died must succeed (ferry retries
    the refused connect on another backend)."""
    bs = [backends(f"b{i}") for i in range(3)]
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("web", listen, bs)]))
    lo = loads(listen)
    lo.wait_more(30, "load before the kill")
    bs[1].stop()
    killed = time.monotonic()
    mark = lo.wait_more(150, "load after the kill")
    lo.stop()
    late = lo.failures(after=killed)
    assert not late, f"{len(late)} new connections failed: {late[:5]}; " \
        + lo.report()
    after = lo.answers(after=killed)
    assert after.get("b1", 0) == 0, after
    assert after["b0"] > 20 and after["b2"] > 20, after
    assert mark > 0


def test_backend_accepts_then_stalls(start_ferry, backends, loads):
    """A backend accepts and never answers: ferry's idle timeout closes
    the connections it got; the other backends' clients see nothing."""
    good = [backends("g0"), backends("g1")]
    bad = backends("stall", handler=stall)
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("web", listen, good + [bad])],
                          idle_timeout="500ms"))
    # Four loops at once: a stalled connection holds its loop for the
    # idle timeout, so 60 connections in a row would take 10 s of waiting.
    los = loads.many(listen, 4)
    marks = [lo.count() for lo in los]
    for lo, mark in zip(los, marks):
        lo.wait_count(mark + 15, "load with a stalled backend: 15 more "
                      "connections", timeout=dl(40))
    for lo in los:
        lo.stop()
    fails = [r for lo in los for r in lo.failures()]
    report = "; ".join(lo.report() for lo in los)
    assert bad.accepted > 0
    assert fails, "no connection reached the stalled backend"
    # Every failure is the idle timeout ending a stalled connection:
    # a clean close after at least the timeout, never a reset or a hang.
    for t0, t1, _, kind in fails:
        assert kind == "eof" and t1 - t0 >= 0.4, (kind, t1 - t0, report)
    ok = sum((lo.answers() for lo in los), collections.Counter())
    assert ok["g0"] + ok["g1"] + len(fails) == sum(lo.count() for lo in los), \
        report
    assert len(fails) <= bad.accepted
    wait_for(lambda: bad.active == 0, dl(10),
             "ferry closed its side of every stalled connection")


# --------------------------------------------------------------- reloads


def test_100_sighup_reloads(start_ferry, backends, loads):
    """100 reloads in a row, each waited for, alternating two configs
    (weights and the balancing algorithm change): no failed connection,
    no leaked descriptor."""
    bs = [backends(f"b{i}") for i in range(3)]
    listen = ft.free_addr()
    texts = [ft.config([ft.service("web", listen, bs)]),
             ft.config([ft.service("web", listen, [(bs[0], 2), bs[1],
                                                   (bs[2], 5)],
                                   balance="leastconn")])]
    f = start_ferry(texts[0])
    lo = loads(listen)
    fds0 = f.fd_count()
    n_applied = f.log_text().count("reload: applied")
    for i in range(100):
        f.reload(texts[(i + 1) % 2])
        want = n_applied + i + 1
        wait_for(lambda: f.log_text().count("reload: applied") >= want,
                 dl(10), f"reload {i + 1} applied")
    lo.wait_more(20, "load after the reloads")
    lo.stop()
    assert f.alive()
    assert "reload: rejected" not in f.log_text()
    assert not lo.failures(), lo.report()
    assert lo.count() > 50, lo.report()
    # Open connections come and go; descriptors settle at the start count.
    wait_for(lambda: f.fd_count() <= fds0, dl(10),
             f"descriptor count back to {fds0}")


# --------------------------------------------------------------- descriptors


def test_descriptor_limit_under_load(start_ferry, backends, loads):
    """At RLIMIT_NOFILE ferry pauses accepting (counted), does not spin,
    and serves again once descriptors come back; the load loop may see a
    reset while ferry sits at the limit, none once it recovered."""
    b = backends("b")
    listen = ft.free_addr()
    text, admin = with_admin(ft.config([ft.service("fd", listen, [b])]))
    f = start_ferry(text, rlimit_nofile=64)
    lo = loads(listen, timeout=dl(20))
    held = []
    try:
        # Hold connections until one is not served within 2 s.
        for _ in range(80):
            s = ft.connect(listen)
            try:
                if ft.read_line(s, timeout=ft.scaled(2)) == "b":
                    held.append(s)
                    continue
            except (OSError, EOFError, ValueError):
                pass
            s.close()
            break
        else:
            pytest.fail("80 connections served with 64 descriptors")
        wall0, cpu0 = time.monotonic(), f.cpu_seconds()
        time.sleep(1.0)  # the measurement window, not a wait
        share = (f.cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        assert share < 0.3, f"ferry used {share:.0%} of a CPU at the limit"
        assert f.alive()
    finally:
        for s in held:
            s.close()
    recovered = time.monotonic()
    lo.wait_more(50, "load after the descriptors came back")
    lo.stop()
    late = [r for r in lo.failures() if r[0] >= recovered]
    assert not late, f"failures after recovery: {late[:5]}; {lo.report()}"
    for r in lo.failures():
        assert r[3] in ("reset", "eof"), lo.report()
    wait_for(lambda: metric(admin, "ferry_accept_paused_total") >= 1,
             dl(10), "ferry_accept_paused_total counted the pause")


# --------------------------------------------------------------- clients


def test_slow_reader_memory_bounded(start_ferry, backends, loads):
    """A backend streams 64 MiB to a client that reads 4 KiB at a time:
    back-pressure keeps ferry's memory flat, and other clients are
    served meanwhile."""
    total = 64 << 20
    sent = {"n": 0}

    def firehose(backend, conn):
        chunk = b"x" * (1 << 16)
        while sent["n"] < total and not backend.stopping.is_set():
            conn.sendall(chunk)
            sent["n"] += len(chunk)

    bulk = backends("bulk", handler=firehose)
    web = backends("web")
    slow_addr, web_addr = ft.free_addr(), ft.free_addr()
    f = start_ferry(ft.config([ft.service("bulk", slow_addr, [bulk]),
                               ft.service("web", web_addr, [web])]))
    lo = loads(web_addr)
    rss0 = ft.rss_kb(f.pid)
    s = ft.connect(slow_addr)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        got, peak = 0, rss0
        # 4 s of slow reading in every build: the span of the scenario,
        # not a deadline (the backend is megabytes ahead within it).
        end = time.monotonic() + 4
        for _ in range(100000):
            if time.monotonic() > end:
                break
            got += len(s.recv(4096))
            peak = max(peak, ft.rss_kb(f.pid))
            time.sleep(0.005)  # the slow reader itself, not a wait
        # The backend is far ahead of the reader: the bytes in between
        # sit in socket buffers and at most ferry's two 32 KiB buffers.
        assert sent["n"] - got > (1 << 20), (sent["n"], got)
        limit = (96 if SANITIZED else 24) << 10
        assert peak - rss0 < limit, \
            f"ferry RSS grew {peak - rss0} KiB while a client read slowly"
    finally:
        s.close()
    lo.wait_more(20, "load after the slow reader")
    lo.stop()
    assert not lo.failures(), lo.report()


def test_silent_clients_idle_timeout(start_ferry, backends, loads):
    """Clients that connect and never send: the idle timeout closes each
    (the greeting they get is the last traffic); a busy client beside
    them is never touched."""
    b = backends("b")
    listen = ft.free_addr()
    text, admin = with_admin(ft.config([ft.service("web", listen, [b])],
                                       idle_timeout="600ms"))
    f = start_ferry(text)
    lo = loads(listen)
    silent = [ft.connect(listen) for _ in range(20)]
    try:
        t0 = time.monotonic()
        for s in silent:
            how = ft.closed_how(s, dl(10))
            if isinstance(how, tuple):  # the greeting; then the close
                how = ft.closed_how(s, dl(10))
            assert how in ("eof", "reset"), how
        assert time.monotonic() - t0 >= 0.5
    finally:
        for s in silent:
            s.close()
    lo.wait_more(20, "load after the silent clients")
    lo.stop()
    assert not lo.failures(), lo.report()
    assert f.alive()
    wait_for(lambda: metric(admin, "ferry_service_connections_active",
                            service="web") == 0, dl(10),
             "no connection left open")


def test_flood_over_service_cap(start_ferry, backends, loads):
    """A service at max_connections gets a flood of 200 connections at
    once: each is refused cleanly (reset, or an orderly close), counted,
    and never waits; another service's load sees nothing; ferry stays
    healthy and serves the capped service again afterwards."""
    b = backends("b")
    capped, other = ft.free_addr(), ft.free_addr()
    text, admin = with_admin(ft.config([
        ft.service("capped", capped, [b], max_connections=5),
        ft.service("other", other, [b]),
    ]))
    f = start_ferry(text)
    lo = loads(other)
    held = [ft.connect(capped) for _ in range(5)]
    outcomes = collections.Counter()
    try:
        for s in held:
            assert ft.read_line(s) == "b"
        socks = []
        for _ in range(200):
            try:
                socks.append(ft.connect(capped, dl(5)))
            except ConnectionResetError:
                outcomes["reset"] += 1
        for s in socks:
            try:
                how = ft.closed_how(s, dl(5))
            except socket.timeout:
                how = "timeout"
            outcomes[how if isinstance(how, str) else "served"] += 1
            s.close()
    finally:
        for s in held:
            s.close()
    assert outcomes["reset"] + outcomes["eof"] == 200, outcomes
    assert at.http(admin, "GET", "/healthz")[0] == 200
    wait_for(lambda: metric(admin, "ferry_service_connections_failed_total",
                            service="capped", reason="limit") >= 200,
             dl(10), "200 refusals counted")
    wait_for(lambda: ft.try_hello(capped, dl(2)) == "b", dl(10),
             "the capped service serves again")
    lo.wait_more(20, "load after the flood")
    lo.stop()
    assert not lo.failures(), lo.report()
    assert f.alive()


# --------------------------------------------------------------- API server


def test_api_server_gone_and_back(tmp_path, start_ferry, loads):
    """The API server stops and stays away for a while: routing is
    unchanged and the load sees no failure; once it is back, a change
    made meanwhile is applied."""
    import kubetest as kt
    from kapisim_client import make_ca_and_cert, start_sim
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI for the sim's TLS certificate")
    pki = make_ca_and_cert(str(tmp_path / "pki"))
    sim = start_sim(str(tmp_path), tls=pki,
                    tokens={"tok-admin": "admin",
                            "tok-ferry": "ferry get,list,watch:*"},
                    bookmark_interval=0.5, service_cidr=kt.service_cidr())
    pods = {}
    try:
        sa = kt.ServiceAccount(tmp_path / "sa", sim.ca_file, "tok-ferry")
        pods = kt.start_pods(["pod-1", "pod-2", "pod-3"], tmp_path)
        np = kt.node_port()
        sim.create("services", kt.svc_obj("web", [("http", 80, np)]))
        port = pods["pod-1"].port
        kt.put_slice(sim, "web-1", "web",
                     [kt.ep(pods["pod-1"]), kt.ep(pods["pod-2"])], port)
        adm = kt.Admin(ft.free_addr())
        f = start_ferry(kt.kube_config(sim.url, sa.path, adm.addr),
                        wait=False)
        adm.wait_ready(f)
        addr = f"127.0.0.1:{np}"
        wait_for(lambda: kt.try_ask(addr) in ("pod-1", "pod-2"), dl(15),
                 "web served")
        lo = kt.Load(addr, max_seconds=dl(60))
        lo.start()
        lo.wait_more(10, "load before the outage")
        off = f.log_size()
        sim.stop()
        f.wait_log(r"lost the API server", off, dl(20))
        mark = lo.wait_more(40, "load during the outage")
        assert set(lo.since(mark)) <= {"pod-1", "pod-2"}, lo.report()
        assert adm.readyz()[0] == 200
        sim.start()
        kt.put_slice(sim, "web-1", "web",
                     [kt.ep(pods["pod-2"]), kt.ep(pods["pod-3"])], port)
        wait_for(lambda: sorted(adm.backend_names("default/web:http"))
                 == ["pod-2", "pod-3"], dl(30), "the change applied")
        mark = lo.wait_more(30, "load after the API came back")
        lo.stop()
        assert set(lo.since(mark + 5)) <= {"pod-2", "pod-3"}, lo.report()
        assert not lo.failures, lo.report()
    finally:
        sim.stop()
        for p in pods.values():
            p.stop()
