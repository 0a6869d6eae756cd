"""End to end: ferry as the node proxy of a two-node cluster with the
kernel dataplane (node.dataplane: nftables, the default), against the
simulated API server.

The cluster is the one of test_minicluster.py (network namespaces and
veth pairs in 198.18.0.0/15, tests/lib/minicluster.py); here each node's
ferry programs table inet ferry in its node's namespace and Service
traffic never passes through ferry's process. Pods run a small server of
this file (a thread inside the pod's namespace) that answers with its
name and the address the connection or datagram came from, so that tests
can see which pod answered and whose address it saw:

    TCP 8080: "who\\n" -> "NAME PEER_IP\\n", then close;
              "echo\\n" -> "NAME PEER_IP\\n", then echo until EOF;
              "GET ..." -> an HTTP 200 (503 while the test says the pod
              is unhealthy), for ferry's active health checks
    UDP 5353: any datagram -> "NAME PEER_IP"

The scenarios run in order on one cluster; each is its own test function
so a failure names the story it breaks.
"""

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import ferrytest as ft  # noqa: E402
import minicluster  # noqa: E402
import test_minicluster as mc  # noqa: E402
from test_minicluster import NODE_IP, dl, http_get, port, svc_obj  # noqa: E402


def _why_skip():
    why = minicluster.missing()
    if why:
        return why
    r = subprocess.run(["nft", "--version"], capture_output=True)
    if r.returncode != 0:
        return "needs the nft command (nftables)"
    return None


SKIP = _why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

CLIENT_IP = {"node1": "198.18.1.200", "node2": "198.18.2.200"}
OUT_IP = "198.18.0.100"
EDGE_IP = "198.18.0.50"
NODE_EXTRA = ("  cluster_cidrs: [198.18.1.0/24, 198.18.2.0/24]\n"
              "  service_cidrs: [198.18.128.0/17]\n")


# ---- the pods' server ----------------------------------------------------------

class PodServer:
    """TCP 8080 and UDP 5353 inside a pod's namespace, on a thread."""

    def __init__(self, netns, name):
        self.name = name
        self.unhealthy = False
        self.stop_ev = threading.Event()
        self.socks = []
        ready = threading.Event()
        self.err = None
        self.th = threading.Thread(target=self._run, args=(netns, ready),
                                   daemon=True)
        self.th.start()
        if not ready.wait(dl(5)) or self.err:
            raise RuntimeError("pod server %s: %s" % (name, self.err))

    def _run(self, netns, ready):
        try:
            mc.netns_enter(netns)
            tcp = socket.socket()
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("0.0.0.0", 8080))
            tcp.listen(128)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("0.0.0.0", 5353))
            self.socks = [tcp, udp]
        except OSError as e:
            self.err = str(e)
            ready.set()
            return
        ready.set()
        sel = selectors.DefaultSelector()
        sel.register(tcp, selectors.EVENT_READ)
        sel.register(udp, selectors.EVENT_READ)
        end = time.monotonic() + 900
        while not self.stop_ev.is_set() and time.monotonic() < end:
            for key, _ in sel.select(0.1):
                try:
                    if key.fileobj is tcp:
                        c, peer = tcp.accept()
                        threading.Thread(target=self._conn, args=(c, peer),
                                         daemon=True).start()
                    else:
                        data, peer = udp.recvfrom(2048)
                        udp.sendto(("%s %s" % (self.name, peer[0])).encode(),
                                   peer)
                except OSError:
                    pass
        sel.close()

    def _conn(self, c, peer):
        with c:
            c.settimeout(120)
            try:
                line = b""
                while not line.endswith(b"\n") and len(line) < 64:
                    b = c.recv(1)
                    if not b:
                        return
                    line += b
                if line.startswith(b"GET "):
                    c.sendall(b"HTTP/1.1 %s\r\nContent-Length: 0\r\n"
                              b"Connection: close\r\n\r\n"
                              % (b"503 Unavailable" if self.unhealthy
                                 else b"200 OK"))
                    return
                c.sendall(("%s %s\n" % (self.name, peer[0])).encode())
                if line != b"echo\n":
                    return
                while not self.stop_ev.is_set():
                    b = c.recv(4096)
                    if not b:
                        return
                    c.sendall(b)
            except OSError:
                return

    def stop(self):
        self.stop_ev.set()
        self.th.join(dl(5))
        for s in self.socks:
            s.close()


