"""relay.engine: io_uring relays what epoll relays, counts it, holds back a
sender whose receiver does not read, hands bulk flows to splice(), takes
effect at a reload, and falls back to epoll with one line when the kernel
refuses a ring. (The whole relay suite also runs on each engine: see
tests/run, FERRY_RELAY_ENGINE.)"""

import hashlib
import os
import socket
import sys
import threading

import admintest as at
import ferrytest as ft

NO_IO_URING = os.path.join(os.path.dirname(ft.__file__), "no_io_uring.py")


def metric(admin, name):
    for ln in at.http(admin, "GET", "/metrics")[2].decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def engine_config(listen, admin, backend, engine, workers=1, **relay):
    relay = dict(relay, engine=engine, workers=workers)
    text = ft.config([ft.service("svc", listen, [backend])], relay=relay)
    return text + ft.to_yaml({"admin": {"enabled": True,
                                        "listen": admin}}) + "\n"


def exchange(addr, n):
    for i in range(n):
        with ft.connect(addr) as s:
            s.sendall(b"hello %d\n" % i)
            assert ft.read_line(s) == "hello %d" % i


def test_io_uring_relays_each_connection_on_the_ring(start_ferry, backends,
                                                     monkeypatch):
    """Each connection is counted as relayed on the ring, and the log says
    each worker made one; under epoll the counter stays at 0."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(engine_config(listen, admin, b, "io_uring", workers=2))
    exchange(listen, 12)
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 12
    f.wait_log(r"worker 1: relaying on io_uring")
    f.wait_log(r"worker 0: relaying on io_uring")

    listen2, admin2 = ft.free_addr(), ft.free_addr()
    start_ferry(engine_config(listen2, admin2, b, "epoll"), name="epoll")
    exchange(listen2, 3)
    assert metric(admin2, "ferry_relay_io_uring_connections_total") == 0


def test_default_engine_environment_and_splice_always(start_ferry, backends,
                                                      monkeypatch):
    """A config that names no engine relays on io_uring (the default);
    FERRY_RELAY_ENGINE overrides the config either way; relay.splice
    always keeps every connection on epoll (it splices from the first
    byte)."""
    b = backends("echo", handler="echo")

    def run(env, engine=None, name="ferry", **relay):
        if env is None:
            monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
        else:
            monkeypatch.setenv("FERRY_RELAY_ENGINE", env)
        listen, admin = ft.free_addr(), ft.free_addr()
        if engine is not None:
            relay["engine"] = engine
        text = ft.config([ft.service("svc", listen, [b])], relay=relay)
        text += ft.to_yaml({"admin": {"enabled": True,
                                      "listen": admin}}) + "\n"
        start_ferry(text, name=name)
        exchange(listen, 4)
        return admin

    admin = run(None)
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 4
    admin = run("epoll", name="env-epoll")
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 0
    admin = run("io_uring", "epoll", name="env-io_uring")
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 4
    admin = run(None, name="always", splice="always")
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 0
    assert metric(admin, "ferry_relay_pipes") >= 1


def test_io_uring_idle_connections_hold_no_buffer(start_ferry, backends,
                                                  monkeypatch):
    """600 connections, each after an exchange, then idle: ferry's memory
    grows by the worker's ring buffers (2 MiB, shared) and well under a
    buffer (32 KiB) per connection."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    b = backends("echo", handler="echo", backlog=512)
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(engine_config(listen, admin, b, "io_uring"))
    exchange(listen, 2)
    rss0 = ft.rss_kb(f.pid)
    socks = []
    try:
        for i in range(600):
            s = ft.connect(listen)
            socks.append(s)
            s.sendall(b"x%d\n" % i)
            assert ft.read_line(s) == "x%d" % i
        ft.wait_for(lambda: b.active >= 600, what="600 backend connections")
        grown = ft.rss_kb(f.pid) - rss0
        # Under AddressSanitizer its allocator's redzones and shadow add
        # about as much again (4,452 KiB was seen); a 32 KiB buffer per
        # connection would still be nearly three times the bound.
        per_conn = 8 if os.environ.get("FERRY_SANITIZED") == "1" else 4
        assert grown < 2048 + 600 * per_conn, grown
        assert metric(admin, "ferry_relay_io_uring_connections_total") == 602
    finally:
        for s in socks:
            s.close()


