"""UDP services (README: "UDP services"), over real sockets on loopback.

A flow (client address and port) keeps the backend its first datagram
picked; it ends after udp_idle_timeout, or after udp_responses replies;
max_flows bounds the flows; replies come from the address the client sent
to, also on a wildcard listener; a reload and a drain leave an open flow
on its backend; a backend whose port is closed (ICMP port unreachable) is
avoided. The backends answer "NAME:PAYLOAD" to every datagram."""

import json
import signal
import socket
import threading
from collections import Counter

import pytest

import admintest as at
import ferrytest as ft


class UdpBackend:
    """A UDP server on 127.0.0.1 answering each datagram with
    b"NAME:" + the datagram, from a thread; counts what it got."""

    def __init__(self, name, tcp=False):
        self.name = name
        # With <tcp>, a TCP listener on the same port too, as a DNS server
        # has: what a TCP health check finds. The port is the UDP one the
        # kernel gave; another test may hold it for TCP: try another.
        self.tcp = None
        for _ in range(50):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            if not tcp:
                break
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.sock.getsockname()[1]))
                break
            except OSError:
                self.tcp.close()
                self.sock.close()
                self.tcp = None
        else:
            raise OSError("no port free for both UDP and TCP")
        if self.tcp is not None:
            self.tcp.listen(512)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.got = 0
        self.peers = set()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.got += 1
            self.peers.add(peer)
            self.sock.sendto(self.name.encode() + b":" + data, peer)

    def close(self):
        self._stop = True
        self._t.join(5)
        self.sock.close()
        if self.tcp is not None:
            self.tcp.close()