# ---- clients (run inside a namespace through World.ns(...)) ---------------------

def who(ip, port_, timeout=1.0):
    """(pod name, the address the pod saw) over a new TCP connection."""
    with socket.create_connection((ip, port_), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"who\n")
        data = b""
        while True:
            b = s.recv(256)
            if not b:
                break
            data += b
    name, peer = data.decode().split()
    return name, peer


def try_who(ip, port_, timeout=1.0):
    try:
        return who(ip, port_, timeout)
    except (OSError, ValueError):
        return None


def who_many(ip, port_, n):
    return [try_who(ip, port_) for _ in range(n)]


def udp_who(ip, port_, sport=0, timeout=1.0):
    """(pod name, address seen) for one datagram from source port <sport>
    (0: any), or None when no answer came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport))
        s.settimeout(timeout)
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 b"\x03web\x04shop\x00\x00\x01\x00\x01", (ip, port_))
        try:
            data, _ = s.recvfrom(2048)
        except OSError:
            return None
    name, peer = data.decode().split()
    return name, peer


def connect_outcome(ip, port_, timeout=2.0):
    """"refused", "timeout" or "connected", and how long it took."""
    t0 = time.monotonic()
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port_))
        out = "connected"
    except ConnectionRefusedError:
        out = "refused"
    except (socket.timeout, TimeoutError):
        out = "timeout"
    except OSError as e:
        out = "error %s" % e
    finally:
        s.close()
    return out, time.monotonic() - t0


class EchoConn:
    """A long-lived connection opened from a namespace thread."""

    def __init__(self, where, ip, port_):
        self.where = where
        self.s = where(socket.create_connection, (ip, port_), dl(2))
        self.s.settimeout(dl(2))
        self.s.sendall(b"echo\n")
        self.pod = self._line().split()[0]

    def _line(self):
        data = b""
        while not data.endswith(b"\n"):
            b = self.s.recv(256)
            if not b:
                raise OSError("closed")
            data += b
        return data.decode()

    def ping(self, text):
        self.s.sendall(text.encode() + b"\n")
        return self._line().strip()

    def close(self):
        self.s.close()


# ---- the world --------------------------------------------------------------------

class KWorld(mc.World):
    def __init__(self, tmp):
        self.servers = {}
        # Quick active checks for the health-check annotation's test.
        super().__init__(tmp, dataplane="nftables", node_extra=NODE_EXTRA,
                         defaults="{connect_timeout: 1s, retries: 2, "
                         "health_check: {interval: 200ms, timeout: 200ms, "
                         "rise: 1, fall: 1}}")

    def _start(self, tmp):
        self.ruleset_before = {n: self.ruleset(n) for n in NODE_IP}
        super()._start(tmp)

    def ruleset(self, node):
        return subprocess.run(self.c.exec_args(node) + ["nft", "list",
                                                        "ruleset"],
                              capture_output=True, text=True,
                              check=True).stdout

    def add_pod(self, name, node):
        self.index[node] += 1
        ip = self.c.add_pod(name, node, self.index[node])
        self.servers[name] = PodServer(self.c.ns("pod-" + name), name)
        self.pods[name] = (ip, node, None)
        return ip

    def del_pod(self, name):
        self.pods.pop(name)
        self.servers.pop(name).stop()
        self.c.del_pod(name)

    def delete(self, kind, ns, name):
        path = {"svc": "/api/v1/namespaces/%s/services/%s",
                "slice": "/apis/discovery.k8s.io/v1/namespaces/%s/"
                         "endpointslices/%s"}[kind] % (ns, name)
        st, _, body = self.api(self.sim.request, "DELETE", path)
        assert st == 200, body

    def close(self):
        for s in self.servers.values():
            s.stop()
        super().close()


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    yield from mc.world_of(KWorld, tmp_path_factory, "minicluster-kernel")


class KLoad(mc.Load):
    """mc.Load with this file's pods: one "who" connection after another."""

    def _run(self, netns):
        mc.netns_enter(netns)
        end = time.monotonic() + self.max_s
        while time.monotonic() < end:
            self.seen.append((time.monotonic(),
                              try_who(self.ip, self.port)))
            if self.stop_ev.wait(0.005):
                break