def test_io_uring_refused_falls_back_to_epoll_with_one_line(
        start_ferry, backends, monkeypatch):
    """A seccomp filter refuses io_uring_setup (as container runtimes'
    default profiles do): ferry says so once, counts the refusal per
    worker, and relays every connection with epoll."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(engine_config(listen, admin, b, "io_uring", workers=2),
                    prefix=[sys.executable, NO_IO_URING])
    exchange(listen, 6)
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 0
    ft.wait_for(lambda: metric(admin, "ferry_relay_io_uring_refused_total")
                == 2, what="both workers refused a ring")
    log = f.log_text()
    lines = [ln for ln in log.splitlines() if "relay.engine io_uring" in ln]
    assert len(lines) == 1, lines
    assert "Operation not permitted" in lines[0]
    assert "relaying with epoll" in lines[0]
    assert "relaying on io_uring" not in log


def test_io_uring_holds_back_senders_and_loses_nothing(start_ferry, backends,
                                                       monkeypatch):
    """24 clients each send 2 MiB to backends that read nothing until
    told: each direction stops receiving at a few ring buffers, so the
    ring's 64 run out and receives wait in line for one (counted);
    ferry's memory stays bounded while the bytes wait in the kernel's
    socket buffers, and once the backends read, every byte arrives, in
    order."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    go = threading.Event()
    got = {}
    lock = threading.Lock()

    def slow_sink(backend, conn):
        go.wait(ft.scaled(60))
        h, n = hashlib.sha256(), 0
        while True:
            d = conn.recv(1 << 16)
            if not d:
                break
            h.update(d)
            n += len(d)
        with lock:
            got[h.hexdigest()] = n
        conn.sendall(b"done\n")

    b = backends("sink", handler=slow_sink, backlog=64)
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(engine_config(listen, admin, b, "io_uring",
                                  splice="never"))
    payloads = [os.urandom(2 << 20) for _ in range(24)]
    answers = [None] * len(payloads)
    errors = []

    def client(i):
        try:
            with ft.connect(listen, ft.scaled(60)) as s:
                s.sendall(payloads[i])
                s.shutdown(socket.SHUT_WR)
                answers[i] = ft.read_line(s, ft.scaled(60))
        except (OSError, EOFError) as e:
            errors.append((i, repr(e)))

    rss0 = ft.rss_kb(f.pid)
    ts = [threading.Thread(target=client, args=(i,), daemon=True)
          for i in range(len(payloads))]
    for t in ts:
        t.start()
    ft.wait_for(lambda: b.accepted == len(payloads), what="all connected")
    ft.wait_for(lambda: metric(admin, "ferry_relay_io_uring_buffer_waits_total")
                > 0, what="a receive waiting for a ring buffer")
    # 48 MiB are on their way; ferry holds at most its ring's 2 MiB.
    assert ft.rss_kb(f.pid) - rss0 < 8 * 1024
    go.set()
    for t in ts:
        t.join(ft.scaled(60))
    assert errors == []
    assert answers == ["done"] * len(payloads)
    want = {hashlib.sha256(p).hexdigest(): len(p) for p in payloads}
    assert got == want
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 24


def test_io_uring_hands_bulk_to_splice(start_ferry, backends, monkeypatch):
    """relay.splice auto: a connection that moves bulk data leaves the
    ring for epoll and splice() mid-stream, without losing a byte."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(engine_config(listen, admin, b, "io_uring", splice="auto"))
    with ft.connect(listen) as s:  # small first: on the ring
        s.sendall(b"hi\n")
        assert ft.read_line(s) == "hi"
        payload = os.urandom(8 << 20)
        err = []

        def send():
            try:
                s.sendall(payload)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = ft.recv_exact(s, len(payload), ft.scaled(60))
        t.join(ft.scaled(60))
    assert not err
    assert got == payload
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 1
    assert metric(admin, "ferry_relay_io_uring_to_splice_total") == 1


def test_engine_changes_at_a_reload_for_new_connections(start_ferry, backends,
                                                        monkeypatch):
    """A reload from epoll to io_uring: a connection open across it keeps
    relaying (with epoll), new ones go on the ring; and back."""
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(engine_config(listen, admin, b, "epoll"))
    with ft.connect(listen) as old:
        old.sendall(b"before\n")
        assert ft.read_line(old) == "before"
        f.reload(engine_config(listen, admin, b, "io_uring"))
        f.wait_log(r"reload: applied .*generation 2")
        exchange(listen, 2)
        assert metric(admin, "ferry_relay_io_uring_connections_total") == 2
        old.sendall(b"after\n")
        assert ft.read_line(old) == "after"
    f.reload(engine_config(listen, admin, b, "epoll"))
    f.wait_log(r"reload: applied .*generation 3")
    exchange(listen, 3)
    assert metric(admin, "ferry_relay_io_uring_connections_total") == 2


def test_bad_engine_is_refused_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FERRY_RELAY_ENGINE", raising=False)
    cfg = tmp_path / "f.yaml"
    cfg.write_text(ft.config([ft.service("s", "127.0.0.1:1",
                                         ["127.0.0.1:2"])],
                             relay={"engine": "kqueue"}))
    r = ft.run_ferry(["check-config", str(cfg)])
    assert r.returncode != 0
    assert "engine" in r.stderr and "io_uring" in r.stderr, r.stderr
    cfg.write_text(ft.config([ft.service("s", "127.0.0.1:1",
                                         ["127.0.0.1:2"])]))
    monkeypatch.setenv("FERRY_RELAY_ENGINE", "uring")
    r = ft.run_ferry(["check-config", str(cfg)])
    assert r.returncode != 0
    assert "FERRY_RELAY_ENGINE" in r.stderr and "uring" in r.stderr, r.stderr
