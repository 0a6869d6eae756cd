"""relay.workers: several data-plane threads, each with its own loop and
its own SO_REUSEPORT listening sockets on the service addresses, the
kernel spreading new connections across them.

Every test here runs three workers whatever the machine has (the rest of
the suite runs the default, one per CPU). What is checked is what users
rely on with one worker: the round-robin order, the per-service
connection cap, reloads that add and remove services, draining, and the
per-worker figures in /metrics and /status."""

import signal

import pytest

import admintest as at
import ferrytest as ft

W = 3


def cfg(services, admin, workers=W, **kw):
    return at.with_admin(ft.config(services, relay={"workers": workers},
                                   **kw), admin)


def per_worker(admin, name):
    m = at.scrape(admin)
    return [int(at.sample(m, name, worker=str(k))) for k in range(W)]


def test_workers_share_one_roundrobin_order(start_ferry, backends):
    """Ninety connections one after another land on all three workers
    (the kernel's choice) and still follow one round-robin order, as
    with a single worker."""
    bs = [backends(f"b{i}") for i in (1, 2, 3)]
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(cfg([ft.service("web", listen, bs)], admin))
    f.wait_log(r"\(generation 1, 3 workers\)")
    got = [ft.hello(listen) for _ in range(90)]
    assert got == ["b1", "b2", "b3"] * 30
    m = at.scrape(admin)
    assert at.sample(m, "ferry_workers") == W
    acc = per_worker(admin, "ferry_worker_accepted_total")
    assert sum(acc) == 90, acc
    # 90 random source ports over 3 sockets: each gets some (the chance
    # that one gets none is about 1e-15).
    assert all(a > 0 for a in acc), acc
    st = at.get_json(admin)
    assert [w["id"] for w in st["workers"]] == [0, 1, 2]
    assert sum(w["accepted"] for w in st["workers"]) == 90


def test_weighted_and_overridden_order_is_shared(start_ferry, backends):
    """Weights 3:1 give a a b a ... across workers; an admin weight
    override is in force on every worker at once."""
    a, b = backends("a"), backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(cfg([ft.service("web", listen, [(a, 3), (b, 1)])], admin))
    got = [ft.hello(listen) for _ in range(40)]
    assert got.count("a") == 30 and got.count("b") == 10, got
    assert got[:4].count("b") == 1
    st, _, body = at.http(admin, "POST", "/backends/web/b/weight?value=3")
    assert st == 200, body
    got = [ft.hello(listen) for _ in range(40)]
    assert got.count("a") == 20 and got.count("b") == 20, got


def test_max_connections_holds_across_workers(start_ferry, backends):
    """The cap is one count for the service, not one per worker: with
    four connections held (spread over the workers), every further one is
    refused, whichever worker the kernel gives it to."""
    b = backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(cfg([ft.service("capped", listen, [b], max_connections=4)],
                    admin))
    held = []
    try:
        for _ in range(4):
            s = ft.connect(listen)
            held.append(s)
            assert ft.read_line(s) == "b"
        for _ in range(12):
            assert ft.rejected_how(listen) == "reset"
        m = at.scrape(admin)
        assert at.sample(m, "ferry_service_connections_active",
                         service="capped") == 4
    finally:
        for s in held:
            s.close()


def test_reload_reaches_every_worker(start_ferry, backends):
    """A reload that removes one service and adds another: afterwards no
    worker accepts on the old address and every worker serves the new
    one."""
    b = backends("b")
    old, new, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    f = start_ferry(cfg([ft.service("old", old, [b])], admin))
    assert ft.hello(old) == "b"
    off = f.reload(cfg([ft.service("new", new, [b])], admin))
    f.wait_log(r"reload: applied", start=off)
    # Every worker says it serves the new table.
    ft.wait_for(lambda: [w["generation"] for w in
                         at.get_json(admin)["workers"]] == [2] * W,
                what="every worker on table 2")
    # Each worker timed its two tables (start and reload).
    m = at.scrape(admin)
    assert at.sample(m, "ferry_worker_table_delay_seconds_count") == 2 * W
    before = per_worker(admin, "ferry_worker_accepted_total")
    ft.wait_for(lambda: ft.is_refused(old), what="old address closed")
    # Closed on every worker, not only on the first one asked.
    for _ in range(30):
        assert ft.is_refused(old)
    for _ in range(60):
        assert ft.hello(new) == "b"
    after = per_worker(admin, "ferry_worker_accepted_total")
    assert all(x > y for x, y in zip(after, before)), (before, after)


def test_drain_waits_for_connections_on_every_worker(start_ferry, backends):
    """SIGTERM with connections open on several workers: listeners close
    everywhere, the connections keep working, and ferry exits 0 only once
    the last one, whichever worker holds it, is closed."""
    b = backends("b", handler=ft.greet_echo)
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(cfg([ft.service("d", listen, [b])], admin,
                        drain_timeout="60s"))
    held = []
    try:
        for _ in range(12):
            s = ft.connect(listen)
            held.append(s)
            assert ft.read_line(s) == "b"
        busy = per_worker(admin, "ferry_worker_connections")
        assert sum(busy) == 12 and sum(1 for n in busy if n) >= 2, busy
        f.signal(signal.SIGTERM)
        ft.wait_for(lambda: ft.is_refused(listen), what="listeners closed")
        for _ in range(20):
            assert ft.is_refused(listen)
        while len(held) > 1:
            s = held.pop()
            s.sendall(b"still here\n")
            assert ft.read_line(s) == "still here"
            ft.close_and_wait(s)
            assert f.alive(), "ferry exited with connections still open"
        last = held.pop()
        last.sendall(b"last\n")
        assert ft.read_line(last) == "last"
        ft.close_and_wait(last)
        assert f.wait_exit() == 0
    finally:
        for s in held:
            s.close()


