"""SNI routing (README: "SNI routing"): services naming servers share a
listen address; ferry reads the client's TLS ClientHello without
terminating TLS, picks the service by its server name (an exact name
before a wildcard of one label), and relays the untouched bytes; a hello
that names no service, names none, is malformed or late goes to the
address's default_service, or is closed and counted.

The ClientHellos are real ones, made by Python's ssl module (in memory,
with server_hostname); the backends are plain TCP servers that greet with
their name and record every byte they receive, so a test checks that a
backend got the exact hello. One ferry serves the whole module."""

import os
import re
import socket
import ssl
import time

import pytest

import admintest as at
import ferrytest as ft

HELLO_TIMEOUT = "400ms"


def client_hello(server_name):
    """The bytes of a ClientHello for <server_name> (None: no SNI), as
    Python's TLS client would send them first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_side=False,
                       server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = out.read()
    assert data[0] == 22, data[:8]
    return data


def record_all(backend, conn):
    """Greet with the backend's name, then record every byte until the
    client's end (appended to backend.records at EOF)."""
    conn.sendall(backend.name.encode() + b"\n")
    got = bytearray()
    for _ in range(1 << 20):
        data = conn.recv(1 << 16)
        if not data:
            break
        got += data
    with backend.lock:
        backend.records.append(bytes(got))


class Sni:
    """The module's ferry, its backends and addresses."""

    def __init__(self, tmp, ferry_bin):
        self.be = {n: ft.Backend(n, handler=record_all)
                   for n in ("a", "wild", "exact", "dflt", "only", "pa",
                             "denied", "pdflt")}
        self.shared = ft.free_addr()   # a, wild, exact; default dflt
        self.alone = ft.free_addr()    # only, no default
        self.proxied = ft.free_addr()  # pa (send_proxy), default pdflt
        self.admin = ft.free_addr()
        svcs = [
            ft.service("a", self.shared, [self.be["a"]], sni=["a.example"]),
            ft.service("wild", self.shared, [self.be["wild"]],
                       sni=["*.w.example"]),
            ft.service("exact", self.shared, [self.be["exact"]],
                       sni=["x.w.example", "other.example"]),
            ft.service("dflt", self.shared, [self.be["dflt"]]),
            ft.service("denied", self.shared, [self.be["denied"]],
                       sni=["deny.example"], deny=["127.0.0.0/8"]),
            ft.service("only", self.alone, [self.be["only"]],
                       sni=["only.example"]),
            ft.service("pa", self.proxied, [self.be["pa"]],
                       sni=["p.example"], accept_proxy=True,
                       send_proxy="v1"),
            ft.service("pdflt", self.proxied, [self.be["pdflt"]],
                       accept_proxy=True),
        ]
        listeners = [
            {"listen": self.shared, "default_service": "dflt",
             "client_hello_timeout": HELLO_TIMEOUT},
            {"listen": self.alone, "client_hello_timeout": HELLO_TIMEOUT},
            {"listen": self.proxied, "default_service": "pdflt",
             "client_hello_timeout": HELLO_TIMEOUT},
        ]
        text = (ft.config(svcs).rstrip("\n") + "\n"
                + ft.to_yaml({"listeners": listeners}) + "\n")
        text = at.with_admin(text, self.admin)
        self.access = os.path.join(str(tmp), "access.log")
        text += ft.to_yaml({"access_log": {
            "enabled": True, "target": "file", "path": self.access}}) + "\n"
        self.ferry = ft.Ferry(tmp, text, binary=ferry_bin)
        self.ferry.start()

    def stop(self):
        rc = self.ferry.stop()
        for b in self.be.values():
            b.stop()
        return rc


@pytest.fixture(scope="module")
def sni(tmp_path_factory, ferry_bin):
    s = Sni(tmp_path_factory.mktemp("sni"), ferry_bin)
    try:
        yield s
    finally:
        rc = s.stop()
    assert rc == 0, s.ferry.log_text()


@pytest.fixture(autouse=True)
def attach_log(request, sni):
    """A failing test gets the module ferry's log (conftest's hook)."""
    request.node.ferry_procs = [sni.ferry]


