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
import shutil
import signal
import socket
import subprocess
import time

import pytest

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
    for path in (BIN, DRIVE):
        if not os.access(path, os.X_OK):
            return "%s not built" % path
    return None


def test_kernel_bench_smoke(tmp_path):
    """`bench/run kernel` between namespaces: both targets measured in
    every scenario with positive rates and CPU, and nothing left behind.
    Half-second runs: it checks the harness, never the figures."""
    why = _kernel_skip()
    if why:
        pytest.skip(why)
    out = tmp_path / "out"
    p = subprocess.Popen(
        [os.path.join(ROOT, "bench", "run"), "kernel", "--quick",
         "--duration", "0.5", "--bench", BIN, "--nftdrive", DRIVE,
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=60)
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
    for sc in ("connrate", "rr", "stream_down"):
        for target in ("direct", "kernel"):
            m = med["%s/%s" % (sc, target)]
            assert m["rounds"] == 1 and m["errors"] == 0, (sc, target, kinds)
            assert m["gbit" if sc.startswith("stream") else "rate"] > 0, m
            assert m["cpu"] > 0, m
        assert doc["ratios"][sc]["cpu"] > 0
    text = (out / "kernel.md").read_text()
    assert "| connrate | conn/s |" in text and "| rr | req/s |" in text
    assert "| stream_down | Gbit/s |" in text
    # The run's namespaces (named after its PID) are gone, and with them
    # its links, processes and table.
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