def test_workers_setting_is_read_at_start(start_ferry, backends):
    """relay.workers does not change on reload: ferry says so and keeps
    its workers."""
    b = backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(cfg([ft.service("web", listen, [b])], admin))
    off = f.reload(cfg([ft.service("web", listen, [b])], admin, workers=2))
    f.wait_log(r"relay.workers changed \(3 to 2\): it takes effect at the "
               r"next start", start=off)
    assert at.sample(at.scrape(admin), "ferry_workers") == W
    assert ft.hello(listen) == "b"


@pytest.mark.parametrize("workers", [1, W])
def test_port_stays_exclusive(start_ferry, backends, workers):
    """A second ferry on an address the first serves fails to start with
    a clear error, instead of silently sharing the port through
    SO_REUSEPORT (which several workers use among themselves)."""
    b = backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(cfg([ft.service("web", listen, [b])], admin,
                    workers=workers), name="first")
    second = start_ferry(ft.config([ft.service("web", listen, [b])],
                                   relay={"workers": workers}),
                         wait=False, name="second")
    assert second.wait_exit() == 1
    log = second.log_text()
    assert "cannot listen on %s: Address already in use" % listen in log, log
    assert ft.hello(listen) == "b"


def test_many_addresses_fall_back_to_worker_0(start_ferry, backends):
    """Each worker thread needs a socket per address: with 30 addresses,
    two threads and a descriptor limit of 200 that would be more than a
    quarter of it, so the threads listen on nothing and worker 0 serves
    every service (all reachable). A reload down to 5 addresses gives the
    threads their listeners back."""
    b = backends("b")
    admin = ft.free_addr()
    many = [ft.free_addr() for _ in range(30)]
    f = start_ferry(cfg([ft.service(f"s{i}", a, [b])
                         for i, a in enumerate(many)], admin),
                    rlimit_nofile=200)
    f.wait_log(r"workers: 30 listening addresses on 2 worker threads would "
               r"take more than a quarter of the descriptor limit \(200\); "
               r"worker 0 serves them alone")
    for a in many:
        for _ in range(3):
            assert ft.hello(a) == "b"
    acc = per_worker(admin, "ferry_worker_accepted_total")
    assert acc == [90, 0, 0], acc
    off = f.reload(cfg([ft.service(f"s{i}", a, [b])
                        for i, a in enumerate(many[:5])], admin))
    f.wait_log(r"workers: 5 listening addresses: every worker serves them "
               r"again", start=off)
    for _ in range(60):
        assert ft.hello(many[0]) == "b"
    after = per_worker(admin, "ferry_worker_accepted_total")
    assert after[1] > 0 and after[2] > 0, after
    for a in many[5:]:
        ft.wait_for(lambda a=a: ft.is_refused(a), what=f"{a} closed")


# ptrace(2) requests and waitpid(2) flags, from <sys/ptrace.h> and
# <sys/wait.h>.
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000


def _stop_thread(tid):
    """Stop one thread of another process (not the others): seize it and
    interrupt it. Returns the ptrace function, for _resume_thread."""
    import ctypes
    import os
    libc = ctypes.CDLL(None, use_errno=True)
    pt = libc.ptrace
    pt.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                   ctypes.c_void_p]
    pt.restype = ctypes.c_long
    if pt(PTRACE_SEIZE, tid, None, None) != 0:
        pytest.skip(f"ptrace: {os.strerror(ctypes.get_errno())}")
    assert pt(PTRACE_INTERRUPT, tid, None, None) == 0
    _, status = os.waitpid(tid, WALL)
    assert os.WIFSTOPPED(status), status
    return pt


def _thread_state(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_connections_answered_while_the_control_thread_is_stopped(
        start_ferry, backends, workers):
    """The control side (config, API watch, health checks, admin) runs on
    a thread that relays nothing: with that thread stopped (ptrace stops
    one thread, not the process), the admin server does not answer, and
    every new connection is still served by the workers, named ferry-wN
    in /proc. With one worker, or two (where the kernel may give a
    connection to either), none waits. The control thread also yields to
    the workers on a busy CPU (nice 5)."""
    import os
    import socket
    b = backends("b")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(cfg([ft.service("web", listen, [b])], admin,
                        workers=workers))
    assert ft.hello(listen) == "b"
    pid = f.pid
    names = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as fh:
            names[int(tid)] = fh.read().strip()
    assert sorted(n for n in names.values() if n.startswith("ferry-w")) \
        == [f"ferry-w{k}" for k in range(workers)], names
    # On a busy CPU the workers come first: the control thread runs at a
    # lower priority (nice 5), the workers at ferry's own.
    nice = ft.thread_nice(pid)
    assert nice["control"] == 5, nice
    assert all(nice[f"ferry-w{k}"] == 0 for k in range(workers)), nice
    pt = _stop_thread(pid)
    try:
        assert _thread_state(pid, pid) == "t"
        # The control thread is stopped: the admin server is silent.
        _, host, port = ft.parse_addr(admin)
        s = socket.create_connection((host, port), timeout=2)
        s.settimeout(0.5)
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        with pytest.raises(socket.timeout):
            s.recv(1)
        s.close()
        for _ in range(40):
            assert ft.hello(listen, timeout=2) == "b"
    finally:
        pt(PTRACE_DETACH, pid, None, None)
    assert at.http(admin, "GET", "/healthz")[0] == 200