def metric(w, node, name):
    """The value of an unlabelled series in <node>'s /metrics."""
    st, _, body = w.ns(node)(http_get, "127.0.0.1", mc.NODE_ADMIN,
                             "/metrics")
    assert st == 200, body
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


def served(where, ip, port_, what):
    mc.ft.wait_for(lambda: where(try_who, ip, port_) is not None,
                   timeout=dl(15), what=what, interval=0.05)


# ---- the stories -------------------------------------------------------------------

def test_tcp_cluster_ip_reaches_both_nodes_with_the_client_address(w):
    w.add_pod("web-a", "node1")
    w.add_pod("web-b", "node2")
    w.service(svc_obj("web", "shop", "198.18.128.10",
                      [port("http", 80, 8080)]))
    w.endpoints("web", "shop", ["web-a", "web-b"])
    for node in NODE_IP:
        c = w.client[node]
        served(c, "198.18.128.10", 80, "ClusterIP from a pod on " + node)
        got = [x for x in c(who_many, "198.18.128.10", 80, 24) if x]
        assert len(got) == 24
        assert {n for n, _ in got} == {"web-a", "web-b"}
        # No masquerade inside the cluster: the pod on the other node sees
        # the client pod's own address.
        assert {p for _, p in got} == {CLIENT_IP[node]}
    for node in NODE_IP:
        # Nothing was bound or added: the kernel carries the Service.
        assert not any("198.18.128.10" in a for a in w.c.addrs(node))
        assert "198.18.128.10" in w.ruleset(node)
        # web and the API server's own default/kubernetes.
        assert metric(w, node, "ferry_nftables_services") == 2
        assert metric(w, node, "ferry_nftables_transactions_total") >= 2
        assert metric(w, node,
                      "ferry_nftables_transaction_failures_total") == 0


def test_udp_and_tcp_on_one_port_like_cluster_dns(w):
    w.service(svc_obj("dns", "shop", "198.18.128.53",
                      [port("dns", 53, 5353, proto="UDP"),
                       port("dns-tcp", 53, 8080)]))
    w.endpoints("dns", "shop", ["web-a", "web-b"],
                ports=(("dns", 5353, "UDP"), ("dns-tcp", 8080)))
    c1 = w.client["node1"]
    mc.ft.wait_for(lambda: c1(udp_who, "198.18.128.53", 53) is not None,
                   timeout=dl(15), what="UDP ClusterIP", interval=0.05)
    got = [c1(udp_who, "198.18.128.53", 53) for _ in range(20)]
    assert None not in got
    assert {n for n, _ in got} == {"web-a", "web-b"}
    assert {p for _, p in got} == {CLIENT_IP["node1"]}
    assert c1(who, "198.18.128.53", 53)[1] == CLIENT_IP["node1"]


def test_udp_endpoint_removed_flow_moves(w):
    c1 = w.client["node1"]
    sport = 40053
    first = c1(udp_who, "198.18.128.53", 53, sport)
    assert first is not None
    gone = first[0]
    stay = ({"web-a", "web-b"} - {gone}).pop()
    # The same flow keeps its pod while nothing changes (conntrack).
    assert all(c1(udp_who, "198.18.128.53", 53, sport)[0] == gone
               for _ in range(5))
    deleted = metric(w, "node1", "ferry_nftables_conntrack_deleted_total")
    t0 = time.monotonic()
    w.endpoints("dns", "shop", [stay],
                ports=(("dns", 5353, "UDP"), ("dns-tcp", 8080)))
    # The removed pod still runs and would answer: only the deletion of
    # its conntrack entry moves the flow (conntrack would keep it on the
    # old pod for as long as the client asks). Typically well under a
    # second; the deadline leaves room for a loaded machine, where the
    # watch, the table and the kernel each may wait for a core.
    end = t0 + dl(3.0)
    moved = None
    while time.monotonic() < end:
        r = c1(udp_who, "198.18.128.53", 53, sport, 0.1)
        if r is not None and r[0] == stay:
            moved = time.monotonic() - t0
            break
    assert moved is not None, "flow still on %s after %.1f s" % (gone, dl(3.0))
    assert metric(w, "node1",
                  "ferry_nftables_conntrack_deleted_total") > deleted
    # ferry explain --trace: the change reached the kernel's rules.
    st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                "/explain/trace?service=shop/dns")
    assert st == 200, body
    last = json.loads(body)["changes"][0]
    assert (last["kind"], last["event"]) == ("EndpointSlice", "MODIFIED")
    kernel = last["stages"][-1]
    assert kernel["stage"] == "kernel" and "kernel" not in last, last
    posted = [x for x in last["stages"] if x["stage"] == "posted"][0]
    assert kernel["at"] >= posted["at"], last
    w.endpoints("dns", "shop", ["web-a", "web-b"],
                ports=(("dns", 5353, "UDP"), ("dns-tcp", 8080)))


