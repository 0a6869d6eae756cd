"""A service's drain_timeout (README "Removing a backend"): a backend taken
away (left out by a reload, its whole service removed, or drained through
the admin server) keeps its open connections that long at most; then they
are reset and counted in ferry_drain_closed_total. Without drain_timeout
they stay open, a backend that stays is never touched, and a backend given
back before the deadline keeps them."""

import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402

# Short, so the tests are quick; scaled for slow (sanitizer) builds.
DRAIN_S = ft.scaled(0.5)
DRAIN = f"{int(DRAIN_S * 1000)}ms"


def held_to(listen, want, n=8):
    """A connection through <listen> that reached backend <want> (the
    others opened on the way are closed)."""
    for _ in range(n):
        s = ft.connect(listen)
        if ft.read_line(s) == want:
            return s
        s.close()
    raise AssertionError(f"no connection reached {want} in {n} tries")


def relays(sock, text="ping"):
    sock.sendall(text.encode() + b"\n")
    return ft.read_line(sock) == text


def drained_total(admin, service):
    return at.sample(at.scrape(admin), "ferry_drain_closed_total",
                     service=service)


def greet_and_record(backend, conn):
    """Like "greet", and records how the connection ended: "reset" or
    "eof"."""
    conn.sendall(backend.name.encode() + b"\n")
    try:
        while True:
            data = conn.recv(4096)
            if not data:
                backend.records.append("eof")
                return
            conn.sendall(data)
    except ConnectionResetError:
        backend.records.append("reset")


def cfg(services, admin):
    return at.with_admin(ft.config(services, log_level="debug"), admin)


def test_reload_resets_connections_of_removed_backends_after_drain_timeout(
        start_ferry, backends, closer):
    """README: a backend left out by a reload, or its whole service, keeps
    its open connections for drain_timeout at most, then they are reset
    and counted; without drain_timeout they stay; a backend that stays is
    untouched."""
    a = backends("a", handler=greet_and_record)
    b, c, d = (backends(n) for n in ("b", "c", "d"))
    bounded, unbounded, gone = ft.free_addr(), ft.free_addr(), ft.free_addr()
    admin = ft.free_addr()
    before = [
        ft.service("bounded", bounded, [a, b], drain_timeout=DRAIN),
        ft.service("unbounded", unbounded, [c, d]),
        ft.service("gone", gone, [a], drain_timeout=DRAIN),
    ]
    after = [
        ft.service("bounded", bounded, [b], drain_timeout=DRAIN),
        ft.service("unbounded", unbounded, [d]),
    ]
    f = start_ferry(cfg(before, admin))
    to_a = closer(held_to(bounded, "a"))
    to_b = closer(held_to(bounded, "b"))
    to_c = closer(held_to(unbounded, "c"))
    to_gone = closer(held_to(gone, "a"))
    off = f.reload(cfg(after, admin))
    f.wait_log(r"reload: applied", off)
    t0 = time.monotonic()
    assert relays(to_a), "reset before drain_timeout"
    assert ft.closed_how(to_a) == "reset"
    assert ft.closed_how(to_gone) == "reset"
    took = time.monotonic() - t0
    assert took >= DRAIN_S * 0.7, f"reset after {took:.2f}s"
    # The same scan would have found these: they were never due.
    assert relays(to_b) and relays(to_c)
    assert drained_total(admin, "bounded") == 1
    assert drained_total(admin, "unbounded") == 0
    f.wait_log(r"drain_timeout: reset \d+ connection", off)
    # The backend's side is reset too, not ended as if complete.
    ft.wait_for(lambda: a.active == 0, what="backend a's connections closed")
    assert a.records.count("reset") == 2, a.records
    assert c.active == 1


