"""Tests of the bench's minimal relays, which bench/run and bench/profile
measure ferry against: ferry-floor (bench/floor.c, epoll), ferry-uring
(bench/uring.c, io_uring) and ferry-sockmap (bench/sockmap.c, a BPF
sockmap moves the bytes).

Each must relay correctly for its figures to mean anything: every
ferry-bench mode through it with no error, a half-close passed on (the
client's FIN reaches the backend, the backend's answer still comes back),
bytes exact through a reader that stops reading (back-pressure), and a
backend that refuses ends the client's connection. No speed is asserted.

The binaries come from FERRY_BUILD_DIR (bench/ferry-floor, ferry-uring,
ferry-sockmap and ferry-bench), else build/ under the repository root. A
relay that is not built (its library missing) is skipped, and so is
ferry-sockmap without the privilege to load BPF programs, and unless
FERRY_TEST_SOCKMAP=1: its known race makes it fail now and then.
"""

import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest

import ferrytest as ft

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
RELAYS = {name: os.path.join(BUILD, "bench", "ferry-" + name)
          for name in ("floor", "uring", "sockmap")}
BENCH = os.environ.get("FERRY_BENCH_BIN", os.path.join(BUILD, "bench", "ferry-bench"))

# The sanitizer pass runs the tests of ferry's own code; this file
# checks the leanest relay of the bench, not ferry: once, in the release pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="the bench's own relay, not ferry: once, in the release pass")


def free_port():
    # A port of this test process's reserved range (ferrytest): a port
    # the kernel hands out for bind(0) is also an ephemeral port another
    # test's outgoing connection may take before the server binds it.
    return ft.free_port()


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


def relay_usable(name):
    """None, or why the relay <name> cannot run here."""
    path = RELAYS[name]
    if not os.access(path, os.X_OK):
        return "%s is not built (its library or clang is missing)" % path
    if name == "sockmap" and os.geteuid() != 0:
        return "ferry-sockmap loads BPF programs: needs root (CAP_BPF, CAP_NET_ADMIN)"
    if name == "sockmap" and os.environ.get("FERRY_TEST_SOCKMAP") != "1":
        # Bytes sent just as a connection is spliced are sometimes lost
        # (bench/RESULTS.md): about one run of this file in 25 fails a
        # stream test. Out of the default run until that is solved.
        return ("ferry-sockmap loses early bytes now and then (bench/RESULTS.md); "
                "FERRY_TEST_SOCKMAP=1 runs it")
    return None