def send_and_see(addr, data, finish=True):
    """Connect, send <data>, read the backend's greeting. With <finish>,
    end the sending side. Returns (backend name, socket)."""
    s = ft.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(data)
    name = ft.read_line(s).strip()
    if finish:
        s.shutdown(socket.SHUT_WR)
    return name, s


def got(backend, data):
    """Wait until <backend> recorded exactly <data> on one connection."""
    def check():
        with backend.lock:
            return data in backend.records
    ft.wait_for(check, what=f"{backend.name} to receive {len(data)} bytes")


def hellos(m, listen, reason, outcome):
    return at.sample(m, "ferry_sni_client_hellos_total", listen=listen,
                     reason=reason, outcome=outcome)


def scrape_when(sni, pred, what):
    def check():
        m = at.scrape(sni.admin)
        return m if pred(m) else None
    return ft.wait_for(check, what=what)


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("server_name,service", [
    ("a.example", "a"),
    ("A.Example", "a"),           # names compare in lower case
    ("y.w.example", "wild"),      # one label under the wildcard
    ("x.w.example", "exact"),     # an exact name beats the wildcard
    ("other.example", "exact"),
    ("b.y.w.example", "dflt"),    # two labels: the wildcard does not match
    ("w.example", "dflt"),        # nor the bare suffix
    ("nobody.example", "dflt"),   # no match: the default
    (None, "dflt"),               # no server name: the default
])
def test_routes_by_server_name_and_relays_the_exact_hello(sni, server_name,
                                                         service):
    hello = client_hello(server_name)
    name, s = send_and_see(sni.shared, hello)
    with s:
        assert name == service
        got(sni.be[service], hello)


def test_hello_split_in_two_writes(sni):
    """The hello in two TCP writes, the second sent only once ferry has
    read the first: routed by the whole, and relayed whole."""
    hello = client_hello("a.example")
    s = ft.connect(sni.shared)
    with s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(hello[:20])
        wait_read_by_ferry(s)
        s.sendall(hello[20:])
        assert ft.read_line(s).strip() == "a"
        s.shutdown(socket.SHUT_WR)
        got(sni.be["a"], hello)


def test_slow_client_goes_to_default_with_its_bytes(sni):
    """Half a hello, then nothing past client_hello_timeout: the default
    service gets the connection, the half first, then the rest."""
    hello = client_hello("a.example")
    before = at.scrape(sni.admin)
    s = ft.connect(sni.shared)
    with s:
        t0 = time.monotonic()
        s.sendall(hello[:30])
        assert ft.read_line(s).strip() == "dflt"
        assert time.monotonic() - t0 >= 0.3  # not before the deadline
        s.sendall(hello[30:])
        s.shutdown(socket.SHUT_WR)
        got(sni.be["dflt"], hello)
    scrape_when(sni, lambda m: hellos(m, sni.shared, "timeout", "default")
                == hellos(before, sni.shared, "timeout", "default") + 1,
                "a timeout routed to the default")


def test_garbage_goes_to_default_untouched(sni):
    data = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    name, s = send_and_see(sni.shared, data)
    with s:
        assert name == "dflt"
        got(sni.be["dflt"], data)


def test_accept_proxy_header_first_then_hello(sni):
    """With accept_proxy the PROXY header comes first; the service's
    send_proxy names the client the header named, then the exact hello."""
    hello = client_hello("p.example")
    hdr = b"PROXY TCP4 198.18.0.7 198.18.0.8 40000 443\r\n"
    name, s = send_and_see(sni.proxied, hdr + hello)
    with s:
        assert name == "pa"
        got(sni.be["pa"], hdr + hello)


def test_chosen_service_rules_apply(sni):
    """The service a name picks serves the client as its own: its source
    rules refuse a denied client, counted under its name."""
    before = at.scrape(sni.admin)
    s = ft.connect(sni.shared)
    with s:
        s.sendall(client_hello("deny.example"))
        assert ft.closed_how(s) == "reset"
    scrape_when(sni, lambda m: at.sample(
        m, "ferry_service_source_refused_total", service="denied",
        reason="deny") == 1, "the refusal counted for service denied")
    assert sni.be["denied"].accepted == 0


# ---------------------------------------------------------------- refused


