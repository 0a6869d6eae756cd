"""Source rules (README: "Source rules"): allow: and deny: prefixes, and
max_connections_per_source / connection_rate_per_source, per service. A
refused client is reset at once, before any backend is dialled, and
counted by reason. Real sockets on loopback: 127.0.0.1, 127.0.0.2 and
127.0.0.3 are distinct sources (the client binds one before connecting),
and ::1 another family; with accept_proxy the source is the address the
PROXY header names (198.18.0.0/15, never dialled)."""

import socket
import time

import pytest

import admintest as at
import ferrytest as ft
from test_proxy_protocol import v1


def connect_from(src, addr, timeout=None):
    """A client socket bound to <src> (an IP) and connected to <addr>."""
    fam, host, port = ft.parse_addr(addr)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(ft.DEADLINE if timeout is None else timeout)
    try:
        s.bind((src, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def served(src, addr):
    """Connect from <src>: the backend's greeting, or None when reset."""
    try:
        with connect_from(src, addr) as s:
            return ft.read_line(s)
    except (ConnectionResetError, EOFError):
        return None


def reset_at_once(src, addr):
    """Connect from <src> and see the connection reset, well within a
    second (every timeout of the services below is far longer)."""
    t0 = time.monotonic()
    try:
        s = connect_from(src, addr)
    except ConnectionResetError:
        return True
    with s:
        how = ft.closed_how(s, timeout=5)
    assert how == "reset", how
    took = time.monotonic() - t0
    assert took < 1.0, f"reset after {took:.2f}s"
    return True


def refused(m, reason, service="sr"):
    return at.sample(m, "ferry_service_source_refused_total",
                     service=service, reason=reason)


def scrape_when(admin, pred, what):
    def check():
        m = at.scrape(admin)
        return m if pred(m) else None
    return ft.wait_for(check, what=what)


def start(start_ferry, backends, **rules):
    b = backends("b1")
    listen, admin = ft.free_addr(), ft.free_addr()
    cfg = ft.config([ft.service("sr", listen, [b], **rules)])
    f = start_ferry(at.with_admin(cfg, admin))
    return listen, admin, b, f


def test_deny_resets_at_once(start_ferry, backends):
    b = backends("b1")
    listen, other, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    cfg = ft.config([ft.service("sr", listen, [b], deny=["127.0.0.2/32"]),
                     ft.service("open", other, [b])])
    f = start_ferry(at.with_admin(cfg, admin))
    assert served("127.0.0.1", listen) == "b1"
    assert reset_at_once("127.0.0.2", listen)
    m = scrape_when(admin, lambda m: refused(m, "deny") == 1,
                    "one client refused by deny")
    assert refused(m, "not_allowed") == 0
    # Only services with source rules have the series; only those with a
    # per-source limit the uncounted one.
    with pytest.raises(KeyError):
        refused(m, "deny", service="open")
    with pytest.raises(KeyError):
        at.sample(m, "ferry_service_source_uncounted_total", service="sr")
    assert b.accepted == 1  # the denied client never reached it
    f.wait_log(r"service sr: 127\.0\.0\.2 refused by source rules \(deny\)")


def test_allow_lets_in_only_listed(start_ferry, backends):
    listen, admin, b, _ = start(start_ferry, backends,
                                allow=["127.0.0.1/32", "2001:2::/48"])
    assert reset_at_once("127.0.0.2", listen)
    assert served("127.0.0.1", listen) == "b1"
    scrape_when(admin, lambda m: refused(m, "not_allowed") == 1,
                "one client refused as not allowed")
    assert b.accepted == 1


def test_deny_wins_over_allow(start_ferry, backends):
    listen, admin, _, _ = start(start_ferry, backends,
                                allow=["127.0.0.0/8"],
                                deny=["127.0.0.2/32"])
    assert served("127.0.0.3", listen) == "b1"
    assert reset_at_once("127.0.0.2", listen)
    scrape_when(admin, lambda m: refused(m, "deny") == 1
                and refused(m, "not_allowed") == 0, "refused by deny")


def test_ipv6_client(start_ferry, backends):
    """An IPv6 client matches IPv6 prefixes only: an allow list of IPv4
    prefixes keeps it out, an IPv6 one lets it in."""
    if not ft.have_ipv6():
        pytest.skip("no IPv6 on loopback")
    b = backends("b1")
    l4, l6, admin = ft.free_addr("::1"), ft.free_addr("::1"), ft.free_addr()
    cfg = ft.config([ft.service("v4only", l4, [b], allow=["127.0.0.0/8"]),
                     ft.service("v6", l6, [b], allow=["::1/128"])])
    start_ferry(at.with_admin(cfg, admin))
    assert reset_at_once("::1", l4)
    assert served("::1", l6) == "b1"
    scrape_when(admin, lambda m: refused(m, "not_allowed", "v4only") == 1
                and refused(m, "not_allowed", "v6") == 0,
                "the IPv6 client refused by the IPv4 allow list only")


def test_max_connections_per_source(start_ferry, backends, closer):
    listen, admin, _, _ = start(start_ferry, backends,
                                max_connections_per_source=2)
    held = []
    for _ in range(2):
        s = closer(connect_from("127.0.0.1", listen))
        assert ft.read_line(s) == "b1"
        held.append(s)
    assert reset_at_once("127.0.0.1", listen)
    # Another source has its own count.
    assert served("127.0.0.2", listen) == "b1"
    m = scrape_when(admin, lambda m: refused(m, "max_per_source") == 1,
                    "one client refused for max_per_source")
    assert at.sample(m, "ferry_service_source_uncounted_total",
                     service="sr") == 0
    # A close makes room again.
    ft.close_and_wait(held.pop())
    assert ft.wait_for(lambda: served("127.0.0.1", listen),
                       what="room for one more") == "b1"


def test_connection_rate_per_source(start_ferry, backends):
    """connection_rate_per_source: 1 lets one connection in at once, then
    one a second: of five opened back to back, some are reset (all five
    would take four seconds to earn)."""
    listen, admin, _, _ = start(start_ferry, backends,
                                connection_rate_per_source=1)
    t0 = time.monotonic()
    got = [served("127.0.0.1", listen) for _ in range(5)]
    took = time.monotonic() - t0
    assert got[0] == "b1"
    n_refused = got.count(None)
    assert n_refused >= 5 - (1 + int(took)), (got, took)
    assert n_refused >= 1
    # Another source has its own bucket.
    assert served("127.0.0.2", listen) == "b1"
    scrape_when(admin,
                lambda m: refused(m, "rate_per_source") == n_refused,
                "the refusals counted for rate_per_source")
    # A token comes back within a second.
    assert ft.wait_for(lambda: served("127.0.0.1", listen),
                       what="a token back") == "b1"


def test_accept_proxy_rules_apply_to_the_header_client(start_ferry,
                                                       backends):
    """Behind another balancer (accept_proxy) the rules see the client
    its PROXY header names, not the balancer."""
    b = backends("b1")
    listen, admin = ft.free_addr(), ft.free_addr()
    cfg = ft.config([ft.service("sr", listen, [b], accept_proxy=True,
                                deny=["198.18.0.7/32"],
                                max_connections_per_source=1)])
    start_ferry(at.with_admin(cfg, admin))
    vip = ("198.18.0.1", 443)
    with ft.connect(listen) as s:
        s.sendall(v1(("198.18.0.7", 4000), vip))
        assert ft.closed_how(s) == "reset"
    ok = ft.connect(listen)
    try:
        ok.sendall(v1(("198.18.0.8", 4000), vip))
        assert ft.read_line(ok) == "b1"
        # Same peer (127.0.0.1), another client in the header: its own
        # count. The same client again: over its max.
        with ft.connect(listen) as s:
            s.sendall(v1(("198.18.0.9", 4000), vip))
            assert ft.read_line(s) == "b1"
        with ft.connect(listen) as s:
            s.sendall(v1(("198.18.0.8", 4001), vip))
            assert ft.closed_how(s) == "reset"
    finally:
        ok.close()
    scrape_when(admin, lambda m: refused(m, "deny") == 1
                and refused(m, "max_per_source") == 1,
                "refusals by the header's client")


def test_reload_keeps_counting_and_serving(start_ferry, backends, closer):
    """A reload that changes the service's rules builds a new runtime
    service, but the per-source counts go on: a connection opened before
    still counts against its source, and is still served."""
    b = backends("b1")
    listen, admin = ft.free_addr(), ft.free_addr()

    def cfg(**rules):
        return at.with_admin(ft.config([ft.service(
            "sr", listen, [b], max_connections_per_source=1, **rules)]),
            admin)
    f = start_ferry(cfg())
    held = closer(connect_from("127.0.0.1", listen))
    assert ft.read_line(held) == "b1"
    off = f.reload(cfg(deny=["127.0.0.3/32"]))
    f.wait_log(r"reload: applied", start=off)
    assert reset_at_once("127.0.0.3", listen)  # the new rule applies
    assert reset_at_once("127.0.0.1", listen)  # still one open
    held.sendall(b"still here\n")
    assert ft.read_line(held) == "still here"
    scrape_when(admin, lambda m: refused(m, "max_per_source") == 1
                and refused(m, "deny") == 1, "both refusals counted")
    ft.close_and_wait(held)
    assert ft.wait_for(lambda: served("127.0.0.1", listen),
                       what="room once the old connection closed") == "b1"
