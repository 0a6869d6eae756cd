"""Tests of ferry-floor (bench/floor.c), the minimal relay bench/run and
bench/profile measure ferry against.

It must relay correctly for its figures to mean anything: every ferry-bench
mode through it with no error, a half-close passed on (the client's FIN
reaches the backend, the backend's answer still comes back), and a backend
that refuses ends the client's connection. No speed is asserted.

The binaries come from FERRY_BUILD_DIR (bench/ferry-floor and
bench/ferry-bench), else build/ under the repository root.
"""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
FLOOR = os.path.join(BUILD, "bench", "ferry-floor")
BENCH = os.environ.get("FERRY_BENCH_BIN", os.path.join(BUILD, "bench", "ferry-bench"))

# The sanitizer pass runs the tests of ferry's own code; this file
# checks the leanest relay of the bench, not ferry: once, in the release pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="the bench's own relay, not ferry: once, in the release pass")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port, proc, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, "exited early: rc=%s" % proc.returncode
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on %d within %.0f s" % (port, deadline_s))


@pytest.fixture(scope="module")
def relays():
    """One backend per mode, and one ferry-floor in front of each."""
    for path in (FLOOR, BENCH):
        if not os.access(path, os.X_OK):
            pytest.skip("%s is not built" % path)
    modes = ("http", "echo", "fixed", "sink", "source")
    back = {m: free_port() for m in modes}
    cmd = [BENCH, "serve", "--max-seconds", "120"]
    for m in modes:
        cmd += ["--mode", m] + (["--size", "100"] if m == "fixed" else [])
        cmd += ["--name", "web-floor"] if m == "http" else []
        cmd += ["--listen", "127.0.0.1:%d" % back[m]]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)]
    front = {}
    try:
        assert procs[0].stdout.readline().strip() == "ready"
        for m in modes + ("refused",):
            front[m] = free_port()
            target = back.get(m) or free_port()  # "refused": nobody there
            procs.append(subprocess.Popen(
                [FLOOR, "127.0.0.1:%d" % front[m], "127.0.0.1:%d" % target],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            wait_port(front[m], procs[-1])
        yield front
        for p in procs[1:]:
            assert p.poll() is None, "ferry-floor died: %s" % p.stderr.read()
    finally:
        for p in reversed(procs):
            stop(p)


def run_client(*args):
    res = subprocess.run([BENCH, *args, "--quiet"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout.splitlines()[-1])
    assert r["errors_total"] == 0, r["errors"]
    assert r["count"] > 0
    return r


def test_connrate_count(relays):
    r = run_client("connrate", "--target", "127.0.0.1:%d" % relays["fixed"],
                   "--count", "2000", "--concurrency", "32", "--size", "64",
                   "--reply-size", "100", "--duration", "30")
    assert r["count"] == 2000
    assert r["bytes_recv"] == 100 * 2000


def test_rr(relays):
    r = run_client("rr", "--target", "127.0.0.1:%d" % relays["echo"],
                   "--connections", "8", "--duration", "1")
    assert r["bytes_recv"] == 64 * r["count"]


@pytest.mark.parametrize("direction,mode", [("down", "source"), ("up", "sink"),
                                            ("both", "echo")])
def test_stream(relays, direction, mode):
    r = run_client("stream", "--target", "127.0.0.1:%d" % relays[mode],
                   "--connections", "4", "--direction", direction,
                   "--duration", "1")
    if direction != "down":
        assert r["bytes_sent"] > 0
    if direction != "up":
        assert r["bytes_recv"] > 0


def test_idle(relays):
    r = run_client("idle", "--target", "127.0.0.1:%d" % relays["echo"],
                   "--connections", "300", "--duration", "1")
    assert r["held"] == 300


def test_half_close_passes_fin_and_answer(relays):
    # The request ends with our FIN; the backend answers and closes, and the
    # answer must still come back through the relay, followed by its FIN.
    with socket.create_connection(("127.0.0.1", relays["http"]), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert data.endswith(b"\r\n\r\nweb-floor\n")


def test_large_transfer_is_exact(relays):
    # More than the socket buffers hold: the relay must keep the remainder
    # of a partial write and resume on the next writable edge.
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    with socket.create_connection(("127.0.0.1", relays["echo"]), timeout=10) as s:
        s.setblocking(False)
        sent, got = 0, bytearray()
        end = time.monotonic() + 20
        while len(got) < len(payload) and time.monotonic() < end:
            if sent < len(payload):
                try:
                    sent += s.send(payload[sent:sent + 65536])
                except BlockingIOError:
                    pass
            try:
                got += s.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.001)
    assert bytes(got) == payload


def test_refused_backend_closes_client(relays):
    with socket.create_connection(("127.0.0.1", relays["refused"]), timeout=5) as s:
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass


def test_usage():
    if not os.access(FLOOR, os.X_OK):
        pytest.skip("%s is not built" % FLOOR)
    for argv in ([], ["127.0.0.1:1"], ["localhost:1", "127.0.0.1:2"],
                 ["127.0.0.1:0", "127.0.0.1:2"]):
        res = subprocess.run([FLOOR, *argv], capture_output=True, text=True,
                             timeout=10)
        assert res.returncode == 2, argv
        assert "usage" in res.stderr