def test_closed_before_whole_hello_not_sent_to_default(sni):
    """A client that ends before its hello is whole is closed, even where
    a default_service exists, and counted."""
    before = at.scrape(sni.admin)
    n = sni.be["dflt"].accepted
    s = ft.connect(sni.shared)
    with s:
        s.sendall(client_hello("a.example")[:40])
        s.shutdown(socket.SHUT_WR)
        assert ft.closed_how(s) == "eof"
    scrape_when(sni, lambda m: hellos(m, sni.shared, "closed", "refused")
                == hellos(before, sni.shared, "closed", "refused") + 1,
                "a client closed early counted")
    assert sni.be["dflt"].accepted == n


def test_no_match_without_default_is_closed_and_counted(sni):
    before = at.scrape(sni.admin)
    for data in [client_hello("zzz.example"), client_hello(None),
                 b"\x16\x03\x01\x00\x00", b"GET / HTTP/1.1\r\n\r\n"]:
        s = ft.connect(sni.alone)
        with s:
            s.sendall(data)
            assert ft.closed_how(s) == "reset"
    m = scrape_when(
        sni, lambda m: hellos(m, sni.alone, "malformed", "refused")
        == hellos(before, sni.alone, "malformed", "refused") + 2
        and hellos(m, sni.alone, "no_sni", "refused")
        == hellos(before, sni.alone, "no_sni", "refused") + 1,
        "refusals counted")
    assert (hellos(m, sni.alone, "no_match", "refused")
            == hellos(before, sni.alone, "no_match", "refused") + 1)
    # An access log line each, without a service. Each worker's lines
    # reach the file on their own: every one is waited for.
    for cause in ("sni_no_match", "sni_no_sni", "sni_malformed"):
        ft.wait_for(lambda: access_line(sni, rf"service=- .*cause={cause}"),
                    what="an access log line for the %s refusal" % cause)
    # Logged, at most one line a second: when the test before had a
    # refusal logged within the second, these were not, and one more
    # refusal a second later is (a few tries, each bounded).
    pattern = (r"client 127\.0\.0\.1:\d+ refused: ClientHello "
               r"(no_match|no_sni|malformed)")
    for attempt in range(4):
        try:
            sni.ferry.wait_log(pattern, timeout=1.5)
            break
        except ft.Timeout:
            if attempt == 3:
                raise
            with ft.connect(sni.alone) as s:
                s.sendall(client_hello("zzz.example"))
                assert ft.closed_how(s) == "reset"
    assert sni.be["only"].accepted == 0


def test_silent_client_closed_at_the_deadline(sni):
    before = at.scrape(sni.admin)
    s = ft.connect(sni.alone)
    with s:
        t0 = time.monotonic()
        assert ft.closed_how(s) == "reset"
        assert time.monotonic() - t0 >= 0.3
    scrape_when(sni, lambda m: hellos(m, sni.alone, "timeout", "refused")
                == hellos(before, sni.alone, "timeout", "refused") + 1,
                "a timeout counted")


def test_proxy_header_and_hello_share_the_deadline(sni):
    """With accept_proxy, the header and the hello must both arrive within
    client_hello_timeout: a whole header and no hello goes to the default
    at the deadline; half a header is closed there."""
    before = at.scrape(sni.admin)
    s = ft.connect(sni.proxied)
    with s:
        t0 = time.monotonic()
        s.sendall(b"PROXY TCP4 198.18.0.7 198.18.0.8 40000 443\r\n")
        assert ft.read_line(s).strip() == "pdflt"
        assert time.monotonic() - t0 >= 0.3
    s = ft.connect(sni.proxied)
    with s:
        t0 = time.monotonic()
        s.sendall(b"PROXY TCP4 198.18.0.7 ")
        assert ft.closed_how(s) == "reset"
        # Not accept_proxy_timeout (5 s by default).
        assert 0.3 <= time.monotonic() - t0 < 4
    scrape_when(sni, lambda m: hellos(m, sni.proxied, "timeout", "refused")
                == hellos(before, sni.proxied, "timeout", "refused") + 1
                and hellos(m, sni.proxied, "timeout", "default")
                == hellos(before, sni.proxied, "timeout", "default") + 1,
                "both timeouts counted")