def test_nodeport_load_balancer_ip_and_external_ip_from_outside(w):
    w.service(svc_obj("front", "shop", "198.18.128.20",
                      [port("http", 80, 8080, node_port=30080)],
                      typ="LoadBalancer", externalIPs=["198.18.200.30"]),
              lb_ip="198.18.200.31")
    w.endpoints("front", "shop", ["web-a", "web-b"])
    out = w.out
    targets = [(NODE_IP["node1"], 30080), (NODE_IP["node2"], 30080),
               ("198.18.200.31", 80), ("198.18.200.30", 80)]
    for ip, p in targets:
        served(out, ip, p, "%s:%d from outside" % (ip, p))
        got = [x for x in out(who_many, ip, p, 12) if x]
        assert len(got) == 12
        assert {n for n, _ in got} == {"web-a", "web-b"}, (ip, p)
        # externalTrafficPolicy Cluster: kube-proxy masquerades, so the
        # reply comes back through the node that took the connection.
        assert OUT_IP not in {peer for _, peer in got}
    for node in NODE_IP:
        # No node holds (or answers ARP for) the LoadBalancer IP.
        assert not any("198.18.200.3" in a for a in w.c.addrs(node))


def test_masquerade_from_outside_the_cluster_and_hairpin(w):
    # A client outside cluster_cidrs reaching a ClusterIP through node1.
    w.c.ip(w.c.ns("out"), "route", "replace", "198.18.128.0/17", "via",
           NODE_IP["node1"])
    got = [x for x in w.out(who_many, "198.18.128.10", 80, 8) if x]
    assert len(got) == 8
    assert OUT_IP not in {p for _, p in got}
    # A pod sent to itself through its Service sees the node's address,
    # not its own (its answer would not go back through the node).
    web_a = w.ns("pod-web-a")
    mine = None
    for _ in range(40):
        mine = web_a(try_who, "198.18.128.10", 80)
        if mine and mine[0] == "web-a":
            break
    assert mine and mine[0] == "web-a", mine
    assert mine[1] != w.pods["web-a"][0]
    # Each node keeps the pairs of its own pods only: a pod reaches
    # itself through its own node.
    for node, mine, other in (("node1", "web-a", "web-b"),
                              ("node2", "web-b", "web-a")):
        pairs = subprocess.run(
            w.c.exec_args(node) + ["nft", "list", "set", "inet", "ferry",
                                   "hairpin4"],
            capture_output=True, text=True, check=True).stdout
        ip_mine, ip_other = w.pods[mine][0], w.pods[other][0]
        assert "%s . %s" % (ip_mine, ip_mine) in pairs, (node, pairs)
        assert "%s . %s" % (ip_other, ip_other) not in pairs, (node, pairs)


