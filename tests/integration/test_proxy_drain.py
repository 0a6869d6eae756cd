"""SIGTERM / SIGINT: stop accepting, let open connections finish up to
drain_timeout, then exit 0."""

import signal
import time

import pytest

import ferrytest as ft


def echo_ok(sock, text):
    sock.sendall(text.encode() + b"\n")
    assert ft.read_line(sock) == text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_drain_waits_for_open_connection(start_ferry, backends, sig):
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("d", listen, [b])],
                              drain_timeout="60s"))
    held = ft.connect(listen)
    try:
        assert ft.read_line(held) == "b"
        f.signal(sig)
        ft.wait_for(lambda: ft.is_refused(listen),
                    what="listener closed after the signal")
        # The open connection still works during the drain, both ways.
        for i in range(3):
            echo_ok(held, f"draining {i}")
        assert f.alive(), "ferry exited while a connection was open"
        t0 = time.monotonic()
    finally:
        ft.close_and_wait(held)
    # Well before drain_timeout (60 s): our deadline is 15 s.
    assert f.wait_exit() == 0
    assert time.monotonic() - t0 < ft.DEADLINE


def test_drain_timeout_ends_stuck_connection(start_ferry, backends):
    b = backends("b")
    listen = ft.free_addr()
    drain = 1.5
    f = start_ferry(ft.config([ft.service("d", listen, [b])],
                              drain_timeout="1500ms"))
    with ft.connect(listen) as held:
        assert ft.read_line(held) == "b"
        t0 = time.monotonic()
        f.signal(signal.SIGTERM)
        assert f.wait_exit(timeout=drain + ft.DEADLINE) == 0
        elapsed = time.monotonic() - t0
        # It did wait for the connection (a lower bound only: a slow build
        # may take longer, never shorter).
        assert elapsed >= drain * 0.8, f"exited after {elapsed:.2f}s"
        # The held connection is over once ferry is gone.
        how = ft.closed_how(held, timeout=ft.DEADLINE)
        assert how in ("eof", "reset")


def test_sigterm_idle_exits_promptly(start_ferry, backends):
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("d", listen, [b])],
                              drain_timeout="60s"))
    assert ft.hello(listen) == "b"
    ft.wait_for(lambda: b.active == 0, what="backend connection closed")
    f.signal(signal.SIGTERM)
    assert f.wait_exit() == 0


def test_sigterm_as_soon_as_a_port_answers(start_ferry, backends):
    """A SIGTERM sent the moment the first port answers (a supervisor that
    stops what it has just started) drains and exits 0: ferry handles its
    signals before it opens any socket. With 2,000 services, whose sockets
    and log lines take a while, the first port answers long before the
    start is done."""
    import socket
    b = backends("b")
    # One free port on 2,000 loopback addresses (127.0.0.0/8 is all
    # local).
    free = ft.free_port()
    addrs = ["127.0.%d.%d:%d" % (i // 250, 1 + i % 250, free)
             for i in range(2000)]
    f = start_ferry(ft.config([ft.service("s%d" % i, a, [b])
                               for i, a in enumerate(addrs)]), wait=False)
    _, host, port = ft.parse_addr(addrs[0])
    deadline = time.monotonic() + ft.scaled(20)
    while f.alive() and time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                break
    f.signal(signal.SIGTERM)
    assert f.wait_exit() == 0
