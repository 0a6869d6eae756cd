"""Tests of the bench programs themselves (issue 6).

A short run of each ferry-bench client mode against a local `ferry-bench
serve` must give one well-formed JSON result with non-zero counts and no
errors. These check the tools, never their speed: no figure is asserted
beyond "more than zero".

The binary comes from FERRY_BENCH_BIN, else build/bench/ferry-bench under
the repository root.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

# The sanitizer pass runs the tests of ferry's own code; this file
# checks the bench's tools (ferry-bench, bench/run): once, in the release
# pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="the bench's tools, not ferry's code: once, in the release pass")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("FERRY_BENCH_BIN", os.path.join(ROOT, "build", "bench", "ferry-bench"))

ERROR_KINDS = {"refused", "reset", "timeout", "short_read", "local", "other"}
LATENCY_KEYS = ("p50_us", "p90_us", "p99_us", "p999_us")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc, want, deadline_s=10.0):
    """Read proc's stdout until a line equal to <want>, within a deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError("serve exited early: rc=%s" % proc.returncode)
        line = proc.stdout.readline()
        if line.strip() == want:
            return
    raise AssertionError("no %r line within %.0f s" % (want, deadline_s))


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def backends():
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built at %s (set FERRY_BENCH_BIN)" % BIN)
    ports = {m: free_port() for m in ("http", "echo", "fixed", "sink", "source")}
    cmd = [BIN, "serve", "--max-seconds", "120"]
    for mode, port in ports.items():
        cmd += ["--mode", mode]
        if mode == "http":
            cmd += ["--name", "web-test"]
        if mode == "fixed":
            cmd += ["--size", "100"]
        cmd += ["--listen", "127.0.0.1:%d" % port]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_line(proc, "ready")
        yield ports
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()


