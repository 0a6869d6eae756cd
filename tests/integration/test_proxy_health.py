"""Connect failures: retry on another backend, passive health, recovery,
and a reset to the client when no backend can be reached."""

import ctypes
import os
import shutil
import socket
import subprocess
import uuid
from collections import Counter

import pytest

import ferrytest as ft


def serve_many(addr, n):
    """n connections one after the other; returns (names, failures)."""
    got, failures = [], []
    for i in range(n):
        try:
            got.append(ft.hello(addr))
        except (OSError, EOFError, ValueError) as e:
            failures.append((i, repr(e)))
    return got, failures


def test_refused_backend_is_retried(start_ferry, backends, closer):
    live1, live2 = backends("live-1"), backends("live-2")
    dead = closer(ft.RefusingPort())
    assert ft.is_refused(dead.addr), "sanity: the dead port must refuse"
    listen = ft.free_addr()
    # The dead backend comes first, so the very first pick hits it.
    start_ferry(ft.config([ft.service(
        "web", listen, [ft.backend_entry(dead.addr, name="dead"), live1,
                        live2])], retries=3))
    got, failures = serve_many(listen, 60)
    assert failures == []
    counts = Counter(got)
    assert set(counts) == {"live-1", "live-2"}
    # Both live backends keep getting traffic.
    assert min(counts.values()) >= 15, counts


def test_blackhole_backend_connect_timeout_then_retry(start_ferry, backends,
                                                     closer):
    """A backend whose SYNs are dropped (full accept queue) makes ferry's
    connect time out; the client is served by another backend."""
    hole = closer(ft.BlackHole())
    with pytest.raises(OSError):  # sanity: a direct connect times out
        ft.connect(hole.addr, timeout=0.5).close()
    live1, live2 = backends("live-1"), backends("live-2")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [ft.backend_entry(hole.addr, name="hole"), live1,
                        live2])], connect_timeout="300ms", retries=3))
    got, failures = serve_many(listen, 30)
    assert failures == []
    assert set(got) == {"live-1", "live-2"}


def test_refused_backend_skipped_then_recovers(start_ferry, backends,
                                               closer):
    """After a refusal the backend is skipped for a short back-off; once it
    listens again, it gets new connections again."""
    live = backends("live")
    port = ft.RefusingPort()
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [ft.backend_entry(port.addr, name="back"), live])]))
    got, failures = serve_many(listen, 6)
    assert failures == []
    assert set(got) == {"live"}
    back = backends("back", sock=port.take())

    def back_gets_one():
        return ft.hello(listen) == "back"
    ft.wait_for(back_gets_one, timeout=ft.scaled(30), interval=0.1,
                what="the recovered backend to be used again")
    # And it takes its share again: round-robin over two.
    got, failures = serve_many(listen, 10)
    assert failures == []
    assert Counter(got) == {"back": 5, "live": 5}
    assert back.accepted >= 6


def test_all_backends_down_resets_client(start_ferry, closer):
    d1, d2 = closer(ft.RefusingPort()), closer(ft.RefusingPort())
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("web", listen, [d1.addr, d2.addr])],
                              retries=3))
    for _ in range(3):
        assert ft.rejected_how(listen) == "reset"
    assert f.alive()


def test_retries_zero_fails_fast(start_ferry, backends, closer):
    """retries: 0 means no extra attempt: a connection whose pick refuses is
    reset even though another backend is up. Over a few connections at
    least one lands on the dead backend first (round-robin starts there)."""
    dead = closer(ft.RefusingPort())
    live = backends("live")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [dead.addr, live], retries=0)]))
    assert ft.rejected_how(listen) == "reset"


# ------------------------------------------------------------ netns variant

CLONE_NEWNET = 0x40000000


def _netns_capable():
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for a network " \
               "namespace"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    return None


class NetNS:
    """A named network namespace with lo up, where packets to 198.18.0.2
    (RFC 2544 benchmark range) vanish: they leave on one end of a veth pair
    towards a fixed MAC address that the other end does not have, so they
    are dropped, and a connect() to it times out. Sockets are created inside
    the namespace with socket()."""

    def __init__(self):
        self.name = f"ferrytest-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.path = f"/run/netns/{self.name}"
        self._ip("netns", "add", self.name)
        try:
            for args in (["link", "set", "lo", "up"],
                         ["link", "add", "hole0", "type", "veth", "peer",
                          "name", "hole1"],
                         ["addr", "add", "198.18.0.1/30", "dev", "hole0"],
                         ["link", "set", "hole0", "up"],
                         ["link", "set", "hole1", "up"],
                         ["neigh", "add", "198.18.0.2", "lladdr",
                          "02:00:00:00:00:02", "dev", "hole0", "nud",
                          "permanent"]):
                self._ip("-n", self.name, *args)
        except BaseException:
            self.close()
            raise
        self.libc = ctypes.CDLL(None, use_errno=True)

    @staticmethod
    def _ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True,
                       timeout=ft.DEADLINE)

    def socket(self, family=socket.AF_INET):
        """A socket created inside the namespace (setns on this thread, then
        back)."""
        with open("/proc/self/ns/net") as home, open(self.path) as ns:
            if self.libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            try:
                return socket.socket(family, socket.SOCK_STREAM)
            finally:
                if self.libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name],
                       capture_output=True, timeout=ft.DEADLINE)


def test_blackhole_in_netns_connect_timeout_then_retry(start_ferry):
    """Same as the full-accept-queue test, with a black-hole address in a
    network namespace of its own, where ferry, its clients and the live
    backend all run (only as root)."""
    why = _netns_capable()
    if why:
        pytest.skip(why)
    try:
        ns = NetNS()
    except (subprocess.CalledProcessError, OSError) as e:
        pytest.skip(f"cannot create a network namespace here: {e}")
    backend = None
    try:
        bsock = ns.socket()
        bsock.bind(("127.0.0.1", 0))
        backend = ft.Backend("live", sock=bsock)
        port = ft.free_port()  # free in the new namespace: it is empty
        cfg = ft.config([ft.service(
            "web", f"127.0.0.1:{port}",
            [ft.backend_entry("198.18.0.2:9", name="hole"), backend])],
            connect_timeout="300ms", retries=3)
        f = start_ferry(cfg, prefix=["ip", "netns", "exec", ns.name])

        # sanity: the black hole swallows a direct connect
        with ns.socket() as c:
            c.settimeout(0.5)
            with pytest.raises(socket.timeout):
                c.connect(("198.18.0.2", 9))

        def hello_in_ns():
            with ns.socket() as c:
                c.settimeout(ft.DEADLINE)
                c.connect(("127.0.0.1", port))
                return ft.read_line(c)
        failures = []
        for i in range(15):
            try:
                if hello_in_ns() != "live":
                    failures.append(i)
            except (OSError, EOFError, ValueError) as e:
                failures.append((i, repr(e)))
        assert failures == []
        f.stop()
    finally:
        if backend is not None:
            backend.stop()
        ns.close()
