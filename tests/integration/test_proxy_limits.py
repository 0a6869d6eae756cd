"""Limits: max_connections, idle_timeout, and running out of descriptors."""

import time

import ferrytest as ft


def test_max_connections(start_ferry, backends):
    b = backends("b")
    listen, other = ft.free_addr(), ft.free_addr()
    f = start_ferry(ft.config([
        ft.service("capped", listen, [b], max_connections=2),
        ft.service("other", other, [b]),
    ]))
    c1, c2 = ft.connect(listen), ft.connect(listen)
    try:
        assert ft.read_line(c1) == "b"
        assert ft.read_line(c2) == "b"
        assert ft.rejected_how(listen) == "reset"
        f.wait_log(r"connection limit")
        # The limit is per service: another service is not affected.
        assert ft.hello(other) == "b"
        # The two held connections still work.
        for c in (c1, c2):
            c.sendall(b"ping\n")
            assert ft.read_line(c) == "ping"
        # After one closes, a new connection is served (polled: ferry may
        # account for the close a moment after the client sees the FIN).
        ft.close_and_wait(c1)
        c4 = ft.wait_for(lambda: served_conn(listen, "b"),
                         what="a connection served after one closed")
        try:
            # ... and the limit still holds with c2 and c4 open.
            assert ft.rejected_how(listen) == "reset"
        finally:
            c4.close()
    finally:
        c1.close()
        c2.close()


def served_conn(addr, name):
    """A connection to <addr> that got greeted by <name>, or None."""
    try:
        s = ft.connect(addr)
    except OSError:
        return None
    try:
        if ft.read_line(s) == name:
            return s
    except (OSError, EOFError, ValueError):
        pass
    s.close()
    return None


def test_idle_timeout_closes_idle_connection(start_ferry, backends):
    b = backends("b")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("idle", listen, [b])],
                          idle_timeout="300ms"))
    with ft.connect(listen) as s:
        assert ft.read_line(s) == "b"
        t0 = time.monotonic()
        # Nothing is sent either way: ferry must end the connection.
        how = ft.closed_how(s, timeout=ft.DEADLINE)
        assert how in ("eof", "reset"), f"got {how!r} instead of a close"
        # Not before the timeout (lower bound only).
        assert time.monotonic() - t0 >= 0.2
    ft.wait_for(lambda: b.active == 0, what="backend side closed too")


def test_idle_timeout_spares_active_connection(start_ferry, backends):
    b = backends("b")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("idle", listen, [b])],
                          idle_timeout="300ms"))
    with ft.connect(listen) as s:
        assert ft.read_line(s) == "b"
        # Traffic every 100 ms for about 1.5 s (5 idle timeouts).
        end = time.monotonic() + 1.5
        for i in range(100):
            if time.monotonic() >= end:
                break
            s.sendall(f"tick {i}\n".encode())
            assert ft.read_line(s) == f"tick {i}"
            time.sleep(0.1)  # the traffic pattern itself, not a wait
        s.sendall(b"last\n")
        assert ft.read_line(s) == "last"


def test_idle_timeout_counts_one_way_traffic(start_ferry, backends):
    """Bytes in either direction keep a connection alive: a backend that
    streams to a silent client is not idle."""
    def ticker(backend, conn):
        for i in range(15):
            conn.sendall(f"t{i}\n".encode())
            time.sleep(0.1)  # the traffic pattern itself, not a wait
    b = backends("ticker", handler=ticker)
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("idle", listen, [b])],
                          idle_timeout="300ms"))
    with ft.connect(listen) as s:
        got = ft.read_until_eof(s)
    assert got == b"".join(f"t{i}\n".encode() for i in range(15))


def test_emfile_pauses_accept_and_recovers(start_ferry, backends):
    """With RLIMIT_NOFILE 64, fill ferry's descriptor table with held
    connections; at the limit ferry must not spin on the pending accept, and
    it serves again once descriptors are free."""
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("fd", listen, [b])]),
                    rlimit_nofile=64)
    held, pending = [], []
    try:
        # Open until a connection is no longer served. Each served one
        # costs ferry at least two descriptors, so 64 is reached well
        # before 80 connections.
        limit_hit = False
        for _ in range(80):
            s = ft.connect(listen)
            try:
                if ft.read_line(s, timeout=ft.scaled(2)) == "b":
                    held.append(s)
                    continue
            except (OSError, EOFError, ValueError):
                pass
            pending.append(s)
            limit_hit = True
            break
        assert limit_hit, "80 connections were served with 64 descriptors"
        assert len(held) >= 10, f"only {len(held)} served before the limit"
        # Keep a few more connections waiting in the accept queue.
        for _ in range(3):
            pending.append(ft.connect(listen))
        assert f.alive()
        wall0, cpu0 = time.monotonic(), f.cpu_seconds()
        time.sleep(1.0)  # the measurement window, not a wait
        wall1, cpu1 = time.monotonic(), f.cpu_seconds()
        share = (cpu1 - cpu0) / (wall1 - wall0)
        assert share < 0.3, f"ferry used {share:.0%} of a CPU at the fd limit"
        assert f.alive()
    finally:
        for s in pending + held:
            s.close()
    # Descriptors come back; ferry accepts again.
    ft.wait_for(lambda: ft.try_hello(listen, timeout=ft.scaled(2)) == "b",
                what="ferry serving again after descriptors were freed")
    # Several at once, to show it is not just one spare descriptor.
    again = []
    try:
        for _ in range(10):
            s = ft.connect(listen)
            again.append(s)
            assert ft.read_line(s) == "b"
    finally:
        for s in again:
            s.close()
    assert f.alive()
