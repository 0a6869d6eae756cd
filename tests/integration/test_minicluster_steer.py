"""End to end: node.proxy_steering under node.dataplane: proxy.

The cluster of test_minicluster.py (network namespaces in 198.18.0.0/15,
tests/lib/minicluster.py) with the pods of test_minicluster_kernel.py
(TCP 8080 answers "NAME PEER_IP", UDP 5353 too). node1's ferry runs the
default steering, `auto`, which here (root in its own namespace, no
kube-proxy) is `redirect`: the kernel sends every Service's TCP ports to
the proxy's one port. node2's says `listen`: a listener on every Service
address, the address on the node. Both serve the same Services, so each
story compares them: the listening sockets do not grow with the number
of Services on node1, and do on node2; connections reach the pods either
way; UDP listens on both.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import ferrytest as ft  # noqa: E402
import test_minicluster as mc  # noqa: E402
import test_minicluster_kernel as mk  # noqa: E402
from test_minicluster import NODE_IP, dl, port, svc_obj  # noqa: E402


# The same needs as the kernel dataplane's mini-cluster: namespaces and
# nftables.
SKIP = mk.SKIP
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

N_FIRST, N_ALL = 10, 50  # Services, before and after the second batch
UDP_IP = "198.18.129.53"


def cip(i):
    return "198.18.130.%d" % (10 + i)


class SWorld(mc.World):
    """node1: proxy_steering left to auto; node2: listen."""

    add_pod = mk.KWorld.add_pod
    del_pod = mk.KWorld.del_pod
    delete = mk.KWorld.delete

    def __init__(self, tmp):
        self.servers = {}
        super().__init__(tmp, dataplane="proxy",
                         node_extra={"node2": "  proxy_steering: listen\n"})

    def _start(self, tmp):
        self.ruleset_before = {n: self.ruleset(n) for n in NODE_IP}
        super()._start(tmp)

    def close(self):
        for s in self.servers.values():
            s.stop()
        super().close()

    def listening(self, node, proto="t"):
        """The node's listening sockets ("local:port"), all ferry's (it
        is the only program in the node's namespace)."""
        out = subprocess.run(self.c.exec_args(node) + ["ss", "-Hn%sl" % proto],
                             capture_output=True, text=True,
                             check=True).stdout
        return [line.split()[3] for line in out.splitlines() if line.strip()]

    def add_services(self, lo, hi):
        for i in range(lo, hi):
            name = "s%d" % i
            if i == 0:  # and a NodePort
                self.service(svc_obj(name, "shop", cip(i),
                                     [port("http", 80, 8080, 30300)],
                                     typ="NodePort"))
            else:
                self.service(svc_obj(name, "shop", cip(i),
                                     [port("http", 80, 8080)]))
            self.endpoints(name, "shop", ["web-a", "web-b"])

    def applied(self, node, n):
        """<node>'s ferry serves Services s0..s<n-1> (its /status)."""
        def ok():
            st, _, body = self.ns(node)(mc.http_get, "127.0.0.1",
                                        mc.NODE_ADMIN, "/status")
            names = {x["name"] for x in json.loads(body)["services"]}
            return st == 200 and "shop/s%d:http" % (n - 1) in names
        self.wait(ok, "%s serving %d Services" % (node, n))


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    yield from mc.world_of(SWorld, tmp_path_factory, "minicluster-steer")


def test_listening_sockets_do_not_grow_with_services_under_redirect(w):
    w.add_pod("web-a", "node1")
    w.add_pod("web-b", "node2")
    w.add_services(0, N_FIRST)
    for node in NODE_IP:
        w.applied(node, N_FIRST)
    first = {n: len(w.listening(n)) for n in NODE_IP}
    w.add_services(N_FIRST, N_ALL)
    for node in NODE_IP:
        w.applied(node, N_ALL)
    socks = {n: w.listening(n) for n in NODE_IP}
    # node1: the dispatch listener (per worker and family), the admin
    # and health ports; none per Service.
    assert len(socks["node1"]) == first["node1"], socks["node1"]
    assert not any(a.startswith("198.18.130.") for a in socks["node1"])
    assert "0.0.0.0:10263" in socks["node1"]
    assert "redirect to :10263" in w.ruleset("node1")
    assert "node.proxy_steering" in w.log("node1.log")
    # node2 (listen): a listener per Service address and worker.
    assert len(socks["node2"]) - first["node2"] >= N_ALL - N_FIRST
    assert "%s:80" % cip(N_ALL - 1) in socks["node2"]
    assert w.ruleset("node2") == w.ruleset_before["node2"]
    # Service addresses go on the node under listen only.
    assert not any("198.18.130." in a for a in w.c.addrs("node1"))
    assert any("%s/32" % cip(N_ALL - 1) in a for a in w.c.addrs("node2"))


def test_cluster_ip_and_node_port_reach_the_pods_either_way(w):
    for node in NODE_IP:
        cl = w.client[node]
        for i in (0, N_ALL - 1):
            mk.served(cl, cip(i), 80, "%s from %s" % (cip(i), node))
            got = [x for x in cl(mk.who_many, cip(i), 80, 8) if x]
            assert {n for n, _ in got} == {"web-a", "web-b"}, got
        mk.served(w.out, NODE_IP[node], 30300, "NodePort on " + node)
        got = [x for x in w.out(mk.who_many, NODE_IP[node], 30300, 8) if x]
        assert {n for n, _ in got} == {"web-a", "web-b"}, got


def test_affinity_service_on_worker_0s_own_port(w):
    """A Service with ClientIP affinity is redirected to the port after
    node.proxy_port, which worker 0 alone serves; the other Services keep
    every worker's listener on node.proxy_port, and the pin holds."""
    aff_ip = cip(N_ALL + 1)
    w.service(svc_obj("aff", "shop", aff_ip, [port("http", 80, 8080)],
                      sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP":
                                             {"timeoutSeconds": 60}}))
    w.endpoints("aff", "shop", ["web-a", "web-b"])
    w.wait(lambda: "redirect to :10264" in w.ruleset("node1"),
           "node1's kernel redirecting aff to the affinity port")
    socks = w.listening("node1")
    # Each worker listens on node.proxy_port, worker 0 alone on the next.
    workers = int(re.search(r"(\d+) workers?\)", w.log("node1.log")).group(1))
    assert socks.count("0.0.0.0:10263") == workers, socks
    assert socks.count("0.0.0.0:10264") == 1, socks
    cl = w.client["node1"]
    mk.served(cl, aff_ip, 80, "aff from node1")
    got = [x for x in cl(mk.who_many, aff_ip, 80, 8) if x]
    assert len(got) == 8 and len({n for n, _ in got}) == 1, got
    got = [x for x in cl(mk.who_many, cip(1), 80, 8) if x]
    assert {n for n, _ in got} == {"web-a", "web-b"}, got
    assert "a ClientIP-affinity service" not in w.log("node1.log")
    w.delete("svc", "shop", "aff")
    w.wait(lambda: "0.0.0.0:10264" not in w.listening("node1"),
           "the affinity port closed with the last affinity Service")


