"""Relaying bytes: bulk data both ways, and half-close in both directions,
with each way of relaying (relay.splice: auto, always, never)."""

import hashlib
import os
import socket
import threading

import pytest

import admintest as at
import ferrytest as ft

MODES = ["auto", "always", "never"]


def echo_through(addr, payload, timeout):
    """Send <payload> while reading the echo concurrently; returns what came
    back. Sending in a thread keeps both directions moving, so the test
    needs ferry's back-pressure to work, not large buffers."""
    err = []
    with ft.connect(addr, timeout) as s:
        def send():
            try:
                view = memoryview(payload)
                for off in range(0, len(payload), 1 << 16):
                    s.sendall(view[off:off + (1 << 16)])
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                err.append(e)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            got = ft.recv_exact(s, len(payload), timeout)
            rest = ft.read_until_eof(s, timeout)
        finally:
            t.join(timeout)
    assert not err, f"sending failed: {err}"
    assert rest == b"", f"{len(rest)} unexpected bytes after the echo"
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1 << 20, 16 << 20], ids=["1MiB", "16MiB"])
def test_bulk_echo_is_byte_exact(start_ferry, backends, size, mode):
    b = backends("echo", handler="echo")
    payload = os.urandom(size)
    # sanity: the echo backend itself is byte-exact
    if size == 1 << 20:
        assert echo_through(b.addr, payload, ft.DEADLINE) == payload
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("bulk", listen, [b])],
                          relay={"splice": mode}))
    got = echo_through(listen, payload, ft.scaled(60))
    assert len(got) == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("mode", MODES)
def test_bulk_several_connections_at_once(start_ferry, backends, mode):
    """Four 1 MiB echoes in parallel do not mix their bytes."""
    b = backends("echo", handler="echo")
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("bulk", listen, [b])],
                          relay={"splice": mode}))
    payloads = [os.urandom(1 << 20) for _ in range(4)]
    results = [None] * 4
    errors = []

    def run(i):
        try:
            results[i] = echo_through(listen, payloads[i], ft.scaled(60))
        except (OSError, EOFError, AssertionError) as e:
            errors.append((i, repr(e)))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(ft.scaled(90))
    assert errors == []
    assert results == payloads


# A backend for the client-first half-close: read everything until EOF, then
# answer with the digest of what arrived and a large reply, then close.
REPLY = os.urandom(512 << 10)


def digest_then_reply(backend, conn):
    h = hashlib.sha256()
    n = 0
    for _ in range(1 << 20):
        data = conn.recv(1 << 16)
        if not data:
            break
        h.update(data)
        n += len(data)
    conn.sendall(f"{n} {h.hexdigest()}\n".encode() + REPLY)
    conn.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("mode", MODES)
def test_half_close_client_first(start_ferry, backends, mode):
    """Client sends, then SHUT_WR: the backend sees EOF (ferry passed the
    FIN on), and its reply, sent after that EOF, still reaches the client
    in full, followed by EOF."""
    b = backends("half", handler=digest_then_reply)
    request = os.urandom(300 << 10)
    want = f"{len(request)} {hashlib.sha256(request).hexdigest()}\n".encode()

    def run(addr):
        with ft.connect(addr) as s:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            return ft.read_until_eof(s)
    assert run(b.addr) == want + REPLY  # sanity, without ferry
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("half", listen, [b])],
                          relay={"splice": mode}))
    got = run(listen)
    assert got[:len(want)] == want
    assert len(got) == len(want) + len(REPLY)
    assert got[len(want):] == REPLY


# A backend for the backend-first half-close: send a greeting, SHUT_WR, then
# keep reading until the client's EOF and record what arrived.
GREETING = os.urandom(200 << 10)


def greet_then_listen(backend, conn):
    conn.sendall(GREETING)
    conn.shutdown(socket.SHUT_WR)
    parts = []
    for _ in range(1 << 20):
        data = conn.recv(1 << 16)
        if not data:
            break
        parts.append(data)
    with backend.lock:
        backend.records.append(b"".join(parts))


@pytest.mark.parametrize("mode", MODES)
def test_half_close_backend_first(start_ferry, backends, mode):
    """The backend sends and shuts its write side first: the client reads
    the data and EOF, then keeps sending; all of it reaches the backend."""
    b = backends("mirror", handler=greet_then_listen)
    upload = os.urandom(300 << 10)

    def run(addr):
        with ft.connect(addr) as s:
            assert ft.read_until_eof(s) == GREETING
            # EOF seen; our direction must still be open end to end.
            s.sendall(upload)
            s.shutdown(socket.SHUT_WR)
            # Once the backend has read our EOF, it closes and so does
            # ferry: nothing more arrives.
            assert ft.read_until_eof(s) == b""

    run(b.addr)  # sanity, without ferry
    ft.wait_for(lambda: len(b.records) == 1, what="sanity record")
    assert b.records[0] == upload
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("mirror", listen, [b])],
                          relay={"splice": mode}))
    run(listen)
    ft.wait_for(lambda: len(b.records) == 2, what="backend got the upload")
    assert len(b.records[1]) == len(upload)
    assert b.records[1] == upload


