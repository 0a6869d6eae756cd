"""IPv6: listening on [::1] and connecting to [::1] backends, alone and
mixed with IPv4."""

import os

import pytest

import ferrytest as ft

pytestmark = pytest.mark.skipif(not ft.have_ipv6(),
                                reason="::1 is not available on this host")


def test_ipv6_listen_and_backend(start_ferry, backends):
    b6 = backends("v6", host="::1")
    assert ft.hello(b6.addr) == "v6"  # sanity, without ferry
    listen = ft.free_addr("::1")
    assert listen.startswith("[::1]:")
    start_ferry(ft.config([ft.service("six", listen, [b6])]))
    assert [ft.hello(listen) for _ in range(3)] == ["v6"] * 3


def test_mixed_families(start_ferry, backends):
    """One service listening on both families, with one backend of each:
    every path works and round-robin spans both backends."""
    b4, b6 = backends("v4"), backends("v6", host="::1")
    port = ft.free_port()
    l4 = f"127.0.0.1:{port}"
    l6 = ft.free_addr("::1")
    start_ferry(ft.config([ft.service("mixed", [l4, l6], [b4, b6])]))
    got = [ft.hello(l4), ft.hello(l6), ft.hello(l4), ft.hello(l6)]
    assert got == ["v4", "v6", "v4", "v6"]


def test_ipv6_bulk_echo(start_ferry, backends):
    b = backends("echo6", handler="echo", host="::1")
    listen = ft.free_addr("::1")
    start_ferry(ft.config([ft.service("six", listen, [b])]))
    payload = os.urandom(256 << 10)
    with ft.connect(listen) as s:
        s.sendall(payload)
        assert ft.recv_exact(s, len(payload)) == payload