def run_client(*args, timeout=30):
    res = subprocess.run([BIN, *args], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    lines = [l for l in res.stdout.splitlines() if l.strip()]
    objs = [json.loads(l) for l in lines]  # every line is JSON
    results = [o for o in objs if "event" not in o]
    assert len(results) == 1, res.stdout
    return results[0], objs, res.stderr


def check_common(r, mode, unit):
    assert r["mode"] == mode
    assert r["unit"] == unit
    assert 0 < r["duration_s"] < 10
    assert set(r["errors"]) == ERROR_KINDS
    assert r["errors_total"] == 0, r["errors"]
    assert sum(r["errors"].values()) == 0
    assert r["count"] > 0
    assert r["rate"] > 0


def check_latency(r):
    assert r["samples"] > 0
    vals = [r[k] for k in LATENCY_KEYS]
    assert all(v > 0 for v in vals), vals
    assert vals == sorted(vals), vals  # p50 <= p90 <= p99 <= p99.9
    assert r["min_us"] <= r["p50_us"] <= r["max_us"]


def test_connrate_fixed(backends):
    r, _, err = run_client("connrate", "--target", "127.0.0.1:%d" % backends["fixed"],
                           "--duration", "1", "--concurrency", "4",
                           "--size", "10", "--reply-size", "100", "--label", "t")
    check_common(r, "connrate", "conn")
    check_latency(r)
    assert r["label"] == "t"
    assert r["bytes_recv"] >= 100 * r["count"]
    assert "conn/s" in err


def test_connrate_echo_count_bound(backends):
    r, _, _ = run_client("connrate", "--target", "127.0.0.1:%d" % backends["echo"],
                         "--duration", "10", "--count", "500")
    check_common(r, "connrate", "conn")
    assert r["count"] == 500
    assert r["samples"] == 500


def test_rr(backends):
    r, _, err = run_client("rr", "--target", "127.0.0.1:%d" % backends["echo"],
                           "--duration", "1", "--connections", "4")
    check_common(r, "rr", "req")
    check_latency(r)
    # Requests in flight at the deadline were sent but are not counted.
    assert 64 * r["count"] <= r["bytes_sent"] <= 64 * (r["count"] + 4)
    assert "req/s" in err


@pytest.mark.parametrize("direction,mode", [("down", "source"), ("up", "sink"),
                                            ("both", "echo")])
def test_stream(backends, direction, mode):
    r, _, _ = run_client("stream", "--target", "127.0.0.1:%d" % backends[mode],
                         "--duration", "1", "--connections", "2",
                         "--direction", direction)
    check_common(r, "stream", "byte")
    assert r["direction"] == direction
    assert r["throughput_mbit_s"] > 0
    if direction in ("up", "both"):
        assert r["bytes_sent"] > 0
    if direction in ("down", "both"):
        assert r["bytes_recv"] > 0


def test_idle(backends):
    r, objs, _ = run_client("idle", "--target", "127.0.0.1:%d" % backends["echo"],
                            "--duration", "1", "--connections", "200")
    check_common(r, "idle", "conn")
    check_latency(r)
    assert r["held"] == 200
    holding = [o for o in objs if o.get("event") == "holding"]
    assert len(holding) == 1 and holding[0]["held"] == 200


def test_refused_is_counted(backends):
    port = free_port()  # nobody listens there
    res = subprocess.run([BIN, "connrate", "--target", "127.0.0.1:%d" % port,
                          "--duration", "1", "--max-errors", "50"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.splitlines()[-1])
    assert r["count"] == 0
    assert r["errors"]["refused"] >= 50
    assert r["errors_total"] == sum(r["errors"].values())


def test_http_answers_with_name(backends):
    with socket.create_connection(("127.0.0.1", backends["http"]), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        end = time.monotonic() + 5
        while time.monotonic() < end:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 9" in head
    assert body == b"web-test\n"


def test_usage_error():
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    res = subprocess.run([BIN, "rr"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2
    res = subprocess.run([BIN, "serve", "--mode", "nope", "--listen", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 2


# ---- bench/run kernel: a smoke run, not a measurement ------------------

DRIVE = os.path.join(os.environ["FERRY_BUILD_DIR"], "tests", "tools", "nftdrive") \
    if os.environ.get("FERRY_BUILD_DIR") else \
    os.path.join(ROOT, "build", "tests", "tools", "nftdrive")


def _kernel_skip():
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "taskset"):
        if shutil.which(tool) is None:
            return "needs the %s command" % tool
    for path in (BIN, DRIVE, FERRY):
        if not os.access(path, os.X_OK):
            return "%s not built" % path
    return None


def test_kernel_bench_smoke(tmp_path):
    """`bench/run kernel` between namespaces: every target (direct, the
    kube-proxy-shaped DNAT, ferry's table, ferry, HAProxy, NGINX; UDP
    without HAProxy) measured in a TCP, a stream and the UDP scenario,
    with positive rates and CPU, a cost beyond direct for each, and
    nothing left behind. Quarter-second runs: it checks the harness,
    never the figures."""
    why = _kernel_skip()
    if why:
        pytest.skip(why)
    for tool in ("haproxy", "nginx"):
        if shutil.which(tool) is None:
            pytest.skip("needs %s" % tool)
    out = tmp_path / "out"
    p = subprocess.Popen(
        [os.path.join(ROOT, "bench", "run"), "kernel", "--quick",
         "--duration", "0.25", "--bench", BIN, "--nftdrive", DRIVE,
         "--ferry", FERRY, "--scenarios", "connrate,stream_down,udp",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-2000:]
    doc = json.loads((out / "kernel.json").read_text())
    assert doc["failures"] == [], doc["failures"]
    med = doc["medians"]
    # The error kinds of each run, for the message when one had any.
    kinds = []
    with open(out / "raw" / "kernel" / "runs.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            errs = {k: v for k, v in rec["result"].get("errors", {}).items()
                    if v}
            if errs:
                kinds.append((rec.get("scenario"), rec.get("target"), errs))
    every = ["direct", "dnat", "kernel", "ferry", "haproxy", "nginx"]
    for sc in ("connrate", "stream_down", "udp"):
        targets = [t for t in every if not (sc == "udp" and t == "haproxy")]
        for target in targets:
            m = med["%s/%s" % (sc, target)]
            assert m["rounds"] == 1 and m["errors"] == 0, (sc, target, kinds)
            assert m["gbit" if sc.startswith("stream") else "rate"] > 0, m
            assert m["cpu"] > 0 and m["cpu_lab"] > 0, m
            assert "cpu_stats" in m  # bench/run --compare's spread
            if target != "direct":
                assert "cpu_lab_net" in m and "cpu_net" in m, m
            if target in ("ferry", "haproxy", "nginx"):
                assert m["cpu_proxy"] > 0, m
        assert doc["ratios"][sc]["cpu"] > 0
    assert "udp/haproxy" not in med
    text = (out / "kernel.md").read_text()
    assert "| connrate | conn/s |" in text and "| udp | req/s |" in text
    assert "| stream_down | Gbit/s |" in text
    assert "| udp | dnat | " in text and "| connrate | nginx | " in text
    # The reference rule set is kube-proxy's shape, and it was the one
    # measured: its table was listed while it served.
    rules = (out / "raw" / "kernel" / "kube-dnat.nft").read_text()
    assert "numgen" in (out / "raw" / "kernel" / "dnat-table.nft").read_text()
    assert "numgen random mod 1 vmap" in rules and "dnat to" in rules
    assert "jump mark-for-masquerade" in rules
    # --compare reads the document.
    cmp = subprocess.run([os.path.join(ROOT, "bench", "run"), "--compare",
                          str(out / "kernel.json"), str(out / "kernel.json")],
                         capture_output=True, text=True, timeout=30)
    assert cmp.returncode == 0 and "udp/dnat" in cmp.stdout, cmp.stderr
    # The run's namespaces (named after its PID) are gone, and with them
    # its links, processes and tables.
    names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                           text=True, timeout=10).stdout
    assert "fkb%d-" % p.pid not in names, names


def test_udp_queries_and_answers():
    """ferry-bench udp against udp-serve: every query answered with
    --reply-size bytes, the run bounded by --count exactly."""
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built at %s" % BIN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([BIN, "udp-serve", "--listen",
                             "127.0.0.1:%d" % port, "--reply-size", "100",
                             "--max-seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_line(proc, "ready")
        r, _, err = run_client("udp", "--target", "127.0.0.1:%d" % port,
                               "--duration", "10", "--count", "500",
                               "--concurrency", "4", "--size", "20",
                               "--reply-size", "100", "--label", "u")
        check_common(r, "udp", "req")
        check_latency(r)
        assert r["count"] == 500 and r["samples"] == 500
        assert r["bytes_sent"] == 20 * 500
        assert r["bytes_recv"] == 100 * 500
        assert "req/s" in err
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read()


class UdpServe:
    """A `ferry-bench udp-serve` on a free loopback port; stop() returns
    what it reports at exit (queries served, distinct source ports)."""

    def __init__(self):
        if not os.access(BIN, os.X_OK):
            pytest.skip("ferry-bench not built at %s" % BIN)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.target = "127.0.0.1:%d" % self.port
        self.proc = subprocess.Popen(
            [BIN, "udp-serve", "--listen", self.target, "--max-seconds", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_line(self.proc, "ready")

    def stop(self):
        stop(self.proc)
        out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def udp_serve():
    srv = UdpServe()
    yield srv
    srv.stop()


def test_udp_open_loop(udp_serve):
    """udp --rate: every scheduled query sent and timed from its slot,
    with the same fields as connrate and rr --rate."""
    r, _, err = run_client("udp", "--target", udp_serve.target,
                           "--rate", "2000", "--count", "300",
                           "--concurrency", "8", "--duration", "10")
    check_common(r, "udp", "req")
    check_open_loop(r, 2000.0, 300)
    assert r["threads"] == 1 and r["source_port"] == "pinned"
    assert "(offered 2000.0)" in err and "missed their slot" in err
    assert "p99.99" in err


@pytest.mark.parametrize("rate", [None, "3000"])
def test_udp_threads(udp_serve, rate):
    """udp -t 2: the threads share slots and count; the merged histogram
    holds every query of both."""
    args = ["--rate", rate] if rate else []
    r, _, err = run_client("udp", "--target", udp_serve.target, "-t", "2",
                           "--count", "301", "--concurrency", "4",
                           "--duration", "10", *args)
    check_common(r, "udp", "req")
    assert r["threads"] == 2 and "2 threads" in err
    assert r["count"] == 301 and r["samples"] == 301
    check_latency(r)
    if rate:
        check_open_loop(r, 3000.0, 301)


@pytest.mark.parametrize("mode", ["fresh", "pinned"])
def test_udp_source_ports(mode):
    """--source-port fresh: a socket, so a source port, per query (the
    backend sees about as many ports as queries); pinned: one per slot."""
    srv = UdpServe()
    try:
        r, _, err = run_client("udp", "--target", srv.target,
                               "--source-port", mode, "--count", "200",
                               "--concurrency", "4", "--duration", "10")
    finally:
        seen = srv.stop()
    check_common(r, "udp", "req")
    assert r["count"] == 200 and r["source_port"] == mode
    assert seen["served"] == 200, seen
    if mode == "fresh":
        assert r["sockets"] == 200
        # ephemeral ports are picked at random: a few may come twice
        assert seen["source_ports"] >= 180, seen
    else:
        assert r["sockets"] == 4 and seen["source_ports"] == 4, seen


@pytest.mark.parametrize("args", [
    ["--source-port", "x"], ["--rate", "0"], ["--rate", "2000000"],
    ["-t", "0"], ["-t", "3", "--concurrency", "2"], ["--spin-us", "x"]])
def test_udp_usage(args):
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    res = subprocess.run([BIN, "udp", "--target", "127.0.0.1:9", *args],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 2 and res.stderr, res
    assert res.stdout == ""


# ---- open loop (--rate), load threads (-t) ------------------------------

QUANT_KEYS = ("p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us")


def check_open_loop(r, rate, count):
    assert r["offered_rate"] == rate
    assert r["scheduled"] == count and r["count"] == count, r
    assert r["samples"] == count and r["unsent"] == 0
    assert 0 <= r["missed"] <= count
    vals = [r[k] for k in QUANT_KEYS]
    assert all(v > 0 for v in vals) and vals == sorted(vals), vals


@pytest.mark.parametrize("mode,args", [
    ("connrate", ["--concurrency", "8"]), ("rr", ["--connections", "4"])])
def test_open_loop(backends, mode, args):
    """--rate: every scheduled unit is sent and timed, the rate is what was
    offered and the summary says how many missed their slot."""
    r, _, err = run_client(mode, "--target", "127.0.0.1:%d" % backends["echo"],
                           "--rate", "2000", "--count", "300",
                           "--duration", "10", *args)
    check_common(r, mode, "conn" if mode == "connrate" else "req")
    check_open_loop(r, 2000.0, 300)
    assert r["threads"] == 1
    assert "(offered 2000.0)" in err and "missed their slot" in err
    assert "p99.99" in err


HOLD_S = 0.15


def slow_first_backend():
    """An echo backend whose first reply takes HOLD_S (a stalled service):
    everything scheduled meanwhile waits behind it."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)

    def serve():
        conn, _ = ls.accept()
        with conn:
            conn.settimeout(20)
            first = True
            while True:
                data = conn.recv(64)
                if not data:
                    return
                if first:
                    first = False
                    time.sleep(HOLD_S)  # the backend's stall, not a wait
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return ls


def test_open_loop_times_from_the_slot():
    """Coordinated omission corrected: with one connection and the first
    reply stalled 150 ms, the ~150 units that came due meanwhile count
    their wait as latency and as missed slots (a closed loop would have
    sent nothing meanwhile and recorded one slow sample)."""
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    ls = slow_first_backend()
    try:
        res = subprocess.run([BIN, "rr", "--target",
                              "127.0.0.1:%d" % ls.getsockname()[1],
                              "--connections", "1", "--rate", "1000",
                              "--count", "200", "--duration", "20", "--quiet"],
                             capture_output=True, text=True, timeout=30)
    finally:
        ls.close()
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.splitlines()[-1])
    assert r["count"] == 200 and r["errors_total"] == 0, r
    assert r["missed"] >= 100, r
    assert r["p50_us"] > 20000, r
    assert r["max_us"] >= HOLD_S * 0.9e6, r


@pytest.mark.parametrize("mode,args", [
    ("connrate", ["--concurrency", "4"]), ("rr", ["--connections", "3"]),
    ("stream", ["--connections", "2", "--direction", "both"])])
def test_threads(backends, mode, args):
    """-t N: N threads share the count; the histograms are merged, so the
    samples are every unit of every thread."""
    n = 3 if mode == "rr" else 2
    count = "301" if mode != "stream" else "2000000"
    r, _, err = run_client(mode, "--target", "127.0.0.1:%d" % backends["echo"],
                           "-t", str(n), "--count", count, "--duration", "10",
                           *args)
    unit = {"connrate": "conn", "rr": "req", "stream": "byte"}[mode]
    check_common(r, mode, unit)
    assert r["threads"] == n and "%d threads" % n in err
    if mode != "stream":
        assert r["count"] == 301 and r["samples"] == 301
        check_latency(r)
    else:
        assert r["count"] >= 2000000


def test_threads_with_rate(backends):
    r, _, _ = run_client("rr", "--target", "127.0.0.1:%d" % backends["echo"],
                         "--threads", "2", "--rate", "3000", "--count", "301",
                         "--connections", "4", "--duration", "10")
    check_common(r, "rr", "req")
    check_open_loop(r, 3000.0, 301)
    assert r["threads"] == 2


@pytest.mark.parametrize("args,rc", [
    (["rr", "-t", "0"], 2), (["rr", "-t", "65"], 2),
    (["idle", "-t", "2"], 2), (["stream", "--rate", "100"], 2),
    (["rr", "--rate", "0"], 2), (["rr", "--rate", "-5"], 2),
    (["rr", "--rate", "1000001"], 2), (["rr", "--spin-us", "x"], 2),
    (["rr", "-t", "4", "--connections", "2"], 1),
])
def test_open_loop_and_threads_usage(args, rc):
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    res = subprocess.run([BIN, *args, "--target", "127.0.0.1:9",
                          "--duration", "1"],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == rc, res.stderr
    assert res.stdout == "" and res.stderr.strip()


# ---- bench/run: --sweep, --compare, statistics, threads per CPU ----------

RUN = os.path.join(ROOT, "bench", "run")
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "proxy", "ferry"))


def load_run_module():
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("bench_run", RUN)
    spec = importlib.util.spec_from_loader("bench_run", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def free_port_run(n):
    """A base port with n free ports after it."""
    for _ in range(50):
        base = random.randint(30000, 60000)
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no run of %d free ports" % n)


def test_sweep(tmp_path):
    """bench/run --sweep: every target at every step until it saturates,
    a table per scenario, an SVG plot, sweep.json. Checks the harness,
    never the figures."""
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    # One target keeps it short (four half-second runs); the table and
    # plot code is the same for every target.
    targets = "ferry" if os.access(FERRY, os.X_OK) else "direct"
    out = tmp_path / "out"
    p = subprocess.Popen(
        ["/usr/bin/python3", RUN, "--sweep", "--sweep-rates", "300,600",
         "--duration", "0.5", "--rounds", "1", "--targets", targets,
         "--bench", BIN, "--ferry", FERRY, "--no-install",
         "--port-base", str(free_port_run(5)), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-2000:]
    text = (out / "summary.md").read_text()
    doc = json.loads((out / "sweep.json").read_text())
    for sc in ("connrate", "rr"):
        assert "## sweep: %s" % sc in text
        for t in targets.split(","):
            for rate in (300, 600):
                key = "%s/%s/%d" % (sc, t, rate)
                if key not in doc:  # left the sweep: saturated below
                    assert doc["%s/%s/300" % (sc, t)]["saturated"], doc
                    continue
                m = doc[key]
                assert m["rounds"] == 1 and m["rate"] > 0, m
                assert m["p50_us"] <= m["p99_us"] <= m["max_us"]
                assert "| %s | %d |" % (t, rate) in text
        root = ET.fromstring((out / ("sweep-%s.svg" % sc)).read_text())
        assert root.tag.endswith("svg")
        assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) \
            == 2 * len(targets.split(","))
    assert "FAILED" not in err


def test_sweep_udp(tmp_path):
    """bench/run --sweep --scenarios udp: ferry-bench udp --rate at each
    step, the same table as the TCP scenarios'."""
    if not os.access(BIN, os.X_OK):
        pytest.skip("ferry-bench not built")
    out = tmp_path / "out"
    res = subprocess.run(
        ["/usr/bin/python3", RUN, "--sweep", "--scenarios", "udp",
         "--sweep-rates", "300", "--duration", "0.5", "--rounds", "1",
         "--targets", "direct", "--bench", BIN, "--no-install",
         "--port-base", str(free_port_run(5)), "--out", str(out)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads((out / "sweep.json").read_text())
    m = doc["udp/direct/300"]
    assert m["rounds"] == 1 and m["rate"] > 0 and m["errors"] == 0, m
    assert "## sweep: udp" in (out / "summary.md").read_text()


def test_median_interval():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import benchstats
    assert benchstats.median_ci([3, 1, 2, 4]) is None  # under 5 rounds
    lo, hi, cover = benchstats.median_ci([5, 1, 4, 2, 3])
    assert (lo, hi) == (1, 5) and abs(cover - 0.9375) < 1e-9
    lo, hi, cover = benchstats.median_ci(list(range(1, 21)))
    assert (lo, hi) == (6, 15) and 0.95 <= cover < 0.96
    s = benchstats.summarize([9, 1, 5, 7, 3, 4])
    assert s["median"] == 4.5 and s["min"] == 1 and s["max"] == 9
    assert s["ci95"] == [1, 9] and s["n"] == 6


def test_compare(tmp_path):
    """--compare: a difference only where the intervals do not overlap;
    one round has no spread and says so."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import benchstats

    def fig(vals):
        return benchstats.summarize(vals)

    def doc(rate, p99, one):
        return {"rr/ferry": {"rounds": 5, "rate": rate[2], "rate_stats": fig(rate),
                             "p99": p99[2], "p99_stats": fig(p99)},
                "rr/nginx": {"rounds": 1, "rate": one,
                             "rate_stats": fig([one])}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc([98, 99, 100, 101, 102], [40, 45, 50, 55, 60], 10)))
    b.write_text(json.dumps(doc([88, 89, 90, 91, 92], [42, 47, 52, 57, 62], 20)))
    res = subprocess.run(["/usr/bin/python3", RUN, "--compare", str(a), str(b)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    rows = {tuple(l.split()[:2]): l for l in res.stdout.splitlines()
            if l.startswith("rr/")}
    assert rows[("rr/ferry", "rate")].endswith("differs: worse")
    assert "-10.0%" in rows[("rr/ferry", "rate")]
    assert rows[("rr/ferry", "p99")].endswith("same within spread")
    assert rows[("rr/nginx", "rate")].endswith("too few rounds")
    # Reversed, the rate change is an improvement.
    res = subprocess.run(["/usr/bin/python3", RUN, "--compare", str(b), str(a)],
                         capture_output=True, text=True, timeout=30)
    assert "differs: better" in res.stdout
    res = subprocess.run(["/usr/bin/python3", RUN, "--compare", str(a),
                          str(tmp_path / "missing.json")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "missing.json" in res.stderr


def test_threads_follow_cpu_lists():
    """relay.workers, nbthread and worker_processes follow --proxy-cpus;
    ferry-bench -t follows --load-cpus."""
    run = load_run_module()
    run.PROXY_CPU, run.LOAD_CPU = "2-4", "0,1"
    args = run.parse_args(["--quick", "--no-install", "--load-cpus", "0,1",
                           "--proxy-cpus", "2-4"])
    assert "relay: {workers: 3}" in run.ferry_config()
    assert "relay: {workers: 3}" in run.ferry_config(udp=True)
    assert "nbthread 3\n" in run.haproxy_config()
    conf = run.nginx_config("/nonexistent")
    assert "worker_processes 3;" in conf and "master_process on;" in conf
    run.PROXY_CPU = "1"
    conf = run.nginx_config("/nonexistent")
    assert "worker_processes 1;" in conf and "master_process off;" in conf
    b = run.Bench.__new__(run.Bench)
    b.args = args
    assert b.client_argv("rr", "ferry")[-2:] == ["-t", "2"]
    assert "-t" not in b.client_argv("idle", "ferry")
    assert b.client_argv("rr_1conn", "ferry")[-2:] == ["-t", "1"]


def need_ferry_on_two_cpus():
    """Skip unless ferry and ferry-bench are built and two CPUs keep the
    load and the proxy apart."""
    if not os.access(BIN, os.X_OK) or not os.access(FERRY, os.X_OK):
        pytest.skip("ferry or ferry-bench not built")
    if os.cpu_count() < 2:
        pytest.skip("needs two CPUs")


def test_scale(tmp_path):
    """bench/run --scale: one pass per proxy CPU count (one here: this
    machine's 1 + 1) and scaling.md with a row per proxy target."""
    need_ferry_on_two_cpus()
    out = tmp_path / "out"
    res = subprocess.run(
        ["/usr/bin/python3", RUN, "--scale", "--scenarios", "connrate",
         "--targets", "direct,ferry", "--duration", "0.5", "--rounds", "1",
         "--load-cpus", "0", "--proxy-cpus", "1", "--bench", BIN,
         "--ferry", FERRY, "--no-install", "--port-base",
         str(free_port_run(5)), "--out", str(out)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    text = (out / "scaling.md").read_text()
    assert "| connrate | ferry | " in text and "direct" not in text.split("|---")[1]
    passes = json.loads((out / "scaling.json").read_text())
    assert len(passes) == 1 and passes[0]["connrate/ferry"]["rate"] > 0
    assert "relay: {workers: 1}" in (
        out / "cpus-1" / "raw" / "connrate-ferry" / "ferry.yaml").read_text()


def test_scaling_table():
    """Two passes: the gain of the added core and the efficiency; a gain
    inside both passes' spread says so."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import benchstats
    import scaling

    def m(vals):
        return {"rate": benchstats.summarize(vals)["median"],
                "rate_stats": benchstats.summarize(vals)}
    meds = [{("rr", "ferry"): m([90, 100, 110]), ("rr", "nginx"): m([90, 100, 110])},
            {("rr", "ferry"): m([170, 180, 190]), ("rr", "nginx"): m([100, 105, 112])}]
    text = scaling.table_md(meds, ["rr"], ["direct", "ferry", "nginx"], [6, 7])
    assert "| 1 core | 2 cores | gain | eff. |" in text
    rows = {l.split("|")[2].strip(): l for l in text.splitlines()
            if l.startswith("| rr |")}
    assert set(rows) == {"ferry", "nginx"}
    assert "| +80 | 0.90 |" in rows["ferry"]
    assert "+5 (within spread)" in rows["nginx"] and "| 0.53 |" in rows["nginx"]


def test_ferry_engine_targets(tmp_path):
    """--targets ferry-epoll,ferry-io_uring run ferry with that
    relay.engine beside plain ferry (the default), in the same run and
    the same table."""
    need_ferry_on_two_cpus()
    out = tmp_path / "out"
    res = subprocess.run(
        ["/usr/bin/python3", RUN, "--scenarios", "connrate",
         "--targets", "ferry,ferry-epoll,ferry-io_uring", "--duration",
         "0.5", "--rounds", "1", "--load-cpus", "0", "--proxy-cpus", "1",
         "--bench", BIN, "--ferry", FERRY, "--no-install", "--port-base",
         str(free_port_run(9)), "--out", str(out)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    raw = out / "raw"
    assert "engine: io_uring" in (
        raw / "connrate-ferry-io_uring" / "ferry-io_uring.yaml").read_text()
    assert "engine: epoll" in (
        raw / "connrate-ferry-epoll" / "ferry-epoll.yaml").read_text()
    assert "engine" not in (raw / "connrate-ferry" / "ferry.yaml").read_text()
    med = json.loads((out / "medians.json").read_text())
    for t in ("ferry-epoll", "ferry-io_uring"):
        assert any(k.startswith("connrate") and k.endswith("/" + t)
                   or ("connrate" in k and t in k) for k in med), med.keys()
    summary = (out / "summary.md").read_text()
    assert "ferry-epoll" in summary and "ferry-io_uring" in summary


def test_nftshards_smoke():
    """bench/nftshards.py: a few Services in one table and in two, one
    line each with positive kernel times, and its namespace gone after.
    It checks the tool, never the figures."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    for tool in ("ip", "nft", "strace"):
        if shutil.which(tool) is None:
            pytest.skip("needs the %s command" % tool)
    res = subprocess.run(
        [os.path.join(ROOT, "bench", "nftshards.py"), "--services", "30",
         "--tables", "1", "2", "--changes", "2", "--part", "7"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [re.match(r"30 services in (\d+) table", x).group(1)
            for x in lines] == ["1", "2"], res.stdout
    for x in lines:
        m = re.search(r"min ([0-9.]+), median ([0-9.]+), max ([0-9.]+) "
                      r"\(2 changes\)", x)
        assert m and 0 < float(m.group(1)) <= float(m.group(3)), x
    after = subprocess.run(["ip", "netns", "list"], capture_output=True,
                           text=True).stdout
    # Only its own: other tests make and delete namespaces meanwhile.
    assert "ferry-shards" not in after, after
    res = subprocess.run([os.path.join(ROOT, "bench", "nftshards.py"),
                          "--tables", "0"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and "--tables" in res.stderr


def _nftdrive_or_skip(*tools):
    """tests/tools/nftdrive of the build under test, for the kernel
    floor's bench tools; skips without root, <tools> or the driver."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip("needs the %s command" % tool)
    d = os.environ.get("FERRY_BUILD_DIR") or os.path.join(ROOT, "build")
    drive = os.path.join(d, "tests", "tools", "nftdrive")
    if not os.access(drive, os.X_OK):
        pytest.skip("tests/tools/nftdrive not built")
    return drive


def test_nftfloor_smoke():
    """bench/nftfloor.py: a few Services, one round of each variant, a
    line a variant with positive update times and a summary; its
    namespace gone after. It checks the tool, never the figures."""
    drive = _nftdrive_or_skip("ip", "nft")
    res = subprocess.run(
        [os.path.join(ROOT, "bench", "nftfloor.py"), "--services", "20",
         "--endpoints", "3", "--extra", "50", "--changes", "2",
         "--rounds", "1", "--nftdrive", drive],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    seen = []
    for x in lines[:-1]:
        m = re.match(r"round 1 +(\w+): update median ([0-9.]+) ms "
                     r"\(min ([0-9.]+), max ([0-9.]+)\) over 2 changes$", x)
        assert m and 0 < float(m.group(3)) <= float(m.group(4)), x
        seen.append(m.group(1))
    assert seen == ["base", "chains", "sets"], res.stdout
    assert re.match(r"20 Services x 3 endpoints, median of 1 rounds: one "
                    r"change [0-9.]+ ms; with 50 chains elsewhere", lines[-1])
    after = subprocess.run(["ip", "netns", "list"], capture_output=True,
                           text=True).stdout
    # Only its own: other tests make and delete namespaces meanwhile.
    assert "ferry-floor" not in after, after


def test_nftlayout_smoke():
    """bench/nftlayout.py: a few Services, each kind of change timed, the
    changed Services answering real connections from their new
    endpoints only, ferry's own table timed beside it, the bindings
    trap; its namespaces gone after. It checks the tool, never the
    figures."""
    drive = _nftdrive_or_skip("ip", "nft", "strace")
    p = subprocess.Popen(
        [os.path.join(ROOT, "bench", "nftlayout.py"), "--services", "12",
         "--endpoints", "3", "--changes", "2", "--probes", "4",
         "--nftdrive", drive, "--bindings", "4", "--first-packet", "3",
         "--connects", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, out + err
    num = r"([0-9.]+)"
    for kind in ("same", "resized, svc4 re-pointed",
                 "resized, set membership"):
        m = re.search(r"^shared, %s: one change %s ms in the kernel "
                      r"\(median; min %s, max %s\) over 2 changes$"
                      % (re.escape(kind), num, num, num), out, re.M)
        assert m and 0 < float(m.group(2)) <= float(m.group(3)), out
    assert len(re.findall(r"^shared: changed Service (6|7) answered 4 "
                          r"connections from [1-3] of its 3 new endpoints$",
                          out, re.M)) == 2, out
    assert re.search(r"^layout 3 resized: one change [0-9.]+ ms in the "
                     r"kernel .* over 2 changes$", out, re.M), out
    m = re.search(r"^shared, first packet: a refused connect\(\) %s us "
                  r"straight to pick4-N, %s us through pick4 behind 3 more "
                  r"count sets \([-+][0-9.]+ ns a set; medians of 10 "
                  r"rounds\), 200 connects each$" % (num, num), out, re.M)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, out
    assert re.search(r"^bindings: 4 chains binding one map: .* then 12 "
                     r"elements", out, re.M), out
    after = subprocess.run(["ip", "netns", "list"], capture_output=True,
                           text=True).stdout
    # Only its own: other tests make and delete namespaces meanwhile.
    for name in ("ferry-layout-", "ferry-layout3-", "ferry-bind-"):
        assert "%s%d" % (name, p.pid) not in after, after
    res = subprocess.run([os.path.join(ROOT, "bench", "nftlayout.py"),
                          "--endpoints", "1"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "--endpoints 2-50" in res.stderr
