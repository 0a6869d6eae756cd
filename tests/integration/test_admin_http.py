"""The admin server's endpoints and its handling of bad clients:
/healthz, /readyz, /metrics (checked by prometheus_client's parser,
counters matching the connections made), /status; 400 for malformed or
oversized requests, 404 without echo, a slow client closed."""

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402


@pytest.fixture
def served(start_ferry, backends):
    """ferry with one service of two backends and the admin server."""
    a, b = backends("m-a"), backends("m-b")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b])]), admin, request_timeout="1s"))
    return f, listen, admin, a, b


def test_probes(served):
    f, listen, admin, _, _ = served
    assert at.http(admin, "GET", "/healthz")[:3:2] == (200, b"ok\n")
    assert at.http(admin, "GET", "/readyz")[:3:2] == (200, b"ready\n")
    status, headers, body = at.http(admin, "HEAD", "/readyz")
    assert status == 200 and body == b""
    assert headers["content-length"] == "6"
    # While SIGTERM drains an open connection, ferry is alive but not
    # ready.
    held = ft.connect(listen)
    try:
        ft.read_line(held)
        f.signal(signal.SIGTERM)
        f.wait_log(r"draining: listeners closed")
        status, _, body = at.http(admin, "GET", "/readyz")
        assert (status, body) == (503, b"not ready: shutting down\n")
        assert at.http(admin, "GET", "/healthz")[0] == 200
    finally:
        held.close()
    assert f.wait_exit() == 0


def test_metrics_parse_and_count(served):
    _, listen, admin, a, b = served
    for _ in range(6):
        with ft.connect(listen) as s:
            ft.read_line(s)
            s.sendall(b"0123456789\n")
            assert ft.read_line(s) == "0123456789"
    m = at.scrape(admin)
    assert at.sample(m, "ferry_service_connections_accepted_total",
                     service="web") == 6
    # ferry counts connections as they close; wait for all six.
    ft.wait_for(lambda: at.sample(at.scrape(admin),
                                  "ferry_service_connections_active",
                                  service="web") == 0,
                what="connections closed")
    m = at.scrape(admin)
    per = {x.name: at.sample(m, "ferry_backend_connections_total",
                             service="web", backend=x.name, address=x.addr)
           for x in (a, b)}
    assert per == {"m-a": 3, "m-b": 3}
    assert at.sample(m, "ferry_service_bytes_total", service="web",
                     direction="in") == 6 * 11
    assert at.sample(m, "ferry_service_bytes_total", service="web",
                     direction="out") == 6 * (11 + 4)  # echo + "m-x\n"
    assert at.sample(m, "ferry_service_connect_duration_seconds_count",
                     service="web") == 6
    assert at.sample(m, "ferry_service_connections_failed_total",
                     service="web", reason="refused") == 0
    assert at.sample(m, "ferry_table_generation") == 1
    assert at.sample(m, "ferry_ready") == 1
    assert at.sample(m, "process_open_fds") > 3
    # Histograms are cumulative and end in +Inf == count.
    lbl = {"service": "web", "backend": "m-a", "address": a.addr}
    assert at.sample(m, "ferry_backend_connect_duration_seconds_bucket",
                     le="+Inf", **lbl) == 3
    assert ("ferry_sync_proxy_rules_duration_seconds_count",
            frozenset()) in m


def test_metrics_promtool_if_present(served):
    import shutil
    import subprocess
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus); "
                    "prometheus_client's parser checks the format instead")
    _, _, admin, _, _ = served
    body = at.http(admin, "GET", "/metrics")[2]
    r = subprocess.run(["promtool", "check", "metrics"], input=body,
                       capture_output=True, timeout=ft.DEADLINE)
    assert r.returncode == 0, r.stdout + r.stderr


