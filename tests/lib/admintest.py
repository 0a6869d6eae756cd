"""Helpers for the admin-server and health-check integration tests.

- with_admin: add an "admin:" section to a config written by
  ferrytest.config().
- http: one request to the admin server, through http.client (a POST
  carries the control header).
- raw: send raw bytes and read the whole reply (for malformed requests).
- HttpGreeter: a backend handler that answers an HTTP health check with a
  status the test controls, and greets any other client like "greet".
- scrape: /metrics parsed by prometheus_client's own parser.
"""

import http.client as httpclient
import json
import socket
import threading

import ferrytest as ft


def with_admin(config_text, addr, request_timeout="1s"):
    """<config_text> plus an enabled admin server on <addr>."""
    return (config_text.rstrip("\n") + "\nadmin:\n  enabled: true\n"
            f"  listen: \"{addr}\"\n  request_timeout: {request_timeout}\n")


# What a control request (POST) must carry besides a Host naming the
# admin address, which http.client sends by itself: see README "Admin
# server".
CONTROL_HEADERS = {"X-Ferry-Control": "1"}


def http(addr, method, path, body=None, timeout=None, headers=None):
    """(status, headers dict with lower-case names, body bytes). A POST
    carries CONTROL_HEADERS unless <headers> is given."""
    _, host, port = ft.parse_addr(addr)
    if headers is None:
        headers = dict(CONTROL_HEADERS) if method == "POST" else {}
    c = httpclient.HTTPConnection(host, port,
                                   timeout=timeout or ft.DEADLINE)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def answers(addr):
    """True once the admin server at <addr> answers /readyz at all (it
    starts listening after the first table's listeners)."""
    try:
        http(addr, "GET", "/readyz", timeout=2)
        return True
    except OSError:
        return False


def get_json(addr, path="/status"):
    status, _, body = http(addr, "GET", path)
    assert status == 200, (status, body)
    return json.loads(body)


def raw(addr, data, timeout=None):
    """Send <data>, half-close, return everything until the server's FIN
    (b"" if it reset)."""
    s = ft.connect(addr, timeout)
    try:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            return ft.read_until_eof(s, timeout)
        except ConnectionResetError:
            return b""
    finally:
        s.close()


def status_code(reply):
    """The status code of a raw HTTP reply."""
    line = reply.split(b"\r\n", 1)[0].decode()
    parts = line.split(" ")
    assert parts[0] == "HTTP/1.1", line
    return int(parts[1])


def backend_state(addr, service, name):
    """The /status entry of one backend."""
    for s in get_json(addr)["services"]:
        if s["name"] == service:
            for b in s["backends"]:
                if b["name"] == name:
                    return b
    raise AssertionError(f"no backend {service}/{name} in /status")


class HttpGreeter:
    """Handler state for a ferrytest.Backend that serves two kinds of
    clients on one port: a client that starts with "GET " (ferry's HTTP
    health check) gets "HTTP/1.1 <status>", counted in <checks>; any other
    client, which waits for the greeting, gets the backend's name and an
    echo, as with "greet"."""

    def __init__(self, status=200):
        self.status = status
        self.checks = 0
        self.lock = threading.Lock()

    def set_status(self, status):
        with self.lock:
            self.status = status

    def count(self):
        with self.lock:
            return self.checks

    def __call__(self, backend, conn):
        conn.settimeout(ft.scaled(0.15))
        try:
            first = conn.recv(4096)
        except socket.timeout:
            first = None
        conn.settimeout(ft.DEADLINE)
        if first is not None and first.startswith(b"GET "):
            with self.lock:
                self.checks += 1
                status = self.status
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())
            return
        conn.sendall(backend.name.encode() + b"\n")
        if first:
            conn.sendall(first)
        elif first == b"":
            return
        ft.echo(backend, conn)


def scrape(addr):
    """/metrics as {(name, frozenset(labels.items())): value}, parsed by
    prometheus_client's text parser (which raises on malformed input)."""
    from prometheus_client.parser import text_string_to_metric_families
    status, headers, body = http(addr, "GET", "/metrics")
    assert status == 200, (status, body[:200])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics, name, **labels):
    """The value of one sample (KeyError if absent)."""
    return metrics[(name, frozenset(labels.items()))]


def wait_checks(greeter, n, timeout=None):
    """Wait until <greeter> has answered <n> more health checks."""
    start = greeter.count()
    ft.wait_for(lambda: greeter.count() >= start + n, timeout,
                f"{n} more health checks")