def test_external_traffic_policy_local_keeps_the_client_address(w):
    w.service(svc_obj("etp", "shop", "198.18.128.30",
                      [port("http", 80, 8080, node_port=30090)],
                      typ="LoadBalancer", externalTrafficPolicy="Local",
                      healthCheckNodePort=32090),
              lb_ip="198.18.200.32")
    w.endpoints("etp", "shop", ["web-a", "web-b"])
    mine = {"node1": "web-a", "node2": "web-b"}
    for node in NODE_IP:
        served(w.out, NODE_IP[node], 30090, "Local NodePort on " + node)
        got = [x for x in w.out(who_many, NODE_IP[node], 30090, 8) if x]
        assert got == [(mine[node], OUT_IP)] * 8
        st, _, body = w.out(http_get, NODE_IP[node], 32090, "/")
        assert st == 200, body
        assert json.loads(body)["localEndpoints"] == 1
        assert json.loads(body)["service"] == {"namespace": "shop",
                                               "name": "etp"}
    # Internal traffic spreads over both nodes whatever the policy.
    got = [x for x in w.client["node1"](who_many, "198.18.128.30", 80, 16)
           if x]
    assert {n for n, _ in got} == {"web-a", "web-b"}
    # ferry explain: the LoadBalancer IP gets node1's local endpoint and
    # says why not node2's, the ClusterIP both.
    local = "on another node, under a Local traffic policy"
    for addr, kind, want, left in (
            ("198.18.200.32:80", "LoadBalancer IP", ["web-a"],
             {"web-b": local}),
            ("198.18.128.30:80", "ClusterIP", ["web-a", "web-b"], {})):
        st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                    "/explain?addr=" + addr)
        assert st == 200, body
        ex = json.loads(body)["service"]
        assert ex["dataplane"] == "kernel (nftables)", ex
        assert ex["frontend_kind"] == kind, ex
        assert sorted(b["name"] for b in ex["backends"]
                      if b["verdict"] == "serving") == want, ex
        assert {b["name"]: b["reason"] for b in ex["backends"]
                if b["verdict"] == "excluded"} == left, ex


def test_load_balancer_source_ranges(w):
    w.c.ip(w.c.ns("edge"), "route", "replace", minicluster.LB_RANGE, "via",
           NODE_IP["node1"])
    w.service(svc_obj("ranged", "shop", "198.18.128.40",
                      [port("http", 80, 8080, node_port=30100)],
                      typ="LoadBalancer",
                      loadBalancerSourceRanges=[OUT_IP + "/32"]),
              lb_ip="198.18.200.40")
    w.endpoints("ranged", "shop", ["web-a", "web-b"])
    served(w.out, "198.18.200.40", 80, "LB IP from an allowed source")
    edge = w.ns("edge")
    assert edge(try_who, "198.18.200.40", 80, 0.5) is None
    assert edge(connect_outcome, "198.18.200.40", 80, 0.5)[0] == "timeout"
    # The ranges guard the LoadBalancer IP only, as in kube-proxy.
    assert edge(try_who, NODE_IP["node1"], 30100) is not None


def test_external_ip_two_services_claim_goes_to_the_other_when_one_goes(w):
    for name, cip, pod in (("clash-a", "198.18.128.100", "web-a"),
                           ("clash-b", "198.18.128.101", "web-b")):
        w.service(svc_obj(name, "shop", cip, [port("http", 80, 8080)],
                          externalIPs=["198.18.200.50"]))
        w.endpoints(name, "shop", [pod])
    served(w.out, "198.18.200.50", 80, "the contested externalIP")
    # The first in the table's order holds it; the other is logged.
    assert {x[0] for x in w.out(who_many, "198.18.200.50", 80, 6)
            if x} == {"web-a"}
    w.wait(lambda: "clash-b" in w.log("node1.log"), "the refusal logged")
    # Said once while it lasts: tables that follow (here the holder's
    # endpoints change) try it again without saying it again.
    w.endpoints("clash-a", "shop", ["web-a", "web-b"])
    w.wait(lambda: {x[0] for x in w.out(who_many, "198.18.200.50", 80, 12)
                    if x} == {"web-a", "web-b"}, "clash-a's new endpoints")
    assert w.log("node1.log").count(
        "nftables: skipping Service shop/clash-b") == 1, w.log("node1.log")
    # The holder moves to another address: the table's Services are the
    # same ones, so only what changed is put, and the refused one is
    # tried again after it, and now taken.
    moved = svc_obj("clash-a", "shop", "198.18.128.100",
                    [port("http", 80, 8080)], externalIPs=["198.18.200.51"])
    st, _, body = w.api(w.sim.request, "PUT",
                        "/api/v1/namespaces/shop/services/clash-a", moved)
    assert st == 200, body
    w.wait(lambda: (w.out(try_who, "198.18.200.50", 80) or [None])[0]
           == "web-b", "the other Service takes the address over")
    served(w.out, "198.18.200.51", 80, "the holder at its new address")
    w.delete("svc", "shop", "clash-a")
    w.wait(lambda: w.out(try_who, "198.18.200.51", 80) is None,
           "the holder's new address gone with it")
    served(w.out, "198.18.200.50", 80, "the other Service, still")
    assert {x[0] for x in w.out(who_many, "198.18.200.50", 80, 6)
            if x} == {"web-b"}