def test_failures_counted_by_reason(start_ferry, backends, closer):
    live = backends("live")
    dead = closer(ft.RefusingPort())
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(at.with_admin(ft.config([ft.service(
        "web", listen, [ft.backend_entry(dead.addr, name="dead"), live])]),
        admin))
    assert ft.hello(listen) == "live"
    m = at.scrape(admin)
    assert at.sample(m, "ferry_backend_connect_failures_total",
                     service="web", backend="dead", address=dead.addr,
                     reason="refused") == 1
    assert at.sample(m, "ferry_service_connect_retries_total",
                     service="web") == 1
    assert at.sample(m, "ferry_backend_ejections_total", service="web",
                     backend="dead", address=dead.addr) == 1
    st = at.backend_state(admin, "web", "dead")
    assert st["connect_failures"]["refused"] == 1
    assert st["consecutive_failures"] == 1


def test_status_json(served):
    _, listen, admin, a, b = served
    ft.hello(listen)
    st = at.get_json(admin)
    assert st["ready"] is True and st["generation"] == 1
    (svc,) = st["services"]
    assert svc["name"] == "web" and svc["balance"] == "roundrobin"
    assert svc["frontends"] == [listen]
    assert svc["counters"]["accepted"] == 1
    assert svc["health_check"] == {"type": "none"}
    assert [(x["name"], x["address"], x["state"], x["weight"])
            for x in svc["backends"]] == [("m-a", a.addr, "up", 1),
                                          ("m-b", b.addr, "up", 1)]
    assert svc["backends_total"] == 2


def test_status_lists_at_most_1000_backends(start_ferry):
    """A service's first 1,000 backends are listed, and all counted."""
    admin = ft.free_addr()
    wide = [f"127.4.{i // 256}.{i % 256}:9" for i in range(1200)]
    start_ferry(at.with_admin(ft.config(
        [ft.service("wide", ft.free_addr(), wide)]), admin))
    (svc,) = at.get_json(admin)["services"]
    assert svc["backends_total"] == 1200
    assert [x["address"] for x in svc["backends"]] == wide[:1000]


@pytest.mark.parametrize("req", [
    b"GARBAGE\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\n\r\n",
    b"GET healthz HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /%zz HTTP/1.1\r\n\r\n",
])
def test_malformed_is_400(served, req):
    _, _, admin, _, _ = served
    reply = at.raw(admin, req)
    assert at.status_code(reply) == 400
    assert at.http(admin, "GET", "/healthz")[0] == 200  # still serving


def test_oversized_is_400(served):
    f, _, admin, _, _ = served
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert at.status_code(at.raw(admin, big)) == 400
    body = b"POST /backends/web/m-a/drain HTTP/1.1\r\nContent-Length: 9000\r\n\r\n"
    assert at.status_code(at.raw(admin, body)) == 400
    assert at.backend_state(admin, "web", "m-a")["state"] == "up"
    assert f.alive()


def test_unknown_path_not_echoed(served):
    _, _, admin, _, _ = served
    status, _, body = at.http(admin, "GET", "/<script>secret-path</script>")
    assert status == 404
    assert b"secret-path" not in body and b"script" not in body


def test_slow_client_is_closed(served):
    """A client that never finishes its request is closed after
    request_timeout (1 s here); the server keeps serving others."""
    f, _, admin, _, _ = served
    s = ft.connect(admin)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no end
        t0 = time.monotonic()
        assert at.http(admin, "GET", "/healthz")[0] == 200
        s.settimeout(ft.scaled(10))
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
        took = time.monotonic() - t0
        assert data == b"", data
        assert 0.5 <= took < ft.scaled(10), took
    finally:
        s.close()
    # Idle connections without a byte are closed too.
    with ft.connect(admin) as s2:
        s2.settimeout(ft.scaled(10))
        try:
            assert s2.recv(100) == b""
        except ConnectionResetError:
            pass
    assert f.alive()


def test_admin_bind_failure_is_not_fatal(start_ferry, backends):
    a = backends("x")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        listen = ft.free_addr()
        admin = ft.fmt_addr("127.0.0.1", taken.getsockname()[1])
        text = at.with_admin(ft.config([ft.service("web", listen, [a])]),
                             admin)
        f = start_ferry(text, wait=False)
        f.wait_ready([listen])
        f.wait_log(r"admin: cannot listen on .*; continuing without the "
                   r"admin server")
        assert ft.hello(listen) == "x"
    finally:
        taken.close()
