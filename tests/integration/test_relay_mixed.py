"""Many clients at once, against backends that echo, reset at once, reset
mid-stream or close early, with reloads in between: whatever happens to a
connection, the bytes a client gets back are a prefix of what it sent,
never another connection's. Runs on the default engine, and on the other
one in tests/run's engine pass; relay.splice always and auto (pipes are
pooled across connections, copy buffers too)."""

import os
import random
import socket
import threading
import time

import pytest

import ferrytest as ft

CLIENTS = 24
SECONDS = 2


def mixed_backend(backend, conn):
    """Echo, except that one connection in ten resets at once, one in ten
    closes after a moment, and one chunk in fifty resets mid-stream."""
    rnd = random.Random()
    mode = rnd.random()
    conn.settimeout(ft.scaled(5))
    if mode < 0.1:
        ft.set_linger_rst(conn)
        return
    if mode < 0.2:
        time.sleep(rnd.random() * 0.05)
        return
    while True:
        d = conn.recv(65536)
        if not d:
            break
        if rnd.random() < 0.02:
            ft.set_linger_rst(conn)
            return
        conn.sendall(d)
    conn.shutdown(socket.SHUT_WR)


def send_all(s, data):
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the backend reset: the reader sees it


@pytest.mark.parametrize("splice", ["always", "auto"])
def test_bytes_never_cross_connections(start_ferry, backends, splice):
    b = backends("mixed", handler=mixed_backend, backlog=256)
    listen = ft.free_addr()
    cfg = ft.config([ft.service("m", listen, [b])], retries=0,
                    idle_timeout="2s", relay={"splice": splice, "workers": 2})
    f = start_ferry(cfg)
    stop = threading.Event()
    crossed, clean = [], [0]
    lock = threading.Lock()

    def client(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            data = os.urandom(rnd.choice([1, 300, 5000, 40000, 200000]))
            try:
                with ft.connect(listen, ft.scaled(5)) as s:
                    r = rnd.random()
                    if r < 0.3:  # half sent, the echo coming: reset
                        s.sendall(data[:len(data) // 2 + 1])
                        time.sleep(rnd.random() * 0.002)
                        ft.set_linger_rst(s)
                        continue
                    if r < 0.65:  # all sent before reading: queues fill
                        send_all(s, data)
                        got = ft.read_until_eof(s, ft.scaled(10))
                    else:
                        t = threading.Thread(target=send_all,
                                             args=(s, data), daemon=True)
                        t.start()
                        got = ft.read_until_eof(s, ft.scaled(10))
                        t.join(ft.scaled(10))
            except OSError:
                continue  # reset: a backend's reset passed on
            with lock:
                if data.startswith(got):
                    clean[0] += 1
                else:
                    crossed.append((len(data), len(got)))

    ts = [threading.Thread(target=client, args=(i,), daemon=True)
          for i in range(CLIENTS)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + ft.scaled(SECONDS)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        f.reload(cfg)
    stop.set()
    for t in ts:
        t.join(ft.scaled(20))
    assert crossed == [], crossed[:5]
    assert clean[0] > 50, clean[0]
    assert f.alive()