def test_session_affinity_client_ip(w):
    w.service(svc_obj("sticky", "shop", "198.18.128.50",
                      [port("http", 80, 8080)],
                      sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP":
                                             {"timeoutSeconds": 60}}))
    w.endpoints("sticky", "shop", ["web-a", "web-b"])
    for node in NODE_IP:
        c = w.client[node]
        served(c, "198.18.128.50", 80, "affinity Service on " + node)
        got = c(who_many, "198.18.128.50", 80, 12)
        assert None not in got and len({n for n, _ in got}) == 1, got


def test_service_without_endpoints_is_refused_at_once(w):
    w.service(svc_obj("empty", "shop", "198.18.128.60",
                      [port("http", 80, 8080)]))
    c1 = w.client["node1"]
    mc.ft.wait_for(
        lambda: c1(connect_outcome, "198.18.128.60", 80, 2.0)[0] == "refused",
        timeout=dl(15), what="no-endpoint Service refused", interval=0.05)
    out, took = c1(connect_outcome, "198.18.128.60", 80, 2.0)
    assert out == "refused" and took < 1.0
    # A port the Service does not have, on its ClusterIP: refused too.
    assert c1(connect_outcome, "198.18.128.10", 81, 2.0)[0] == "refused"
    # Its one endpoint not ready: still refused, and ferry explain says
    # which endpoint was left out and why.
    w.endpoints("empty", "shop", ["web-a"], not_ready=("web-a",))

    def explained():
        st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                    "/explain?addr=198.18.128.60:80")
        ex = json.loads(body).get("service", {}) if st == 200 else {}
        return [(b["name"], b["verdict"], b.get("reason"))
                for b in ex.get("backends", [])]
    mc.ft.wait_for(lambda: explained() == [("web-a", "excluded",
                                            "not ready")],
                   timeout=dl(15), what="explain: web-a not ready")
    assert c1(connect_outcome, "198.18.128.60", 80, 2.0)[0] == "refused"


def test_host_listener_on_the_service_port_takes_nothing(w):
    node = w.ns("node1")
    host = node(socket.create_server, ("0.0.0.0", 80))
    try:
        got = [x for x in w.client["node1"](who_many, "198.18.128.10", 80, 8)
               if x]
        assert len(got) == 8 and {n for n, _ in got} <= {"web-a", "web-b"}
        host.settimeout(0.05)
        with pytest.raises((socket.timeout, TimeoutError, BlockingIOError)):
            host.accept()
    finally:
        host.close()


def delete_under_open_connection(w, name, ip):
    """Delete Service shop/<name> (ClusterIP <ip>, port 80) while a
    connection to it is open: new ones are refused, the open one keeps
    echoing."""
    c1 = w.client["node1"]
    conn = EchoConn(c1, ip, 80)
    try:
        assert conn.ping("before") == "before"
        w.delete("svc", "shop", name)
        mc.ft.wait_for(
            lambda: c1(connect_outcome, ip, 80, 1.0)[0] == "refused",
            timeout=dl(15), what="deleted Service refused", interval=0.05)
        for i in range(5):
            assert conn.ping("after %d" % i) == "after %d" % i
    finally:
        conn.close()


def test_deleted_service_keeps_open_connections_and_refuses_new(w):
    w.service(svc_obj("keep", "shop", "198.18.128.70",
                      [port("http", 80, 8080)]))
    w.endpoints("keep", "shop", ["web-a", "web-b"])
    served(w.client["node1"], "198.18.128.70", 80, "Service to delete")
    delete_under_open_connection(w, "keep", "198.18.128.70")


def answers_only(where, ip, port_, names, n=12):
    got = where(who_many, ip, port_, n)
    return None not in got and {x[0] for x in got} <= set(names)


