"""The test harness itself, without ferry: the backends, ports and helpers
the proxy tests rely on behave as those tests assume."""

import socket
import time

import pytest

import ferrytest as ft


def test_greet_backend(backends):
    b = backends("hello")
    assert ft.hello(b.addr) == "hello"
    assert ft.hello_done(b.addr) == "hello"
    with ft.connect(b.addr) as s:
        assert ft.read_line(s) == "hello"
        s.sendall(b"echo me\n")
        assert ft.read_line(s) == "echo me"
        ft.wait_for(lambda: b.active == 1, what="one active")
    ft.wait_for(lambda: b.active == 0, what="none active")
    assert b.accepted == 3


def test_echo_backend(backends):
    b = backends("e", handler="echo")
    with ft.connect(b.addr) as s:
        s.sendall(b"x" * 100000)
        assert ft.recv_exact(s, 100000) == b"x" * 100000
        s.shutdown(socket.SHUT_WR)
        assert ft.read_until_eof(s) == b""


def test_refusing_port_then_listening(backends):
    p = ft.RefusingPort()
    assert ft.is_refused(p.addr)
    assert ft.try_hello(p.addr) is None
    b = backends("late", sock=p.take())
    assert ft.hello(b.addr) == "late"
    assert b.addr == p.addr


def test_black_hole_times_out():
    h = ft.BlackHole()
    try:
        t0 = time.monotonic()
        with pytest.raises(OSError):
            ft.connect(h.addr, timeout=0.5).close()
        assert time.monotonic() - t0 >= 0.4  # a timeout, not a refusal
    finally:
        h.close()


def test_reset_is_seen_as_reset():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    addr = ft.fmt_addr("127.0.0.1", srv.getsockname()[1])
    try:
        with ft.connect(addr) as c:
            conn, _ = srv.accept()
            ft.set_linger_rst(conn)
            conn.close()
            assert ft.closed_how(c) == "reset"
        with ft.connect(addr) as c:
            conn, _ = srv.accept()
            conn.close()
            assert ft.closed_how(c) == "eof"
    finally:
        srv.close()


def test_listening_detection():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        assert not ft._proc_listening(port)
        s.listen(1)
        assert ft._proc_listening(port)
    finally:
        s.close()


def test_wait_for_is_bounded():
    t0 = time.monotonic()
    with pytest.raises(ft.Timeout):
        ft.wait_for(lambda: False, timeout=0.2, what="never")
    assert time.monotonic() - t0 < 5
    assert ft.wait_for(lambda: 42, timeout=1) == 42


def test_addresses():
    assert ft.parse_addr("127.0.0.1:80") == (socket.AF_INET, "127.0.0.1", 80)
    assert ft.parse_addr("[::1]:80") == (socket.AF_INET6, "::1", 80)
    assert ft.fmt_addr("::1", 80) == "[::1]:80"


def test_config_generation():
    text = ft.config([
        ft.service("a", ["127.0.0.1:1", "[::1]:2"], ["127.0.0.1:3",
                                                   ("127.0.0.1:4", 5)]),
        ft.service("b", "127.0.0.1:6", ["127.0.0.1:7"], balance="random"),
    ], drain_timeout="1s", retries=0)
    assert ft.listen_addrs(text) == ["127.0.0.1:1", "[::1]:2",
                                     "127.0.0.1:6"]
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert doc["drain_timeout"] == "1s"
    assert doc["defaults"]["retries"] == 0
    assert doc["services"][0]["backends"][1] == {"address": "127.0.0.1:4",
                                                 "weight": 5}
    assert doc["services"][1]["balance"] == "random"
    assert doc["services"][1]["listen"] == ["127.0.0.1:6"]
