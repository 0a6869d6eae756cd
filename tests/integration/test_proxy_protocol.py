"""PROXY protocol (README: "PROXY protocol"): send_proxy puts a v1 or v2
header before the client's bytes on the way to the backend; accept_proxy
reads one from a balancer in front, refuses a missing, malformed or cut
header (reset and counted), and takes the client's address from it for
the header sent on and for the logs. Real sockets on loopback; the
addresses inside headers come from 198.18.0.0/15 and are never dialled."""

import socket
import struct
import threading

import pytest

import admintest as at
import ferrytest as ft

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# ---------------------------------------------------------------- headers


def read_header(conn, timeout=None):
    """Read one PROXY header off <conn>, whatever its version, exactly (no
    byte past it). Returns (version, src, dst) with addresses as (ip,
    port), or None for each when the header carries none."""
    first = ft.recv_exact(conn, 1, timeout)
    if first == b"P":
        line = first
        while not line.endswith(b"\r\n"):
            assert len(line) <= 107, line
            line += ft.recv_exact(conn, 1, timeout)
        f = line[:-2].decode().split(" ")
        assert f[0] == "PROXY", line
        if f[1] == "UNKNOWN":
            return 1, None, None
        assert f[1] in ("TCP4", "TCP6") and len(f) == 6, line
        return 1, (f[2], int(f[4])), (f[3], int(f[5]))
    rest = ft.recv_exact(conn, 15, timeout)
    fixed = first + rest
    assert fixed[:12] == V2_SIG, fixed
    vc, fam, n = fixed[12], fixed[13], struct.unpack(">H", fixed[14:16])[0]
    body = ft.recv_exact(conn, n, timeout) if n else b""
    assert vc == 0x21, hex(vc)
    if fam == 0x11:
        src = socket.inet_ntop(socket.AF_INET, body[0:4])
        dst = socket.inet_ntop(socket.AF_INET, body[4:8])
        sp, dp = struct.unpack(">HH", body[8:12])
    elif fam == 0x21:
        src = socket.inet_ntop(socket.AF_INET6, body[0:16])
        dst = socket.inet_ntop(socket.AF_INET6, body[16:32])
        sp, dp = struct.unpack(">HH", body[32:36])
    else:
        assert fam == 0x00 and n == 0, (hex(fam), n)
        return 2, None, None
    return 2, (src, sp), (dst, dp)


def v1(src, dst):
    fam = "TCP6" if ":" in src[0] else "TCP4"
    return (f"PROXY {fam} {src[0]} {dst[0]} {src[1]} {dst[1]}\r\n").encode()


def tlv(t, value):
    return bytes([t]) + struct.pack(">H", len(value)) + value


def v2(src, dst, tlvs=b"", command=0x21):
    fam = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    body = (socket.inet_pton(fam, src[0]) + socket.inet_pton(fam, dst[0])
            + struct.pack(">HH", src[1], dst[1]) + tlvs)
    famtr = 0x21 if fam == socket.AF_INET6 else 0x11
    return V2_SIG + bytes([command, famtr]) + struct.pack(">H",
                                                         len(body)) + body


class HeaderBackend:
    """Backend handler: read the PROXY header, record (version, src, dst,
    first bytes after it), then echo."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def __call__(self, backend, conn):
        hdr = read_header(conn)
        data = conn.recv(1 << 16)
        with self.lock:
            self.seen.append(hdr + (data,))
        if data:
            conn.sendall(data)
            ft.echo(backend, conn)

    def wait(self, n):
        return ft.wait_for(lambda: len(self.seen) >= n and self.seen,
                           what=f"{n} connection(s) with a header")


def hostport(sockname):
    return (sockname[0], sockname[1])


def addr_tuple(addr):
    _, host, port = ft.parse_addr(addr)
    return (host, port)


def echo_once(addr, payload=b"hello", prefix=b""):
    """Connect, send <prefix> + <payload>, read the echo of <payload>.
    Returns the client socket's own address."""
    with ft.connect(addr) as s:
        s.sendall(prefix + payload)
        assert ft.recv_exact(s, len(payload)) == payload
        me = hostport(s.getsockname())
        ft.close_and_wait(s)
    return me