def test_health_check_annotation_takes_a_failing_endpoint_out(w):
    svc = svc_obj("checked", "shop", "198.18.128.90", [port("http", 80, 8080)])
    svc["metadata"]["annotations"] = {"ferry.dev/health-check": "http:/hz"}
    w.service(svc)
    w.endpoints("checked", "shop", ["web-a", "web-b"])
    c1 = w.client["node1"]
    served(c1, "198.18.128.90", 80, "checked Service")
    w.servers["web-b"].unhealthy = True
    try:
        # Both nodes check web-b, find it down, and leave it out of their
        # kernel maps: no new connection goes there.
        for node in NODE_IP:
            w.wait(lambda n=node: answers_only(
                w.client[n], "198.18.128.90", 80, {"web-a"}),
                "web-b out of the maps on " + node)
            assert "is DOWN" in w.log(node + ".log")
        # ferry explain says so, from the same health state: the kernel
        # Service's ClusterIP, web-b excluded by its check, web-a serving.
        st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                    "/explain?addr=198.18.128.90:80")
        assert st == 200, body
        ex = json.loads(body)["service"]
        assert (ex["dataplane"], ex["frontend_kind"]) == (
            "kernel (nftables)", "ClusterIP"), ex
        verdicts = {b["name"]: (b["verdict"], b.get("reason", ""))
                    for b in ex["backends"]}
        assert verdicts["web-a"] == ("serving", ""), verdicts
        assert verdicts["web-b"][0] == "excluded" and \
            verdicts["web-b"][1].startswith("health check down"), verdicts
        # A Service without the annotation keeps sending to it.
        got = {x[0] for x in c1(who_many, "198.18.128.10", 80, 24) if x}
        assert got == {"web-a", "web-b"}
    finally:
        w.servers["web-b"].unhealthy = False
    w.wait(lambda: "web-b" in {x[0] for x in c1(
        who_many, "198.18.128.90", 80, 16) if x}, "web-b back after rise")


def test_status_shows_which_dataplane_serves_each_service(w, tmp_path):
    st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                "/status")
    assert st == 200
    k = {(x["name"], x["protocol"]): x
         for x in json.loads(body)["kernel_services"]}
    web = k[("shop/web:http", "tcp")]
    assert web["dataplane"] == "nftables"
    assert web["addresses"] == ["198.18.128.10"]
    assert sorted(e["name"] for e in web["endpoints"]) == ["web-a", "web-b"]
    assert web["endpoints_total"] == 2
    assert k[("shop/dns:dns", "udp")]["port"] == 53
    checked = k[("shop/checked:http", "tcp")]
    assert checked["health_check"] == "http"
    assert {e["health"] for e in checked["endpoints"]} == {"up"}
    # Health is per address: web's endpoints are checked's too.
    assert {e["health"] for e in web["endpoints"]} == {"up"}
    assert {e["health"] for e in k[("shop/dns:dns", "udp")]["endpoints"]} \
        == {"not checked"}
    # The page, in a real browser inside the node's namespace.
    import test_admin_page as page
    chromium = page.chromium()
    profile = tmp_path / "profile"
    profile.mkdir()
    r = subprocess.run(
        w.c.exec_args("node1")
        + [chromium, "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--virtual-time-budget=4000", "--dump-dom",
           "http://127.0.0.1:%d/" % mc.NODE_ADMIN],
        capture_output=True, text=True, timeout=ft.scaled(90),
        env=dict(os.environ, HOME=str(tmp_path)))
    dom = r.stdout
    assert "service shop/dns:dns (udp)" in dom, dom[-3000:]
    assert "kernel (nftables) on 198.18.128.53:53" in dom
    assert 'data-endpoint="web-b"' in dom