def test_udp_ports_listen_on_their_addresses(w):
    w.service(svc_obj("dns", "shop", UDP_IP,
                      [port("dns", 53, 5353, proto="UDP"),
                       port("dns-tcp", 53, 8080)]))
    w.endpoints("dns", "shop", ["web-a", "web-b"],
                ports=(("dns", 5353, "UDP"), ("dns-tcp", 8080)))
    for node in NODE_IP:
        cl = w.client[node]
        w.wait(lambda cl=cl: cl(mk.udp_who, UDP_IP, 53) is not None,
               "UDP Service on " + node)
        assert "%s:53" % UDP_IP in w.listening(node, "u")
        # Its address is on the node, for the UDP listener.
        assert any("%s/32" % UDP_IP in a for a in w.c.addrs(node))
        mk.served(cl, UDP_IP, 53, "TCP port of the UDP Service on " + node)
    # The TCP port of the same Service: redirected on node1, bound on node2.
    assert "%s:53" % UDP_IP not in w.listening("node1")
    assert "%s:53" % UDP_IP in w.listening("node2")


def test_deleted_service_keeps_open_connections(w):
    ip = cip(1)
    conn = mk.EchoConn(w.client["node1"], ip, 80)
    try:
        assert conn.ping("before") == "before"
        w.delete("svc", "shop", "s1")
        w.wait(lambda: ip not in w.ruleset("node1"), "s1 gone from the kernel")
        assert w.client["node1"](mk.try_who, ip, 80) is None
        for i in range(5):
            assert conn.ping("after %d" % i) == "after %d" % i
    finally:
        conn.close()