def scrape_when(admin, pred, what):
    """Scrape until pred(metrics) holds; returns those metrics."""
    def check():
        m = at.scrape(admin)
        return m if pred(m) else None
    return ft.wait_for(check, what=what)


# ---------------------------------------------------------------- send_proxy


FAMILIES = [pytest.param("127.0.0.1", id="ipv4"),
            pytest.param("::1", id="ipv6")]


@pytest.mark.parametrize("host", FAMILIES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_tells_backend_the_client(start_ferry, backends, host,
                                             version):
    if ":" in host and not ft.have_ipv6():
        pytest.skip("no IPv6 on loopback")
    h = HeaderBackend()
    b = backends("hdr", handler=h, host=host)
    listen = ft.free_addr(host)
    start_ferry(ft.config([ft.service("pp", listen, [b],
                                      send_proxy=version)]))
    me = echo_once(listen, b"first bytes")
    ver, src, dst, data = h.wait(1)[0]
    assert ver == int(version[1])
    assert src == me  # the client's address and port, not ferry's
    assert dst == addr_tuple(listen)
    assert data == b"first bytes"  # the header, then the client's bytes


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_send_proxy_with_splice_sends_header_first(start_ferry, backends,
                                                   version):
    """relay.splice: always moves bytes through a pipe from the first one:
    the header still goes out first, and the payload arrives intact."""
    h = HeaderBackend()
    b = backends("hdr", handler=h)
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("pp", listen, [b],
                                      send_proxy=version)],
                          relay={"splice": "always"}))
    payload = bytes(range(256)) * 256  # 64 KiB
    with ft.connect(listen) as s:
        s.sendall(payload)
        got = ft.recv_exact(s, len(payload))
        me = hostport(s.getsockname())
    assert got == payload
    ver, src, _, data = h.wait(1)[0]
    assert (ver, src) == (int(version[1]), me)
    assert payload.startswith(data)


def test_health_checks_send_no_header(start_ferry, backends):
    """Active checks connect to the backend themselves, without a header
    (README: a backend that insists on one must let them through)."""
    first = []

    def record(backend, conn):
        first.append(conn.recv(4))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    b = backends("rec", handler=record)
    listen = ft.free_addr()
    start_ferry(ft.config([ft.service("pp", listen, [b], send_proxy="v2",
                                      health_check={"type": "http",
                                                    "interval": "100ms"})]))
    ft.wait_for(lambda: first, what="a health check")
    assert first[0] == b"GET "


def test_reload_turns_send_proxy_on(start_ferry, backends):
    """send_proxy is part of a service's definition: a reload that changes
    only it applies to the next connection."""
    first = []

    def record(backend, conn):
        first.append(ft.recv_exact(conn, 6))
        ft.read_until_eof(conn)

    def send(data):
        with ft.connect(listen) as s:
            s.sendall(data)
            ft.close_and_wait(s)
    b = backends("rec", handler=record)
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("pp", listen, [b])]))
    send(b"plain!")
    ft.wait_for(lambda: first, what="a first connection")
    assert first[0] == b"plain!"
    off = f.reload(ft.config([ft.service("pp", listen, [b],
                                         send_proxy="v1")]))
    f.wait_log(r"reload: applied", start=off)
    send(b"plain!")
    ft.wait_for(lambda: len(first) >= 2, what="a second connection")
    assert first[1] == b"PROXY "


# ---------------------------------------------------------------- accept_proxy


def proxy_pair(start_ferry, backends, accept_timeout="5s", log_level="info"):
    """ferry with accept_proxy and send_proxy v1 in front of a
    HeaderBackend, and an admin server. Returns (listen, admin, h, b, f)."""
    h = HeaderBackend()
    b = backends("hdr", handler=h)
    listen, admin = ft.free_addr(), ft.free_addr()
    cfg = ft.config([ft.service("edge", listen, [b], accept_proxy=True,
                                accept_proxy_timeout=accept_timeout,
                                send_proxy="v1")], log_level=log_level)
    f = start_ferry(at.with_admin(cfg, admin))
    return listen, admin, h, b, f