def test_bad_proxy_header_refused(sni):
    """An invalid PROXY header is refused, though the address has a
    default_service."""
    before = at.scrape(sni.admin)
    s = ft.connect(sni.proxied)
    with s:
        s.sendall(b"PROXY NONSENSE\r\n" + client_hello("p.example"))
        assert ft.closed_how(s) == "reset"
    scrape_when(sni, lambda m: hellos(m, sni.proxied, "proxy_header",
                                      "refused")
                == hellos(before, sni.proxied, "proxy_header", "refused") + 1,
                "a bad PROXY header counted")


# ---------------------------------------------------------------- ops


def test_metrics_and_status(sni):
    """Per service: clients routed by name and as the default; /status
    lists a service's server names."""
    hello = client_hello("only-here.w.example")
    name, s = send_and_see(sni.shared, hello)
    s.close()
    assert name == "wild"
    name, s = send_and_see(sni.shared, client_hello("nobody.example"))
    s.close()
    assert name == "dflt"
    # The access log names the service a client went to, and counts the
    # hello among the bytes it sent.
    ft.wait_for(lambda: access_line(
        sni, rf"service=wild .*bytes_up={len(hello)} "),
                what="an access log line for service wild")
    m = scrape_when(
        sni, lambda m: at.sample(m, "ferry_service_sni_routed_total",
                                 service="wild", via="name") >= 1
        and at.sample(m, "ferry_service_sni_routed_total", service="dflt",
                      via="default") >= 1, "routed counters")
    assert hellos(m, sni.shared, "name", "routed") >= 1
    assert hellos(m, sni.shared, "no_match", "default") >= 1
    st = at.get_json(sni.admin)
    svcs = {x["name"]: x for x in st["services"]}
    assert svcs["exact"]["sni"] == ["x.w.example", "other.example"]
    assert svcs["wild"]["sni"] == ["*.w.example"]
    assert "sni" not in svcs["dflt"]


# ---------------------------------------------------------------- helpers


def access_line(sni, pattern):
    try:
        with open(sni.access) as f:
            return re.search(pattern, f.read())
    except FileNotFoundError:
        return None


def wait_read_by_ferry(s):
    """Wait until ferry has taken every byte sent on <s> off its socket:
    the receive queue of ferry's end (local = <s>'s peer, remote = <s>)
    in /proc/net/tcp is empty."""
    def hexaddr(ip, port):
        # The kernel prints the address's 4 bytes as one native integer.
        n = int.from_bytes(socket.inet_aton(ip), "little")
        return f"{n:08X}:{port:04X}"
    want = (hexaddr(*s.getpeername()[:2]), hexaddr(*s.getsockname()[:2]))

    def drained():
        with open("/proc/net/tcp") as f:
            for ln in f.readlines()[1:]:
                fields = ln.split()
                if (fields[1], fields[2]) == want:
                    return int(fields[4].split(":")[1], 16) == 0
        return False
    ft.wait_for(drained, what="ferry to read the first part")


# ---------------------------------------------------------------- reload


def test_reload_moves_a_name(start_ferry, backends):
    """A reload applies changed sni: lists and listeners: to the next
    clients: a name moves from one service to another, and a default
    appears."""
    one, two = (backends(n, handler=record_all) for n in ("one", "two"))
    listen = ft.free_addr()

    def cfg(one_names, two_names, default=None):
        svcs = [ft.service("one", listen, [one], sni=one_names),
                ft.service("two", listen, [two], sni=two_names)]
        entry = {"listen": listen}
        if default:
            entry["default_service"] = default
        return (ft.config(svcs).rstrip("\n") + "\n"
                + ft.to_yaml({"listeners": [entry]}) + "\n")

    f = start_ferry(cfg(["m.example", "n.example"], ["o.example"]))
    name, s = send_and_see(listen, client_hello("m.example"))
    s.close()
    assert name == "one"
    s = ft.connect(listen)
    with s:
        s.sendall(client_hello("z.example"))
        assert ft.closed_how(s) == "reset"
    off = f.reload(cfg(["n.example"], ["o.example", "m.example"], "one"))
    f.wait_log(r"reload: applied", off)
    name, s = send_and_see(listen, client_hello("m.example"))
    s.close()
    assert name == "two"
    name, s = send_and_see(listen, client_hello("z.example"))
    s.close()
    assert name == "one"