def _ferry_alone(node_extra, tmp, kube_proxy=True, prefix=(), exits=True):
    """Run ferry (after <prefix>) in a namespace of its own with the proxy
    dataplane and <node_extra>, kube-proxy's table there if <kube_proxy>;
    (exit code, or None while it runs, and its output) once it exited
    (<exits>) or logged its steering."""
    ns = "steer%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "netns", "exec", ns]
        if kube_proxy:
            subprocess.run(run + ["nft", "add", "table", "ip", "kube-proxy"],
                           check=True)
        cfg = os.path.join(tmp, "alone.yaml")
        with open(cfg, "w") as f:
            f.write("log: {level: info}\n"
                    "kubernetes: {enabled: true, api_server: "
                    "'http://127.0.0.1:1', node_name: n1}\n"
                    "node: {dataplane: proxy, vip_interface: none, %s}\n"
                    % node_extra)
        out = os.path.join(tmp, "alone.log")
        with open(out, "w") as lf:
            p = subprocess.Popen(run + list(prefix) + [ft.ferry_bin(), "-c",
                                                       cfg], stdout=lf,
                                 stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        try:
            def said():
                with open(out, errors="replace") as f:
                    text = f.read()
                return p.poll() is not None or (
                    not exits and "node.proxy_steering" in text)
            ft.wait_for(said, timeout=dl(10), what="ferry's steering",
                        interval=0.02)
            rc = p.poll()
        finally:
            if p.poll() is None:
                p.terminate()
                p.wait(dl(10))
        with open(out, errors="replace") as f:
            return rc, f.read()
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def test_redirect_refuses_and_auto_listens_when_nftables_cannot_be_used():
    with tempfile.TemporaryDirectory() as tmp:
        rc, text = _ferry_alone("proxy_steering: redirect", tmp)
        assert rc == 1, text
        assert ("node.proxy_steering: redirect: nftables cannot be used: "
                "kube-proxy is programming this node (nftables table ip "
                "kube-proxy)") in text
        rc, text = _ferry_alone("proxy_steering: auto", tmp, exits=False)
        assert rc is None, text  # still running
        assert ("the proxy listens on every Service address "
                "(node.proxy_steering: auto): nftables cannot be used: "
                "kube-proxy is programming this node") in text
        if shutil.which("setpriv") is None:
            return
        # Without CAP_NET_ADMIN.
        rc, text = _ferry_alone("proxy_steering: redirect", tmp, False,
                                ["setpriv", "--inh-caps=-net_admin",
                                 "--bounding-set=-net_admin"])
        assert rc == 1, text
        assert ("node.proxy_steering: redirect: nftables cannot be used: "
                "no CAP_NET_ADMIN") in text
        # auto says so in one line, and listens.
        rc, text = _ferry_alone("proxy_steering: auto", tmp, False,
                                ["setpriv", "--inh-caps=-net_admin",
                                 "--bounding-set=-net_admin"], exits=False)
        assert rc is None, text
        said = [ln for ln in text.splitlines() if "nftables" in ln]
        assert len(said) == 1 and ("(node.proxy_steering: auto): nftables "
                                   "cannot be used: no CAP_NET_ADMIN"
                                   in said[0]), text


def test_cleanup_removes_the_table_and_the_addresses(w):
    w.remove_pods()
    for node in NODE_IP:
        assert w.stop(w.ferry[node]) == 0
    # Kept over a restart: node1's table, node2's addresses.
    assert "table inet ferry" in w.ruleset("node1")
    assert any("198.18.130." in a for a in w.c.addrs("node2"))
    for node in NODE_IP:
        r = subprocess.run(w.c.exec_args(node) + [ft.ferry_bin(), "cleanup"],
                           capture_output=True, text=True, timeout=dl(20))
        assert r.returncode == 0, r.stderr
        assert w.ruleset(node) == w.ruleset_before[node]
    assert not any("198.18.130." in a for a in w.c.addrs("node2"))