@pytest.fixture(scope="module", params=sorted(RELAYS))
def relays(request):
    """One backend per mode, and one relay of the kind in front of each."""
    relay = RELAYS[request.param]
    why = relay_usable(request.param)
    if why:
        pytest.skip(why)
    if not os.access(BENCH, os.X_OK):
        pytest.skip("%s is not built" % BENCH)
    modes = ("http", "echo", "fixed", "sink", "source")
    back = {m: free_port() for m in modes}
    cmd = [BENCH, "serve", "--max-seconds", "120"]
    for m in modes:
        cmd += ["--mode", m] + (["--size", "100"] if m == "fixed" else [])
        cmd += ["--name", "web-floor"] if m == "http" else []
        cmd += ["--listen", "127.0.0.1:%d" % back[m]]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)]
    front = {"_pids": {}}
    try:
        assert procs[0].stdout.readline().strip() == "ready"
        for m in modes + ("refused",):
            front[m] = free_port()
            target = back.get(m) or free_port()  # "refused": nobody there
            procs.append(subprocess.Popen(
                [relay, "127.0.0.1:%d" % front[m], "127.0.0.1:%d" % target],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            wait_port(front[m], procs[-1])
            front["_pids"][m] = procs[-1].pid
        yield front
        for p in procs[1:]:
            assert p.poll() is None, "%s died: %s" % (relay, p.stderr.read())
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
                   "--connections", "8", "--duration", "0.5")
    assert r["bytes_recv"] == 64 * r["count"]


@pytest.mark.parametrize("direction,mode", [("down", "source"), ("up", "sink"),
                                            ("both", "echo")])
def test_stream(relays, direction, mode):
    r = run_client("stream", "--target", "127.0.0.1:%d" % relays[mode],
                   "--connections", "4", "--direction", direction,
                   "--duration", "0.5")
    if direction != "down":
        assert r["bytes_sent"] > 0
    if direction != "up":
        assert r["bytes_recv"] > 0


def test_idle(relays):
    r = run_client("idle", "--target", "127.0.0.1:%d" % relays["echo"],
                   "--connections", "300", "--duration", "0.5")
    assert r["held"] == 300


def test_half_close_passes_fin_and_answer(relays, request):
    # The request ends with our FIN; the backend answers and closes, and the
    # answer must still come back through the relay, followed by its FIN.
    if request.node.callspec.params["relays"] == "sockmap":
        # A request sent with its FIN just as the connection is spliced is
        # sometimes lost (bench/RESULTS.md): known, not solved in the
        # prototype.
        request.applymarker(pytest.mark.xfail(
            reason="sockmap: a request and FIN racing the splice are "
            "sometimes lost", strict=False))
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


def test_slow_reader_is_exact(relays):
    # Back-pressure: the client writes without reading until nothing more
    # goes in (every buffer on the way back full), then reads it all. The
    # relay must stop reading where it cannot write, keep what it holds,
    # and resume: every byte once, in order. ferry-sockmap does not stop:
    # the kernel queues what the peer cannot take without bound (the bytes
    # leave the receiving socket's accounting, its window stays open); the
    # bytes must still be exact.
    # Loopback buffers grow to tens of MB: a small receive buffer on the
    # client and a payload larger than the rest of the path usually holds.
    payload = bytes(range(251)) * (32 * 1024 * 1024 // 251)  # about 32 MiB
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)
        s.settimeout(10)
        s.connect(("127.0.0.1", relays["echo"]))
        s.setblocking(False)
        sent, got = 0, bytearray()
        end = time.monotonic() + 20
        while sent < len(payload) and time.monotonic() < end:
            _, w, _ = select.select([], [s], [], 0.3)
            if not w:
                break  # stalled: the whole path is full
            try:
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
        # Where the path stalls varies with the kernel's buffer tuning
        # (17 to over 32 MiB here), so it is not asserted: only that every
        # byte comes back, in order, after it.
        while len(got) < len(payload) and time.monotonic() < end:
            r, w, _ = select.select([s], [s] if sent < len(payload) else [], [], 1)
            if w:
                sent += s.send(payload[sent:sent + 65536])
            if r:
                got += s.recv(1 << 20)
    assert len(got) == len(payload)
    assert bytes(got) == payload


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_closed_connections_are_released(relays):
    # Every connection the clients close is closed by the relay too, both
    # sockets: none left in CLOSE_WAIT holding descriptors.
    pid = relays["_pids"]["echo"]
    base = open_fds(pid)
    socks = [socket.create_connection(("127.0.0.1", relays["echo"]), timeout=5)
             for _ in range(200)]
    try:
        for s in socks:
            s.sendall(b"x")
        for s in socks:
            assert s.recv(1) == b"x"
    finally:
        for s in socks:
            s.close()
    end = time.monotonic() + 10
    while open_fds(pid) > base and time.monotonic() < end:
        time.sleep(0.05)
    assert open_fds(pid) <= base, "%d descriptors open, %d before" % (
        open_fds(pid), base)


def test_refused_backend_closes_client(relays):
    with socket.create_connection(("127.0.0.1", relays["refused"]), timeout=5) as s:
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass


@pytest.mark.parametrize("name", sorted(RELAYS))
def test_usage(name):
    if not os.access(RELAYS[name], os.X_OK):
        pytest.skip("%s is not built" % RELAYS[name])
    for argv in ([], ["127.0.0.1:1"], ["localhost:1", "127.0.0.1:2"],
                 ["127.0.0.1:0", "127.0.0.1:2"]):
        res = subprocess.run([RELAYS[name], *argv], capture_output=True, text=True,
                             timeout=10)
        assert res.returncode == 2, argv
        assert "usage" in res.stderr
