"""Upgrades without a refused connection: a new ferry started with
--takeover (or by SIGUSR2 to the running one) receives the running
process's listening sockets over --takeover-socket (SCM_RIGHTS), serves
on them, and tells the old one to drain; connections already open finish
on the old process. And sd_notify: READY, RELOADING with the outcome of
a reload, STOPPING.

Clients here keep connecting the whole time, from two threads, and every
connection must get its greeting: none refused, reset or timed out."""

import os
import re
import signal
import socket
import threading
import time

import pytest

import ferrytest as ft


def cfg(listen, backends, **kw):
    return ft.config([ft.service("web", listen, backends)],
                     drain_timeout="10s", **kw)


class Loop:
    """Two threads connecting to <addr> over and over until stopped,
    each connection read to its greeting line; every failure kept."""

    def __init__(self, addr, threads=2):
        self.addr = addr
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self):
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                got = ft.hello(self.addr, timeout=3)
                with self.lock:
                    if got == "b":
                        self.ok += 1
                    else:
                        self.failures.append("greeting %r" % got)
            except OSError as e:
                with self.lock:
                    self.failures.append(repr(e))

    def count(self):
        with self.lock:
            return self.ok

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        return self.ok, self.failures


def more_served(loop, n=20, what="connections served"):
    base = loop.count()
    ft.wait_for(lambda: loop.count() >= base + n, what=what)


def test_ten_hand_overs_refuse_and_reset_nothing(start_ferry, backends,
                                                 tmp_path):
    b = backends("b")
    listen = ft.free_addr()
    sock = str(tmp_path / "takeover.sock")
    text = cfg(listen, [b])
    cur = start_ferry(text, args=["--takeover-socket", sock], name="f0")
    loop = Loop(listen)
    try:
        more_served(loop)
        for i in range(1, 11):
            new = start_ferry(text, args=["--takeover-socket", sock,
                                          "--takeover"], name="f%d" % i)
            new.wait_log(r"takeover: received \d+ listening socket")
            new.wait_log(r"previous ferry released its addresses")
            assert cur.wait_exit() == 0
            cur.wait_log(r"takeover: handed \d+ listening socket")
            cur = new
            more_served(loop, what="connections after hand-over %d" % i)
    finally:
        ok, failures = loop.stop()
    assert failures == [], "%d failed of %d: %s" % (
        len(failures), ok + len(failures), failures[:5])
    assert ok > 200
    # The last one answers on the socket for the next.
    assert os.path.exists(sock)


def test_open_connections_finish_on_the_old_process(start_ferry, backends,
                                                    tmp_path):
    b = backends("b", handler=ft.greet_echo)
    listen = ft.free_addr()
    sock = str(tmp_path / "takeover.sock")
    text = cfg(listen, [b])
    old = start_ferry(text, args=["--takeover-socket", sock], name="old")
    held = ft.connect(listen)
    assert ft.read_line(held) == "b"
    new = start_ferry(text, args=["--takeover-socket", sock, "--takeover"],
                      name="new")
    old.wait_log(r"draining: the new process accepts on the sockets, "
                 r"1 connection\(s\) open")
    # The old process still relays it, and serves nothing new.
    for k in range(3):
        held.sendall(b"ping %d\n" % k)
        assert ft.read_line(held) == "ping %d" % k
        assert ft.hello(listen) == "b"
    assert old.alive()
    held.close()
    assert old.wait_exit() == 0
    assert ft.hello(listen) == "b"
    assert new.alive()


def test_sigusr2_starts_the_successor(start_ferry, backends, tmp_path):
    b = backends("b")
    listen = ft.free_addr()
    sock = str(tmp_path / "takeover.sock")
    old = start_ferry(cfg(listen, [b]), args=["--takeover-socket", sock],
                      name="old")
    loop = Loop(listen)
    pid = None
    try:
        more_served(loop)
        off = old.log_size()
        old.signal(signal.SIGUSR2)
        m = old.wait_log(r"SIGUSR2: started \S+ \(pid (\d+)\) to take over",
                         start=off)
        pid = int(m.group(1))
        # The child logs to the same file.
        old.wait_log(r"previous ferry released its addresses", start=off)
        assert old.wait_exit() == 0
        more_served(loop, what="connections served by the successor")
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            assert b"--takeover\0" in f.read()
        # Its workers do not inherit the old control thread's priority.
        nice = ft.thread_nice(pid)
        assert nice["control"] == 5 and nice["ferry-w0"] == 0, nice
    finally:
        ok, failures = loop.stop()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            ft.wait_for(lambda: not os.path.exists("/proc/%d" % pid)
                        or open("/proc/%d/stat" % pid).read().split()[2]
                        == "Z", what="successor stopped")
    assert failures == [], failures[:5]


def test_takeover_refusals(start_ferry, backends, tmp_path, ferry_bin):
    """Bad uses get a clear answer, and the running ferry is never
    disturbed by them."""
    import subprocess
    b = backends("b")
    listen = ft.free_addr()
    sock = str(tmp_path / "takeover.sock")
    r = subprocess.run([ferry_bin, "--takeover"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "--takeover needs --takeover-socket" \
        in r.stderr
    # Nobody to take over from: starts afresh.
    lone = start_ferry(cfg(listen, [b]), name="lone",
                       args=["--takeover-socket", sock, "--takeover"])
    lone.wait_log(r"no running ferry at .*starting afresh")
    assert ft.hello(listen) == "b"
    # Another process on the same takeover socket without --takeover.
    other = start_ferry(cfg(ft.free_addr(), [b]), name="other",
                        args=["--takeover-socket", sock])
    other.wait_log(r"a running ferry listens there \(start this one with "
                   r"--takeover")
    # Garbage on the takeover socket: logged, nothing handed over.
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.connect(sock)
    c.send(b"GIVE ME EVERYTHING")
    assert c.recv(256) == b""
    c.close()
    lone.wait_log(r"takeover: unexpected message .*keeps serving")
    assert ft.hello(listen) == "b"
    # Kubernetes mode: refused with the reason.
    r = subprocess.run([ferry_bin, "--api-server", "http://127.0.0.1:9",
                        "--takeover-socket", sock, "--takeover"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "file-configured services only" in r.stderr
    assert ft.hello(listen) == "b"


def test_sd_notify_ready_reloading_stopping(start_ferry, backends, tmp_path,
                                            monkeypatch):
    b = backends("b")
    listen = ft.free_addr()
    path = str(tmp_path / "notify.sock")
    mgr = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    mgr.bind(path)
    mgr.settimeout(ft.scaled(5))
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    f = start_ferry(cfg(listen, [b]), name="n")
    monkeypatch.delenv("NOTIFY_SOCKET")

    def msg():
        return dict(line.split("=", 1) for line in
                    mgr.recv(4096).decode().splitlines())

    m = msg()
    assert m["READY"] == "1" and m["MAINPID"] == str(f.pid)
    assert re.match(r"serving 1 service\(s\)", m["STATUS"])
    f.reload(cfg(listen, [b], log_level="debug"))
    m = msg()
    assert m["RELOADING"] == "1" and int(m["MONOTONIC_USEC"]) > 0
    m = msg()
    assert m["READY"] == "1" and m["STATUS"].startswith("reload applied")
    f.reload("services: [\n")  # does not parse
    assert msg()["RELOADING"] == "1"
    m = msg()
    assert m["READY"] == "1" and m["STATUS"].startswith("reload rejected")
    f.signal(signal.SIGTERM)
    assert msg() == {"STOPPING": "1"}
    assert f.wait_exit() == 0
    mgr.close()
