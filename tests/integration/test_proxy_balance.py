"""Balancing: exact smooth weighted round-robin, leastconn, weighted random,
power of two choices, Maglev.

Each backend greets with its own name, so the client learns which backend
ferry picked. Connections are made one after the other, so the order seen is
the order ferry chose.
"""

import socket
from collections import Counter

import pytest

import admintest as at
import ferrytest as ft


def names(addr, n):
    return [ft.hello(addr) for _ in range(n)]


def test_roundrobin_exact_order(start_ferry, backends):
    bs = [backends(f"rr-{i}") for i in (1, 2, 3)]
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("web", listen, bs,
                                      balance="roundrobin")]))
    got = names(listen, 12)
    assert got == ["rr-1", "rr-2", "rr-3"] * 4


def test_roundrobin_weights_5_1_1_sequence(start_ferry, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [(a, 5), (b, 1), (c, 1)], balance="roundrobin")]))
    got = "".join(names(listen, 14))
    assert got == "aabacaa" * 2


def test_roundrobin_weights_1_2_3_proportional(start_ferry, backends):
    bs = [backends(f"w{w}") for w in (1, 2, 3)]
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [(bs[0], 1), (bs[1], 2), (bs[2], 3)])]))
    counts = Counter(names(listen, 60))
    assert counts == {"w1": 10, "w2": 20, "w3": 30}


def test_roundrobin_weight_zero_gets_nothing(start_ferry, backends):
    a, z, c = backends("a"), backends("z"), backends("c")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [(a, 1), (z, 0), (c, 1)])]))
    assert names(listen, 6) == ["a", "c"] * 3
    assert z.accepted == 0


def test_balance_default_inherited_and_overridden(start_ferry, backends):
    """defaults.balance applies to a service that does not set it; a
    service's own balance wins over it."""
    a, b = backends("a"), backends("b")
    l1, l2 = ft.free_addr(), ft.free_addr()
    start_ferry(ft.config(
        [ft.service("inherit", l1, [a, b]),
         ft.service("own", l2, [a, b], balance="roundrobin")],
        balance="random"))
    # random (inherited): 40 picks that alternate exactly, as round-robin
    # would, happen with probability 2**-39.
    got = names(l1, 40)
    assert set(got) == {"a", "b"}
    assert got != ["a", "b"] * 20
    # round-robin (own) alternates exactly.
    assert names(l2, 6) == ["a", "b"] * 3


class Held:
    """Client connections held open, each with the backend name it got."""

    def __init__(self, addr):
        self.addr = addr
        self.conns = []  # [(sock, name)]

    def open(self):
        s = ft.connect(self.addr)
        try:
            name = ft.read_line(s)
        except BaseException:
            s.close()
            raise
        self.conns.append((s, name))
        return name

    def release(self, name, count):
        """End <count> held connections that go to backend <name>."""
        mine = [c for c in self.conns if c[1] == name][:count]
        assert len(mine) == count, f"only {len(mine)} connections on {name}"
        for c in mine:
            self.conns.remove(c)
            ft.close_and_wait(c[0])

    def counts(self):
        return Counter(n for _, n in self.conns)

    def close_all(self):
        for s, _ in self.conns:
            s.close()
        self.conns = []


# Why releases come in pairs below: ferry may account for a closed
# connection a moment after the client has seen its FIN. Releasing two
# connections of one backend keeps the next pick unambiguous even then.


def test_leastconn_prefers_fewest_active(start_ferry, backends):
    bs = [backends(n) for n in ("a", "b", "c")]
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("web", listen, bs,
                                      balance="leastconn")]))
    held = Held(listen)
    try:
        # Ties (all equal) are broken in round-robin order.
        assert [held.open() for _ in range(6)] == ["a", "b", "c"] * 2
        # Free both connections on "b": it has the fewest, so it gets the
        # next two, where round-robin would give "a" then "b".
        held.release("b", 2)
        assert [held.open() for _ in range(2)] == ["b", "b"]
        # Same for "c".
        held.release("c", 2)
        assert [held.open() for _ in range(2)] == ["c", "c"]
        assert held.counts() == {"a": 2, "b": 2, "c": 2}
        # The backends agree on what is active.
        assert [b.active for b in bs] == [2, 2, 2]
    finally:
        held.close_all()