def test_proxy_annotation_puts_a_service_on_ferrys_proxy(w):
    svc = svc_obj("proxied", "shop", "198.18.128.95",
                  [port("http", 80, 8080, node_port=30195)], typ="NodePort")
    svc["metadata"]["annotations"] = {"ferry.dev/dataplane": "proxy",
                                      "ferry.dev/balance": "leastconn",
                                      "ferry.dev/retries": "3"}
    w.service(svc)
    w.endpoints("proxied", "shop", ["web-a", "web-b"])
    c1 = w.client["node1"]
    served(c1, "198.18.128.95", 80, "proxied Service")
    got = [x for x in c1(who_many, "198.18.128.95", 80, 16) if x]
    assert {n for n, _ in got} == {"web-a", "web-b"}
    # The proxy connects from the node: the pods do not see the client.
    assert CLIENT_IP["node1"] not in {p for _, p in got}
    st, _, body = w.ns("node1")(http_get, "127.0.0.1", mc.NODE_ADMIN,
                                "/status")
    s = [x for x in json.loads(body)["services"]
         if x["name"] == "shop/proxied:http"]
    assert len(s) == 1 and s[0]["balance"] == "leastconn", body
    # The kernel steers the Service's addresses to the proxy's one port:
    # nothing is bound on them and no address is added.
    for node in NODE_IP:
        assert not any("198.18.128.95" in a for a in w.c.addrs(node))
    assert "redirect to :10263" in w.ruleset("node1")
    # NodePort from outside, on both nodes, through the proxy.
    for node in NODE_IP:
        served(w.out, NODE_IP[node], 30195, "proxied NodePort on " + node)
    # A host listener on the Service's port takes none of its traffic.
    host = w.ns("node1")(socket.create_server, ("0.0.0.0", 80))
    try:
        got = [x for x in c1(who_many, "198.18.128.95", 80, 8) if x]
        assert len(got) == 8 and {n for n, _ in got} <= {"web-a", "web-b"}
        host.settimeout(0.05)
        with pytest.raises((socket.timeout, TimeoutError, BlockingIOError)):
            host.accept()
    finally:
        host.close()
    # The redirect port reached directly serves nothing.
    before = metric(w, "node1", "ferry_redirect_unmatched_total")
    assert w.out(try_who, NODE_IP["node1"], 10263) is None
    w.wait(lambda: metric(w, "node1", "ferry_redirect_unmatched_total")
           > before, "direct connection counted")


def test_deleted_proxied_service_keeps_open_connections(w):
    delete_under_open_connection(w, "proxied", "198.18.128.95")


def test_restarts_lose_no_connection(w):
    c2 = w.client["node2"]
    conn = EchoConn(w.client["node1"], "198.18.128.10", 80)
    load = KLoad(w.c.ns("pod-client1"), "198.18.128.10", 80, max_s=120)
    try:
        for i in range(10):
            assert w.stop(w.ferry["node1"]) == 0
            assert conn.ping("restart %d" % i) == "restart %d" % i
            w.start_ferry("node1")
            w.wait_ready("node1")
        assert c2(try_who, "198.18.128.10", 80) is not None
    finally:
        seen = load.stop()
        conn.close()
    assert len(seen) > 20
    assert seen.count(None) == 0, "%d of %d connections failed" % (
        seen.count(None), len(seen))
    assert "table inet ferry adopted" in w.log("node1.log")


def test_cleanup_leaves_the_ruleset_as_before_and_kube_proxy_keeps_ferry_out(w):
    for node in NODE_IP:
        assert w.stop(w.ferry[node]) == 0
        assert "table inet ferry" in w.ruleset(node), "rules kept on exit"
        r = subprocess.run(w.c.exec_args(node) + [ft.ferry_bin(), "cleanup"],
                           capture_output=True, text=True, timeout=dl(20))
        assert r.returncode == 0, r.stderr
        assert "deleted table inet ferry" in r.stdout
        assert w.ruleset(node) == w.ruleset_before[node]
    # A node kube-proxy still programs: ferry adds nothing beside its
    # rules and is not ready; once they are gone it takes over.
    subprocess.run(w.c.exec_args("node1") + ["nft", "add", "table", "ip",
                                             "kube-proxy"], check=True)
    try:
        w.start_ferry("node1")
        w.wait(lambda: "kube-proxy is programming this node (nftables "
               "table ip kube-proxy)" in w.log("node1.log"), "kube-proxy named")
        # The line comes before the health port listens: wait for it to
        # answer at all (a CI run asked in between and was refused).
        w.wait(lambda: w.api(w.readyz, NODE_IP["node1"]) is not None,
               "/readyz answering")
        assert w.api(w.readyz, NODE_IP["node1"]) == 503
        assert "table inet ferry" not in w.ruleset("node1")
    finally:
        subprocess.run(w.c.exec_args("node1") + ["nft", "delete", "table",
                                                 "ip", "kube-proxy"])
    w.wait_ready("node1")
    assert "kube-proxy's rules are gone" in w.log("node1.log")
    assert "198.18.128.10" in w.ruleset("node1")
    assert w.stop(w.ferry["node1"]) == 0
    r = subprocess.run(w.c.exec_args("node1") + [ft.ferry_bin(), "cleanup"],
                       capture_output=True, text=True, timeout=dl(20))
    assert r.returncode == 0, r.stderr
    assert w.ruleset("node1") == w.ruleset_before["node1"]