def headers_total(m, version):
    return at.sample(m, "ferry_service_proxy_headers_total", service="edge",
                     version=version)


def refused(m, reason):
    return at.sample(m, "ferry_service_proxy_headers_refused_total",
                     service="edge", reason=reason)


def test_accept_proxy_v1(start_ferry, backends):
    listen, admin, h, _, f = proxy_pair(start_ferry, backends,
                                        log_level="debug")
    client, vip = ("198.18.0.7", 40123), ("198.18.0.1", 443)
    echo_once(listen, b"after the header", prefix=v1(client, vip))
    ver, src, dst, data = h.wait(1)[0]
    # The header sent on names the client and address from the one read.
    assert (ver, src, dst) == (1, client, vip)
    assert data == b"after the header"
    scrape_when(admin, lambda m: headers_total(m, "v1") == 1,
                "one v1 header counted")
    # Logs name the client from the header.
    f.wait_log(r"conn \d+ 198\.18\.0\.7:40123 -> edge/")


def test_accept_proxy_v1_in_pieces(start_ferry, backends):
    """A header sent a byte at a time is still read whole, and not one
    byte of the client's is lost or taken for it."""
    listen, _, h, _, _ = proxy_pair(start_ferry, backends)
    client, vip = ("198.18.3.4", 1), ("198.18.0.1", 80)
    hdr = v1(client, vip)
    with ft.connect(listen) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(hdr)):
            s.send(hdr[i:i + 1])
        s.sendall(b"x")
        assert ft.recv_exact(s, 1) == b"x"
    assert h.wait(1)[0] == (1, client, vip, b"x")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_accept_proxy_v2_with_tlvs(start_ferry, backends, family):
    listen, admin, h, _, _ = proxy_pair(start_ferry, backends)
    if family == "ipv4":
        client, vip = ("198.18.0.9", 5555), ("198.18.0.1", 443)
    else:
        client, vip = ("2001:2::9", 5555), ("2001:2::1", 443)
    tlvs = (tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0x02, b"example.test")
            + tlv(0xee, bytes(300)))
    echo_once(listen, b"payload", prefix=v2(client, vip, tlvs))
    assert h.wait(1)[0] == (1, client, vip, b"payload")
    scrape_when(admin, lambda m: headers_total(m, "v2") == 1,
                "one v2 header counted")


def test_accept_proxy_local_keeps_the_peer(start_ferry, backends):
    """A v2 LOCAL header (the balancer's own connection, a health check)
    carries no client: the connection's own address stands."""
    listen, _, h, _, _ = proxy_pair(start_ferry, backends)
    local = V2_SIG + bytes([0x20, 0x00, 0, 0])
    me = echo_once(listen, b"hc", prefix=local)
    assert h.wait(1)[0] == (1, me, addr_tuple(listen), b"hc")


def test_missing_header_times_out(start_ferry, backends):
    listen, admin, h, b, _ = proxy_pair(start_ferry, backends,
                                        accept_timeout="300ms")
    with ft.connect(listen) as s:
        assert ft.closed_how(s) == "reset"
    scrape_when(admin, lambda m: refused(m, "timeout") == 1,
                "a refusal for timeout")
    assert b.accepted == 0  # no backend was ever dialled


@pytest.mark.parametrize("garbage", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(b"PROXY TCP4 198.18.0.1 198.18.0.2 65536 80\r\n",
                 id="bad_port"),
    pytest.param(V2_SIG + bytes([0x21, 0x11, 0, 15])
                 + bytes(12) + b"\x01\x00\x09", id="tlv_overrun"),
])
def test_invalid_header_is_refused(start_ferry, backends, garbage):
    listen, admin, _, b, f = proxy_pair(start_ferry, backends)
    with ft.connect(listen) as s:
        s.sendall(garbage)
        assert ft.closed_how(s) == "reset"
    m = scrape_when(admin, lambda m: refused(m, "invalid") == 1,
                    "a refusal for an invalid header")
    # Refused for what it is, not for the timeout (5 s) later.
    assert refused(m, "timeout") == 0
    assert b.accepted == 0
    if garbage.startswith(b"GET"):
        f.wait_log(r"service edge: PROXY header from 127\.0\.0\.1:\d+ "
                   r"refused \(invalid\): not a PROXY protocol header")