def test_leastconn_weighted(start_ferry, backends):
    """Weighted leastconn compares active/weight: with weights 2 and 1,
    six held connections end as four on "big" and two on "small"; freeing
    both on "small" sends the next two there (1/1 < 4/2)."""
    big, small = backends("big"), backends("small")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [(big, 2), (small, 1)], balance="leastconn")]))
    held = Held(listen)
    try:
        for _ in range(6):
            held.open()
        assert held.counts() == {"big": 4, "small": 2}
        held.release("small", 2)
        assert [held.open() for _ in range(2)] == ["small", "small"]
        # Now big 4/2 = small 2/1: one more each keeps the ratio.
        assert sorted(held.open() for _ in range(3)) == \
            ["big", "big", "small"]
    finally:
        held.close_all()


def test_random_weighted(start_ferry, backends):
    """Weighted random: weights 3 and 1 over 200 connections give roughly
    150/50 (bounds are more than 5 standard deviations wide); weight 0 gets
    nothing."""
    h, l_, z = backends("heavy"), backends("light"), backends("zero")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service(
        "web", listen, [(h, 3), (l_, 1), (z, 0)], balance="random")]))
    counts = Counter(names(listen, 200))
    assert counts["zero"] == 0
    assert 115 <= counts["heavy"] <= 185, counts
    assert counts["heavy"] + counts["light"] == 200
    # Not round-robin in disguise: smooth RR gives an exact period of 4.
    seq = names(listen, 40)
    assert seq != (["heavy", "heavy", "light", "heavy"] * 10), seq


def test_p2c_keeps_held_connections_level(start_ferry, backends):
    """Power of two choices: 30 held connections over three backends end
    level (random strays by about 2.6 each); when all of one backend's
    connections end, the next 30 bring it back level with the others,
    where random would leave it 10 behind."""
    bs = [backends(n) for n in ("a", "b", "c")]
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(at.with_admin(
        ft.config([ft.service("web", listen, bs, balance="p2c")]), admin))
    held = Held(listen)
    try:
        for _ in range(30):
            held.open()
        counts = held.counts()
        assert all(8 <= counts[n] <= 12 for n in "abc"), counts
        held.release("b", counts["b"])
        # ferry counts a connection closed once both of its sides are done,
        # which may be a moment after the backend saw its end: wait for
        # ferry's own count, the one p2c compares.
        ft.wait_for(lambda: at.backend_state(admin, "web", "b")["active"] == 0,
                    what="ferry counts no connection on b")
        for _ in range(30):
            held.open()
        counts = held.counts()
        # 50 held: about 16.7 each. Random would leave "b" near 10.
        assert all(14 <= counts[n] <= 20 for n in "abc"), counts
    finally:
        held.close_all()


def hello_from(addr, src_ip):
    """ft.hello() from source address <src_ip> (loopback's /8)."""
    host, port = addr.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(ft.DEADLINE)
        s.bind((src_ip, 0))
        s.connect((host, int(port)))
        return ft.read_line(s)


def test_maglev_two_instances_agree(start_ferry, backends):
    """Maglev: two ferry processes with the same backends send each client
    address to the same backend, every time, and spread the clients over
    all of them."""
    bs = [backends(n) for n in ("a", "b", "c")]
    one, two = ft.free_addr(), ft.free_addr()
    start_ferry(ft.config([ft.service("web", one, bs, balance="maglev")]))
    start_ferry(ft.config([ft.service("web", two, bs, balance="maglev")]))
    seen = {}
    for i in range(1, 31):
        src = "127.0.9.%d" % i
        got = {hello_from(one, src), hello_from(two, src),
               hello_from(one, src)}
        assert len(got) == 1, (src, got)
        seen[src] = got.pop()
    assert set(seen.values()) == {"a", "b", "c"}, seen


@pytest.mark.parametrize("algo", ["roundrobin", "leastconn", "random",
                                  "p2c"])
def test_every_algorithm_uses_every_backend(start_ferry, backends, algo):
    bs = [backends(f"{algo}-{i}") for i in range(3)]
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("web", listen, bs, balance=algo)]))
    seen = set(names(listen, 60))
    assert seen == {b.name for b in bs}