def metric(admin, name):
    for ln in at.http(admin, "GET", "/metrics")[2].decode().splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def config_with_admin(services, admin, relay):
    text = ft.config(services, relay=relay)
    return text + ft.to_yaml({"admin": {"enabled": True,
                                        "listen": admin}}) + "\n"


def test_splice_pipes_are_pooled_and_counted(start_ferry, backends):
    """auto: small exchanges never take a pipe; a bulk echo does, and gives
    it back when the connection ends (pooled: the count of pipes does not
    grow with the number of bulk connections, and no descriptor leaks)."""
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(config_with_admin([ft.service("bulk", listen, [b])],
                                      admin, {"splice": "auto"}))
    fds0 = f.fd_count()
    for _ in range(20):
        with ft.connect(listen) as s:
            s.sendall(b"ping\n")
            assert ft.read_line(s) == "ping"
    assert metric(admin, "ferry_relay_pipes") == 0
    payload = os.urandom(4 << 20)
    for _ in range(6):
        assert echo_through(listen, payload, ft.scaled(60)) == payload
    # One pipe per direction of one connection at a time, reused: each
    # worker pools its own, so at most two per worker.
    pipes = metric(admin, "ferry_relay_pipes")
    assert 1 <= pipes <= 2 * metric(admin, "ferry_workers"), pipes
    ft.wait_for(lambda: b.active == 0, what="backend connections closed")
    ft.wait_for(lambda: f.fd_count() == fds0 + 2 * pipes,
                what="descriptors back to the baseline plus pooled pipes")
    assert metric(admin, "ferry_relay_pipes_denied_total") == 0


def test_splice_budget_falls_back_to_copying(start_ferry, backends):
    """A budget of one pipe (two descriptors): of four bulk echoes at once
    only one direction of one connection splices; the others copy, are
    counted as denied, and every byte still arrives intact."""
    b = backends("echo", handler="echo")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(config_with_admin([ft.service("bulk", listen, [b])], admin,
                                  {"splice": "always", "pipe_budget": 2}))
    payloads = [os.urandom(2 << 20) for _ in range(4)]
    results, errors = [None] * 4, []

    def run(i):
        try:
            results[i] = echo_through(listen, payloads[i], ft.scaled(60))
        except (OSError, EOFError, AssertionError) as e:
            errors.append((i, repr(e)))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(ft.scaled(90))
    assert errors == []
    assert results == payloads
    assert metric(admin, "ferry_relay_pipes") == 1
    assert metric(admin, "ferry_relay_pipes_denied_total") >= 1


def test_backend_close_closes_client(start_ferry, backends):
    """A backend that answers and closes: the client gets the answer and
    EOF, not a hang."""
    def answer_and_close(backend, conn):
        conn.sendall(b"bye\n")
    b = backends("closer", handler=answer_and_close)
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("c", listen, [b])]))
    with ft.connect(listen) as s:
        assert ft.read_until_eof(s) == b"bye\n"


def test_client_reset_does_not_hurt_others(start_ferry, backends):
    """A client that resets mid-stream does not disturb ferry or another
    connection."""
    b = backends("echo", handler="echo")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("r", listen, [b])]))
    with ft.connect(listen) as keep:
        for _ in range(5):
            s = ft.connect(listen)
            s.sendall(os.urandom(64 << 10))
            ft.set_linger_rst(s)
            s.close()
        keep.sendall(b"still here\n")
        assert ft.read_line(keep) == "still here"
    ft.wait_for(lambda: b.active == 0, what="backend connections closed")
    assert f.alive()


def test_pipe_of_an_aborted_splice_is_not_pooled_with_its_bytes(
        start_ferry, backends):
    """relay.splice always, one worker: a connection whose backend resets
    while client bytes sit in its pipe ends, and the pipe does not go back
    to the pool still holding them (the next connection to take it would
    send a stranger's bytes first). Echoes through the same worker stay
    byte-exact."""
    def reset_at_once(backend, conn):
        ft.set_linger_rst(conn)

    rst = backends("rst", handler=reset_at_once)
    echo = backends("echo", handler="echo")
    l_rst, l_echo = ft.free_addr(), ft.free_addr()
    start_ferry(ft.config([ft.service("rst", l_rst, [rst]),
                           ft.service("echo", l_echo, [echo])],
                          relay={"splice": "always", "workers": 1},
                          retries=0))
    for i in range(30):
        try:
            with ft.connect(l_rst) as s:
                s.sendall(os.urandom(64 << 10))
                ft.read_until_eof(s, ft.scaled(5))
        except OSError:
            pass  # reset, as it should be
        payload = os.urandom(1000 + 97 * i)
        assert echo_through(l_echo, payload, ft.scaled(10)) == payload, i