def test_backend_given_back_in_time_keeps_its_connections(
        start_ferry, backends, closer):
    """README: a backend added back (same address) before its deadline
    keeps its connections. The clock is a second service whose backend
    is removed at the same moment and stays removed."""
    a, b, c = backends("a"), backends("b"), backends("c")
    back, clock, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    slow = f"{int(DRAIN_S * 2000)}ms"  # room for two reloads

    def services(with_a, with_c):
        return [
            ft.service("back", back, [a, b] if with_a else [b],
                       drain_timeout=slow),
            ft.service("clock", clock, [c, b] if with_c else [b],
                       drain_timeout=slow),
        ]
    f = start_ferry(cfg(services(True, True), admin))
    to_a = closer(held_to(back, "a"))
    to_c = closer(held_to(clock, "c"))
    off = f.reload(cfg(services(False, False), admin))
    f.wait_log(r"reload: applied", off)
    off = f.reload(cfg(services(True, False), admin))
    f.wait_log(r"reload: applied", off)
    assert ft.closed_how(to_c) == "reset"
    assert relays(to_a), "a connection to a backend given back was closed"
    assert drained_total(admin, "back") == 0
    assert drained_total(admin, "clock") == 1


def test_admin_drain_resets_after_drain_timeout(start_ferry, backends,
                                                closer):
    """README: a backend drained through the admin server keeps its open
    connections for the service's drain_timeout at most; the access log
    says cause=drain_timeout."""
    a, b = backends("a"), backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    text = ft.to_yaml({"access_log": {"enabled": True, "target": "stderr"}})
    f = start_ferry(text + "\n" + cfg(
        [ft.service("web", listen, [a, b], drain_timeout=DRAIN)], admin))
    to_a = closer(held_to(listen, "a"))
    to_b = closer(held_to(listen, "b"))
    status, _, body = at.http(admin, "POST", "/backends/web/a/drain")
    assert status == 200, body
    t0 = time.monotonic()
    assert ft.closed_how(to_a) == "reset"
    took = time.monotonic() - t0
    assert took >= DRAIN_S * 0.7, f"reset after {took:.2f}s"
    assert relays(to_b)
    assert drained_total(admin, "web") == 1
    f.wait_log(r"service=web .*cause=drain_timeout")


def test_admin_drain_without_drain_timeout_keeps_connections(
        start_ferry, backends, closer):
    """README: without drain_timeout a drained backend's connections go
    on; enabled again before its deadline, a backend keeps them. The
    clock is a service with drain_timeout whose backend is drained at the
    same moment."""
    a, b, c = backends("a"), backends("b"), backends("c")
    web, clock, back = ft.free_addr(), ft.free_addr(), ft.free_addr()
    admin = ft.free_addr()
    start_ferry(cfg([
        ft.service("web", web, [a, b]),
        ft.service("clock", clock, [c, b], drain_timeout=DRAIN),
        ft.service("back", back, [a, b], drain_timeout=DRAIN),
    ], admin))
    to_web = closer(held_to(web, "a"))
    to_clock = closer(held_to(clock, "c"))
    to_back = closer(held_to(back, "a"))
    for path in ("/backends/web/a/drain", "/backends/clock/c/drain",
                 "/backends/back/a/drain", "/backends/back/a/enable"):
        assert at.http(admin, "POST", path)[0] == 200, path
    assert ft.closed_how(to_clock) == "reset"
    assert relays(to_web) and relays(to_back)
    assert drained_total(admin, "web") == 0
    assert drained_total(admin, "back") == 0


def test_reloads_do_not_move_a_drained_backends_deadline(
        start_ferry, backends, closer):
    """README: the deadline counts from when the backend was first taken
    away: reloads that rebuild the service (another backend's weight
    changes) while it is drained do not push it back."""
    a, b = backends("a"), backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()

    def text(weight):
        return cfg([ft.service("web", listen, [a, (b, weight)],
                               drain_timeout=DRAIN)], admin)
    f = start_ferry(text(1))
    to_a = closer(held_to(listen, "a"))
    assert at.http(admin, "POST", "/backends/web/a/drain")[0] == 200
    t0 = time.monotonic()
    weight, reloads = 1, 0
    to_a.setblocking(False)
    while time.monotonic() - t0 < DRAIN_S * 4 + ft.DEADLINE:
        weight = 3 - weight
        f.wait_log(r"reload: applied", f.reload(text(weight)))
        reloads += 1
        if select.select([to_a], [], [], 0)[0]:
            break
    to_a.setblocking(True)
    assert reloads >= 2, "too few reloads before the deadline to tell"
    assert ft.closed_how(to_a, 0.1) == "reset"
    assert drained_total(admin, "web") == 1