def test_series_only_for_accept_proxy(start_ferry, backends):
    b = backends("b")
    l1, l2, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    cfg = ft.config([ft.service("edge", l1, [b], accept_proxy=True),
                     ft.service("plain", l2, [b], send_proxy="v2")])
    start_ferry(at.with_admin(cfg, admin))
    m = at.scrape(admin)
    assert headers_total(m, "v1") == 0 and refused(m, "closed") == 0
    assert not [k for k in m if "proxy_headers" in k[0]
                and ("service", "plain") in k[1]]


def test_v2_header_size_limit(start_ferry, backends):
    """ferry takes a v2 header of up to 32 KiB (its relay buffer; the
    protocol allows 64 KiB): one just under is read, one over refused."""
    listen, admin, h, _, _ = proxy_pair(start_ferry, backends)
    client, vip = ("198.18.0.9", 5555), ("198.18.0.1", 443)
    echo_once(listen, b"big", prefix=v2(client, vip, tlv(0xee,
                                                          bytes(32000))))
    assert h.wait(1)[0] == (1, client, vip, b"big")
    with ft.connect(listen) as s:
        try:
            s.sendall(v2(client, vip, tlv(0xee, bytes(33000))) + b"x")
        except OSError:
            pass  # reset while sending: what this test expects
        try:
            assert ft.closed_how(s) in ("reset", "eof")
        except ConnectionError:
            pass
    m = scrape_when(admin, lambda m: refused(m, "invalid") == 1,
                    "a refusal for a header over 32 KiB")
    assert headers_total(m, "v2") == 1


def test_header_cut_short_is_counted(start_ferry, backends):
    listen, admin, _, b, _ = proxy_pair(start_ferry, backends)
    with ft.connect(listen) as s:
        s.sendall(b"PROXY TCP4 198.18.0.1 ")
        s.shutdown(socket.SHUT_WR)
        ft.closed_how(s)
    scrape_when(admin, lambda m: refused(m, "closed") == 1,
                "a refusal for a header cut short")
    assert b.accepted == 0


def test_chain_keeps_the_original_client(start_ferry, backends):
    """client -> ferry A (send_proxy: v2) -> ferry B (accept_proxy,
    send_proxy: v1) -> backend: the backend, and B's log, see the client
    itself, not ferry A."""
    h = HeaderBackend()
    b = backends("hdr", handler=h)
    la, lb = ft.free_addr(), ft.free_addr()
    start_ferry(ft.config([ft.service("front", la, [lb], send_proxy="v2")]),
                name="a")
    fb = start_ferry(ft.config([ft.service("back", lb, [b],
                                           accept_proxy=True,
                                           send_proxy="v1")],
                               log_level="debug"), name="b")
    me = echo_once(la, b"through two")
    assert h.wait(1)[0] == (1, me, addr_tuple(la), b"through two")
    fb.wait_log(r"conn \d+ %s:%d -> back/" % (me[0].replace(".", r"\."),
                                              me[1]))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("extra,message", [
    ("    send_proxy: v3\n", "send_proxy"),
    ("    accept_proxy: yes\n", "accept_proxy"),
    ("    accept_proxy_timeout: 0\n", "accept_proxy_timeout"),
    ("    accept_proxy_timeout: 10m\n", "accept_proxy_timeout"),
])
def test_bad_values_are_refused(tmp_path, extra, message):
    text = ("services:\n  - name: pp\n    listen: 127.0.0.1:18097\n" + extra
            + "    backends: [{address: 127.0.0.1:18096}]\n")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = ft.run_ferry(["check-config", str(path)])
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert message in out and ":4:" in out, out


def test_keys_are_per_service_only(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("defaults:\n  send_proxy: v1\nservices:\n  - name: pp\n"
                    "    listen: 127.0.0.1:18097\n"
                    "    backends: [{address: 127.0.0.1:18096}]\n")
    r = ft.run_ferry(["check-config", str(path)])
    assert r.returncode != 0
    assert "send_proxy" in r.stdout + r.stderr