@pytest.fixture
def udp_backends():
    made = []

    def make(name, tcp=False):
        b = UdpBackend(name, tcp)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def closed_udp_port():
    """A loopback UDP port nobody listens on (bound, then closed): a
    datagram to it gets an ICMP port unreachable."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return "127.0.0.1:%d" % port


def udp_bound(pid, port):
    """True if process <pid> holds a UDP socket bound to <port>."""
    inodes = set()
    for name in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return ft.holds_socket(pid, inodes)


def start(start_ferry, services, admin, extra="", **cfg):
    f = start_ferry(extra + at.with_admin(ft.config(services, **cfg), admin),
                    wait=False)
    f.wait_ready([admin])
    for s in services:
        if s.get("protocol") == "udp":
            for a in s["listen"]:
                port = ft.parse_addr(a)[2]
                ft.wait_for(lambda: udp_bound(f.pid, port),
                            what=f"ferry bound to udp {a}")
    return f


class Client:
    """A UDP client socket with its own source port: one flow."""

    def __init__(self, src="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in src else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((src, 0))
        self.sock.settimeout(ft.DEADLINE)

    def ask(self, addr, payload=b"q"):
        """Send <payload> to <addr>; the backend's name and the reply's
        source address."""
        _, host, port = ft.parse_addr(addr)
        self.sock.sendto(payload, (host, port))
        data, peer = self.sock.recvfrom(65535)
        name, _, echo = data.partition(b":")
        assert echo == payload, data
        return name.decode(), peer[:2]

    def nothing_waiting(self):
        self.sock.setblocking(False)
        try:
            self.sock.recvfrom(65535)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(ft.DEADLINE)
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def clients():
    made = []

    def make(src="127.0.0.1"):
        c = Client(src)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def udp_service(name, listen, backends, **opts):
    return ft.service(name, listen, [b.addr if hasattr(b, "addr") else b
                                     for b in backends],
                      protocol="udp", **opts)


def access_log(tmp_path):
    """An "access_log:" section writing JSON lines to a file, and a
    function waiting for <n> lines of it."""
    log = tmp_path / "access.log"
    extra = ft.to_yaml({"access_log": {"enabled": True, "target": "file",
                                       "format": "json",
                                       "path": str(log)}}) + "\n"

    def lines(n):
        def got():
            if not log.exists():
                return None
            ls = [json.loads(x) for x in log.read_text().splitlines()]
            return ls if len(ls) >= n else None
        return ft.wait_for(got, what=f"{n} access log lines")
    return extra, lines


def metric(admin, name, service, **labels):
    return at.sample(at.scrape(admin), name, service=service, **labels)


def wait_metric(admin, name, service, want, **labels):
    ft.wait_for(lambda: metric(admin, name, service, **labels) == want,
                what=f"{name}{labels} of {service} = {want}")


def test_flows_pinned_balanced_and_beside_tcp(start_ferry, udp_backends,
                                              backends, clients):
    """Each client's datagrams all go to one backend; new clients are
    balanced across both; a TCP service on the same address and port is
    served beside it."""
    b1, b2 = udp_backends("u1"), udp_backends("u2")
    tcp = backends("t1")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start(start_ferry, [udp_service("dns", listen, [b1, b2]),
                            ft.service("web", listen, [tcp])], admin)
    f.wait_ready([listen])
    seen = Counter()
    for _ in range(6):
        c = clients()
        names = {c.ask(listen, b"x%d" % i)[0] for i in range(4)}
        assert len(names) == 1, names
        seen[names.pop()] += 1
    assert seen == Counter({"u1": 3, "u2": 3})
    assert ft.hello(listen) == "t1"
    m = at.scrape(admin)
    assert at.sample(m, "ferry_service_udp_flows_total", service="dns") == 6
    assert at.sample(m, "ferry_service_udp_flows_active", service="dns") == 6
    assert at.sample(m, "ferry_service_udp_datagrams_total", service="dns",
                     direction="in") == 24
    assert at.sample(m, "ferry_service_udp_datagrams_total", service="dns",
                     direction="out") == 24
    assert at.sample(m, "ferry_service_bytes_total", service="dns",
                     direction="in") == 24 * 2
    st = at.get_json(admin)
    dns = next(s for s in st["services"] if s["name"] == "dns")
    assert dns["protocol"] == "udp"
    assert dns["counters"]["udp"]["flows_active"] == 6
    # Each flow has a socket of its own towards its backend.
    assert len(b1.peers) == 3 and len(b2.peers) == 3


def test_idle_timeout_ends_flow(start_ferry, udp_backends, clients,
                                tmp_path):
    b1, b2 = udp_backends("u1"), udp_backends("u2")
    listen, admin = ft.free_addr(), ft.free_addr()
    extra, lines = access_log(tmp_path)
    start(start_ferry, [udp_service("dns", listen, [b1, b2],
                                    udp_idle_timeout="300ms")], admin, extra)
    c = clients()
    assert c.ask(listen)[0] == "u1"
    assert metric(admin, "ferry_service_udp_flows_active", "dns") == 1
    wait_metric(admin, "ferry_service_udp_flows_active", "dns", 0)
    (rec,) = lines(1)
    assert rec["cause"] == "idle_timeout" and rec["backend"] == b1.addr
    assert rec["duration_ms"] >= 300
    # The same client again: a new flow, the next backend in turn.
    assert c.ask(listen)[0] == "u2"
    assert metric(admin, "ferry_service_udp_flows_total", "dns") == 2


def test_udp_responses_one_ends_flow_and_logs(start_ferry, udp_backends,
                                              clients, tmp_path):
    b1, b2 = udp_backends("u1"), udp_backends("u2")
    listen, admin = ft.free_addr(), ft.free_addr()
    extra, lines = access_log(tmp_path)
    start(start_ferry, [udp_service("dns", listen, [b1, b2],
                                    udp_responses=1)], admin, extra)
    c = clients()
    got = [c.ask(listen, b"q%d" % i)[0] for i in range(4)]
    # Every query is a flow of its own: round robin across the backends.
    assert got == ["u1", "u2", "u1", "u2"]
    wait_metric(admin, "ferry_service_udp_flows_active", "dns", 0)
    assert metric(admin, "ferry_service_udp_flows_total", "dns") == 4
    recs = lines(4)
    assert len(recs) == 4
    port = c.sock.getsockname()[1]
    for r in recs:
        assert r["service"] == "dns"
        assert r["cause"] == "server_close"
        assert r["client"].endswith(":%d" % port)
        assert r["bytes_up"] == 2 and r["bytes_down"] == 5
    assert sorted(r["backend"] for r in recs) == sorted(
        [b1.addr, b1.addr, b2.addr, b2.addr])


def test_max_flows_drops_and_counts(start_ferry, udp_backends, clients):
    b1 = udp_backends("u1")
    listen, admin = ft.free_addr(), ft.free_addr()
    start(start_ferry, [udp_service("dns", listen, [b1], max_flows=2)],
          admin)
    c1, c2, c3 = clients(), clients(), clients()
    assert c1.ask(listen)[0] == "u1"
    assert c2.ask(listen)[0] == "u1"
    _, host, port = ft.parse_addr(listen)
    c3.sock.sendto(b"q", (host, port))
    wait_metric(admin, "ferry_service_udp_dropped_total", "dns", 1,
                reason="max_flows")
    assert c3.nothing_waiting()
    # The open flows still work.
    assert c1.ask(listen)[0] == "u1"
    assert metric(admin, "ferry_service_udp_flows_active", "dns") == 2


def test_wildcard_replies_from_the_address_asked(start_ferry, udp_backends,
                                                 clients):
    b1 = udp_backends("u1")
    port = ft.parse_addr(ft.free_addr())[2]
    admin = ft.free_addr()
    start(start_ferry, [udp_service("dns", "0.0.0.0:%d" % port, [b1])],
          admin)
    for dst in ("127.0.0.2", "127.0.0.3", "127.0.0.1"):
        c = clients()
        name, peer = c.ask("%s:%d" % (dst, port))
        assert name == "u1"
        assert peer == (dst, port)
    # One client, two destinations: two flows.
    c = clients()
    assert c.ask("127.0.0.2:%d" % port)[1] == ("127.0.0.2", port)
    assert c.ask("127.0.0.3:%d" % port)[1] == ("127.0.0.3", port)


def test_reload_keeps_flow(start_ferry, udp_backends, clients):
    b1, b2 = udp_backends("u1"), udp_backends("u2")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start(start_ferry, [udp_service("dns", listen, [b1, b2])], admin)
    c = clients()
    assert c.ask(listen)[0] == "u1"
    # The service changes: u1 takes no new flow. The open flow keeps it.
    cfg = at.with_admin(ft.config([udp_service(
        "dns", listen, [{"address": b1.addr, "weight": 0},
                        {"address": b2.addr}], udp_idle_timeout="20s")]),
        admin)
    off = f.reload(cfg)
    f.wait_log(r"reload: applied .*generation 2", start=off)
    assert all(c.ask(listen, b"r%d" % i)[0] == "u1" for i in range(3))
    assert clients().ask(listen)[0] == "u2"
    assert metric(admin, "ferry_service_udp_flows_total", "dns") == 2


def test_drain_keeps_flow(start_ferry, udp_backends, clients):
    b1, b2 = udp_backends("u1"), udp_backends("u2")
    listen, admin = ft.free_addr(), ft.free_addr()
    start(start_ferry, [udp_service("dns", listen, [b1, b2])], admin)
    c = clients()
    assert c.ask(listen)[0] == "u1"
    assert at.http(admin, "POST", "/backends/dns/%s/drain" % b1.addr)[0] \
        == 200
    assert all(c.ask(listen, b"d%d" % i)[0] == "u1" for i in range(3))
    assert {clients().ask(listen)[0] for _ in range(4)} == {"u2"}


def test_closed_backend_port_is_avoided(start_ferry, udp_backends, clients,
                                       tmp_path):
    dead = closed_udp_port()
    live = udp_backends("live")
    listen, admin = ft.free_addr(), ft.free_addr()
    extra, lines = access_log(tmp_path)
    start(start_ferry, [udp_service("dns", listen, [dead, live])], admin,
          extra)
    _, host, port = ft.parse_addr(listen)
    # The first flow goes to the dead port: its datagram is lost, and the
    # ICMP that comes back ends the flow and puts the backend in back-off.
    c = clients()
    c.sock.sendto(b"q", (host, port))
    wait_metric(admin, "ferry_service_udp_dropped_total", "dns", 1,
                reason="refused")
    wait_metric(admin, "ferry_service_udp_flows_active", "dns", 0)
    (rec,) = lines(1)
    assert rec["cause"] == "connect_failure" and rec["backend"] == dead
    assert metric(admin, "ferry_backend_connect_failures_total", "dns",
                  backend=dead, address=dead, reason="refused") == 1
    # The client tries again: a new flow, to the live backend; and so
    # every new client while the dead one is in back-off.
    assert c.ask(listen)[0] == "live"
    assert {clients().ask(listen)[0] for _ in range(3)} == {"live"}


def test_wildcard_ipv6(start_ferry, udp_backends, clients):
    if not ft.have_ipv6():
        pytest.skip("no IPv6 loopback")
    b1 = udp_backends("u1")
    port = ft.parse_addr(ft.free_addr())[2]
    admin = ft.free_addr()
    start(start_ferry, [udp_service("dns", "[::]:%d" % port, [b1])], admin)
    assert clients("::1").ask("[::1]:%d" % port) == ("u1", ("::1", port))


def test_tcp_health_check_of_udp_backends(start_ferry, udp_backends,
                                          clients):
    """type: tcp checks the backend's port over TCP: u2 serves no TCP, is
    found down, and takes no new flow."""
    b1, b2 = udp_backends("u1", tcp=True), udp_backends("u2")
    listen, admin = ft.free_addr(), ft.free_addr()
    start(start_ferry, [udp_service(
        "dns", listen, [b1, b2],
        health_check={"type": "tcp", "interval": "50ms", "timeout": "1s",
                      "rise": 1, "fall": 1})], admin)
    ft.wait_for(lambda: at.backend_state(admin, "dns", b2.addr)["state"]
                == "down", what="u2 down")
    assert at.backend_state(admin, "dns", b1.addr)["state"] == "up"
    assert {clients().ask(listen)[0] for _ in range(4)} == {"u1"}


def test_allow_deny(start_ferry, udp_backends, clients):
    b1 = udp_backends("u1")
    listen, admin = ft.free_addr(), ft.free_addr()
    start(start_ferry, [udp_service("dns", listen, [b1],
                                    deny=["127.0.0.2/32"])], admin)
    c = clients("127.0.0.2")
    _, host, port = ft.parse_addr(listen)
    c.sock.sendto(b"q", (host, port))
    ft.wait_for(lambda: metric(admin, "ferry_service_source_refused_total",
                               "dns", reason="deny") == 1,
                what="refused by deny")
    assert c.nothing_waiting()
    assert metric(admin, "ferry_service_udp_flows_total", "dns") == 0
    assert clients("127.0.0.1").ask(listen)[0] == "u1"


def test_reload_refused_when_udp_port_is_taken(start_ferry, udp_backends,
                                               clients):
    """A reload that adds a UDP frontend another socket holds (here one
    with SO_REUSEPORT, which a careless bind would share) is rejected as
    a whole, as for TCP; the running services keep serving."""
    b1 = udp_backends("u1")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start(start_ferry, [udp_service("dns", listen, [b1])], admin)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        taken = "127.0.0.1:%d" % other.getsockname()[1]
        off = f.reload(at.with_admin(ft.config([
            udp_service("dns", listen, [b1]),
            udp_service("new", taken, [b1])]), admin))
        m = f.wait_log(r"reload: rejected.*", start=off)
        assert "udp " + taken in m.group(0), m.group(0)
    assert clients().ask(listen)[0] == "u1"
    assert "new" not in [s["name"] for s in at.get_json(admin)["services"]]


def test_sigterm_drain(start_ferry, udp_backends, backends, clients):
    """SIGTERM: UDP services keep serving while TCP connections drain,
    and UDP flows hold no drain: ferry exits with the last TCP
    connection, its open flows with it."""
    u, t = udp_backends("u1"), backends("t1")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start(start_ferry, [udp_service("dns", listen, [u]),
                            ft.service("web", listen, [t])], admin,
              drain_timeout="60s")
    c = clients()
    assert c.ask(listen)[0] == "u1"
    held = ft.connect(listen)
    try:
        assert ft.read_line(held) == "t1"
        f.signal(signal.SIGTERM)
        ft.wait_for(lambda: ft.is_refused(listen), what="TCP listener closed")
        # The open flow, and a new one, are served during the drain.
        assert c.ask(listen, b"again")[0] == "u1"
        assert clients().ask(listen)[0] == "u1"
        assert f.alive()
    finally:
        ft.close_and_wait(held)
    # Well before drain_timeout (60 s): the deadline is 15 s.
    assert f.wait_exit() == 0


def test_takeover_with_udp_services(start_ferry, udp_backends, backends,
                                    clients, tmp_path):
    """An upgrade (--takeover) with a UDP service: the new process opens
    the UDP frontend beside the old one's (both SO_REUSEPORT) instead of
    refusing it as taken, and serves it once the old one has gone."""
    u, t = udp_backends("u1"), backends("t1")
    listen = ft.free_addr()
    sock = str(tmp_path / "takeover.sock")
    text = ft.config([udp_service("dns", listen, [u]),
                      ft.service("web", listen, [t])], drain_timeout="10s")
    old = start_ferry(text, args=["--takeover-socket", sock], name="old",
                      wait=False)
    port = ft.parse_addr(listen)[2]
    ft.wait_for(lambda: udp_bound(old.pid, port), what="old bound")
    assert clients().ask(listen)[0] == "u1"
    new = start_ferry(text, args=["--takeover-socket", sock, "--takeover"],
                      name="new", wait=False)
    new.wait_log(r"previous ferry released its addresses")
    assert old.wait_exit() == 0
    assert new.alive()
    assert clients().ask(listen)[0] == "u1"
    assert ft.hello(listen) == "t1"
