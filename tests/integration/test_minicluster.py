"""End to end: ferry as the node proxy of a two-node cluster, and as an
edge balancer in front of it, against the simulated API server.

The cluster (tests/lib/minicluster.py) is network namespaces and veth
pairs in 198.18.0.0/15: the API server in "lan" at 198.18.0.1, node1 and
node2 each running their own `ferry` (node mode, the proxy dataplane with
its default steering: the kernel redirects Services to ferry's one port),
pods on both nodes running
`ferry-bench serve --mode http` (which answers with its own name), a
client pod on each node, an outside client and an edge host running a
third `ferry` in edge mode with a kubeconfig.

EndpointSlices are written by the test, as the EndpointSlice controller
would (the simulated API server has no controller): a pod failing its
readiness probe is an endpoint whose "ready" turns false.

The scenarios run in order on one cluster (building it costs seconds);
each is its own test function so a failure names the story it breaks.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import ferrytest as ft  # noqa: E402
import netns as netns_lib  # noqa: E402
import kapisim_client  # noqa: E402
import minicluster  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED", "0") == "1"
NODE_IP = {"node1": "198.18.0.11", "node2": "198.18.0.12"}
API = "198.18.0.1:6443"
NODE_ADMIN = 9990  # each node ferry's admin port, on the node's own lo
HTTP_REQ = b"GET / HTTP/1.1\r\nHost: mc\r\n\r\n"


def dl(seconds):
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


def bench_bin():
    p = os.environ.get("FERRY_BENCH_BIN") or str(
        ft.REPO_ROOT / "build" / "bench" / "ferry-bench")
    return p if os.access(p, os.X_OK) else None


def _why_skip():
    why = minicluster.missing()
    if why:
        return why
    if bench_bin() is None:
        return "ferry-bench not built (set FERRY_BENCH_BIN)"
    if shutil.which("nft") is None:
        return "needs the nft command (nftables)"
    return None


SKIP = _why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


# ---- running code inside a namespace ---------------------------------------

InNs = netns_lib.InNs
netns_enter = netns_lib.enter


def ask(ip, port, timeout=2.0):
    """One HTTP request; the answering pod's name."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(HTTP_REQ)
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError("bad answer: %r" % data[:80])
    return body.decode().strip()


def ask_many(ip, port, n):
    return [ask(ip, port) for _ in range(n)]


def http_get(ip, port, path="/", timeout=2.0):
    """(status, headers dict, body) of a GET."""
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
    head, _, body = data.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), hdrs, body


def try_ask(ip, port):
    try:
        return ask(ip, port, timeout=1.0)
    except OSError:
        return None


class Load:
    """Connections one after another from a namespace thread, bounded in
    time, counting answers per pod and failures."""

    def __init__(self, netns, ip, port, max_s=60.0):
        self.ip, self.port, self.max_s = ip, port, max_s
        self.stop_ev = threading.Event()
        self.seen = []  # (time, name or None)
        self.th = threading.Thread(target=self._run, args=(netns,),
                                   daemon=True)
        self.th.start()

    def _run(self, netns):
        netns_enter(netns)
        end = time.monotonic() + self.max_s
        while time.monotonic() < end:
            self.seen.append((time.monotonic(), try_ask(self.ip, self.port)))
            if self.stop_ev.wait(0.005):  # pacing; stop() ends it at once
                break

    def since(self, t):
        return [n for (at, n) in self.seen if at >= t]

    def stop(self):
        self.stop_ev.set()
        self.th.join(10)
        return [n for _, n in self.seen]


# ---- objects ----------------------------------------------------------------

def svc_obj(name, ns, cip, ports, typ="ClusterIP", labels=None, **spec):
    s = {"type": typ, "clusterIP": cip, "clusterIPs": [cip],
         "ports": ports, "selector": {"app": name}}
    s.update(spec)
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": labels or {}}, "spec": s}


def port(name, p, target, node_port=None, proto="TCP"):
    d = {"name": name, "port": p, "targetPort": target, "protocol": proto}
    if node_port:
        d["nodePort"] = node_port
    return d


class World:
    """The cluster, its API server and one ferry per node. <dataplane> and
    <node_extra> (more lines of the "node:" section; a dict gives each
    node its own) say how the node ferries carry Service traffic."""

    def __init__(self, tmp, dataplane="proxy", node_extra="",
                 defaults="{connect_timeout: 1s, retries: 2}"):
        self.tmp = tmp
        self.defaults = defaults
        self.dataplane = dataplane
        self.node_extra = node_extra
        self.procs = []
        self.threads = {}
        self.sim = None
        self.c = minicluster.Cluster()
        try:
            self._start(tmp)
        except Exception:
            self.close()
            raise

    # -- plumbing -------------------------------------------------------------
    def ns(self, name):
        if name not in self.threads:
            self.threads[name] = InNs(self.c.ns(name))
        return self.threads[name]

    def spawn(self, where, argv, log):
        f = open(os.path.join(self.tmp, log), "ab")
        p = subprocess.Popen(self.c.exec_args(where) + argv, stdout=f,
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        f.close()
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(dl(10))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def log(self, name):
        try:
            with open(os.path.join(self.tmp, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _start(self, tmp):
        c = self.c
        self.before = {n: self.state(n) for n in NODE_IP}
        # The API server, inside the lan namespace.
        sim = kapisim_client.Sim(
            tmp, False, {"node-token": "system:node", "edge-token": "edge"},
            {"listen": API, "bookmark_interval": 1.0})
        base_argv = sim._argv
        sim._argv = lambda listen: c.exec_args("lan") + base_argv(listen)
        self.sim = sim.start()
        self.api = self.ns("lan")
        self.api(self.sim.request, "POST", "/api/v1/namespaces",
                 {"metadata": {"name": "shop"}})
        self.api(self.sim.request, "POST", "/api/v1/namespaces",
                 {"metadata": {"name": "blog"}})
        sa = os.path.join(tmp, "sa")
        os.makedirs(sa, exist_ok=True)
        with open(os.path.join(sa, "token"), "w") as f:
            f.write("node-token\n")
        # One ferry per node: node1 names lo, node2 says "auto" (a dummy
        # interface where the kernel has one, else lo).
        self.ferry = {}
        self.cfg = {}
        for node, vif in (("node1", "lo"), ("node2", "auto")):
            cfg = os.path.join(tmp, node + ".yaml")
            with open(cfg, "w") as f:
                f.write(
                    "log: {level: info}\ndrain_timeout: 1s\n"
                    "defaults: %s\n"
                    "kubernetes:\n  enabled: true\n  mode: node\n"
                    "  api_server: http://%s\n  serviceaccount_dir: %s\n"
                    "  node_name: %s\n"
                    "node:\n  vip_interface: %s\n"
                    "  node_port_addresses: [%s]\n"
                    "  healthz_listen: 0.0.0.0:10256\n"
                    "  dataplane: %s\n%s"
                    "admin: {enabled: true, listen: 127.0.0.1:%d}\n"
                    % (self.defaults, API, sa, node, vif, NODE_IP[node],
                       self.dataplane,
                       self.node_extra.get(node, "")
                       if isinstance(self.node_extra, dict)
                       else self.node_extra, NODE_ADMIN))
            self.cfg[node] = cfg
            self.start_ferry(node)
        for node in NODE_IP:
            self.wait_ready(node)
        self.pods = {}
        self.index = {"node1": 10, "node2": 10}
        self.client = {}
        for node, cname in (("node1", "client1"), ("node2", "client2")):
            c.add_pod(cname, node, 200)
            self.client[node] = self.ns("pod-" + cname)
        self.out = self.ns("out")

    def start_ferry(self, node):
        self.ferry[node] = self.spawn(
            node, [ft.ferry_bin(), "-c", self.cfg[node]], node + ".log")
        return self.ferry[node]

    def wait_ready(self, node, timeout=15.0):
        self.wait(lambda: self.api(self.readyz, NODE_IP[node]) == 200,
                  "ferry on %s ready" % node, timeout)

    def readyz(self, ip):
        try:
            return http_get(ip, 10256, "/readyz")[0]
        except OSError:
            return None

    def backends(self, node, svc):
        """Addresses of the backends <node>'s ferry serves <svc> with
        ("ns/name:port"), from its admin /status."""
        st, _, body = self.ns(node)(http_get, "127.0.0.1", NODE_ADMIN,
                                    "/status")
        assert st == 200, body
        return sorted(b["address"] for x in json.loads(body)["services"]
                      if x["name"] == svc for b in x["backends"])

    def wait_all_workers(self, node, svc=None, n=None):
        """Until every worker of <node>'s ferry serves its latest table,
        and (with <svc>) that table lists <n> backends for <svc>: a
        connection a worker takes while it still runs the table before
        goes where that table said (a Service without endpoints resets
        it; a pod that was just deleted does not answer)."""
        def ok():
            st, _, body = self.ns(node)(http_get, "127.0.0.1", NODE_ADMIN,
                                        "/status")
            if st != 200:
                return False
            j = json.loads(body)
            got = [b for x in j["services"] if x["name"] == svc
                   for b in x["backends"]]
            return (svc is None or len(got) == n) and all(
                wk["generation"] == j["generation"] for wk in j["workers"])
        self.wait(ok, "%s's workers serving %s" % (
            node, "its latest table" if svc is None
            else "%d backends of %s" % (n, svc)))

    def state(self, node):
        """A node's addresses and links, for before/after comparisons.
        IPv6 link-local addresses are left out: the kernel adds them when
        a bridge first gets a port (a pod), which is not ferry's doing."""
        return ([a for a in self.c.addrs(node) if "scope link" not in a],
                self.c.links(node))

    def ruleset(self, node):
        return subprocess.run(self.c.exec_args(node) + ["nft", "list",
                                                        "ruleset"],
                              capture_output=True, text=True,
                              check=True).stdout

    def wait(self, pred, what, timeout=15.0):
        ft.wait_for(pred, timeout=dl(timeout), what=what, interval=0.05)

    # -- pods and slices ------------------------------------------------------
    def add_pod(self, name, node):
        self.index[node] += 1
        ip = self.c.add_pod(name, node, self.index[node])
        p = self.spawn("pod-" + name,
                       [bench_bin(), "serve", "--mode", "http", "--name",
                        name, "--listen", "0.0.0.0:8080", "--listen",
                        "0.0.0.0:11211", "--max-seconds", "600"],
                       "pod-%s.log" % name)
        self.pods[name] = (ip, node, p)
        self.wait(lambda: "ready" in self.log("pod-%s.log" % name),
                  "pod %s serving" % name)
        return ip

    def del_pod(self, name):
        ip, node, p = self.pods.pop(name)
        self.stop(p)
        self.c.del_pod(name)

    def remove_pods(self):
        """Every pod and both clients gone: their veth ends live in the
        nodes, which a cleanup test wants back as they were."""
        for name in list(self.pods):
            self.del_pod(name)
        for cname in ("client1", "client2"):
            # A thread inside the namespace keeps it (and its veth) alive.
            self.threads.pop("pod-" + cname).close()
            self.c.del_pod(cname)

    def endpoints(self, svc, ns, pods, ports=(("http", 8080),),
                  not_ready=(), terminating=()):
        """Write the Service's one EndpointSlice: <pods> by name."""
        eps = []
        for name in pods:
            ip, node, _ = self.pods[name]
            term = name in terminating
            ready = name not in not_ready and not term
            eps.append({"addresses": [ip], "nodeName": node,
                        "conditions": {"ready": ready,
                                       "serving": ready or term,
                                       "terminating": term},
                        "targetRef": {"kind": "Pod", "namespace": ns,
                                      "name": name}})
        sl = {"metadata": {"name": svc + "-abc12", "namespace": ns,
                           "labels": {"kubernetes.io/service-name": svc}},
              "addressType": "IPv4", "endpoints": eps,
              "ports": [{"name": pt[0], "port": pt[1],
                         "protocol": pt[2] if len(pt) > 2 else "TCP"}
                        for pt in ports]}
        path = "/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices" % ns
        st, _, body = self.api(self.sim.request, "PUT",
                               path + "/" + sl["metadata"]["name"], sl)
        if st == 404:
            st, _, body = self.api(self.sim.request, "POST", path, sl)
        assert st in (200, 201), body

    def service(self, obj, lb_ip=None):
        ns = obj["metadata"]["namespace"]
        path = "/api/v1/namespaces/%s/services" % ns
        st, _, body = self.api(self.sim.request, "POST", path, obj)
        assert st == 201, body
        if lb_ip:
            body["status"] = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}
            st, _, b2 = self.api(
                self.sim.request, "PUT",
                "%s/%s/status" % (path, obj["metadata"]["name"]), body)
            assert st == 200, b2

    def until_only(self, where, ip, port, names, what, n=6):
        """Poll until <n> answers in a row come only from <names>."""
        want = set(names)

        def ok():
            got = where(lambda: [try_ask(ip, port) for _ in range(n)])
            return set(got) <= want
        self.wait(ok, what)

    def close(self):
        for p in list(self.procs):
            self.stop(p, signal.SIGKILL)
        # The API server too: deleting its namespace would not end it.
        if self.sim is not None:
            self.sim.stop()
        for t in self.threads.values():
            t.close()
        self.c.destroy()


def world_of(make, tmp_path_factory, name,
             logs=("node1.log", "node2.log")):
    """A module's world: make(tmp) in a fresh directory <name>, yielded,
    closed at the end with the last lines of its <logs> shown."""
    world = make(str(tmp_path_factory.mktemp(name)))
    try:
        yield world
    finally:
        world.close()
        for log in logs:
            text = world.log(log)
            if text:
                sys.stderr.write("---- %s (last lines)\n%s\n" % (
                    log, "\n".join(text.splitlines()[-40:])))


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    yield from world_of(World, tmp_path_factory, "minicluster",
                        ("node1.log", "node2.log", "edge.log"))


# ---- the stories -------------------------------------------------------------

def test_cluster_ip_spreads_over_both_nodes(w):
    for name, node in (("web-a", "node1"), ("web-b", "node1"),
                       ("web-c", "node2"), ("web-d", "node2")):
        w.add_pod(name, node)
    w.service(svc_obj("web", "shop", "198.18.128.10",
                      [port("http", 80, 8080)]))
    w.endpoints("web", "shop", ["web-a", "web-b", "web-c", "web-d"])
    c1 = w.client["node1"]
    w.wait(lambda: c1(try_ask, "198.18.128.10", 80) is not None,
           "ClusterIP served on node1")
    w.wait_all_workers("node1", "shop/web:http", 4)
    got = c1(ask_many, "198.18.128.10", 80, 24)
    counts = {n: got.count(n) for n in set(got)}
    assert set(counts) == {"web-a", "web-b", "web-c", "web-d"}, counts
    assert min(counts.values()) >= 4, counts  # round-robin: 6 each
    # node.proxy_steering auto, here redirect: the kernel steers the
    # ClusterIP to the proxy's one port; no address is added for it
    # (test_minicluster_steer.py: listen steering adds it).
    for node in NODE_IP:
        assert not any("198.18.128.10" in a for a in w.c.addrs(node))
        assert "redirect to :10263" in w.ruleset(node)


def test_steel_memcache_nodeport_and_http_loadbalancer(w):
    w.add_pod("steel-1", "node1")
    w.add_pod("steel-2", "node2")
    w.service(svc_obj("memcache", "blog", "198.18.128.20",
                      [port("memcache", 11211, 11211, 31211)],
                      typ="NodePort", selector={"app": "steel"}))
    w.service(svc_obj("http", "blog", "198.18.128.21",
                      [port("http", 80, 8080, 30080)], typ="LoadBalancer",
                      selector={"app": "steel"}), lb_ip="198.18.200.10")
    w.endpoints("memcache", "blog", ["steel-1", "steel-2"],
                ports=(("memcache", 11211),))
    w.endpoints("http", "blog", ["steel-1", "steel-2"])
    both = {"steel-1", "steel-2"}
    targets = [(NODE_IP["node1"], 31211), (NODE_IP["node2"], 31211),
               (NODE_IP["node1"], 30080), (NODE_IP["node2"], 30080),
               ("198.18.200.10", 80)]
    w.wait(lambda: w.out(try_ask, "198.18.200.10", 80) is not None,
           "LoadBalancer IP served")
    for ip, p in targets:
        w.wait(lambda ip=ip, p=p: w.out(try_ask, ip, p) is not None,
               "%s:%d from outside" % (ip, p))
        got = w.out(ask_many, ip, p, 6)
        assert set(got) == both, (ip, p, got)
    # The Service's pods from inside too, through the ClusterIP.
    assert set(w.client["node2"](ask_many, "198.18.128.21", 80, 4)) == both


def test_load_balancer_source_ranges_on_the_proxy(w):
    # The edge namespace is a client here: it reaches the LoadBalancer
    # range through node1. The route goes when the test ends, or the edge
    # stories below would be answered by node1 instead of their edge.
    w.c.ip(w.c.ns("edge"), "route", "replace", minicluster.LB_RANGE, "via",
           NODE_IP["node1"])
    try:
        _source_ranges(w)
    finally:
        w.c.ip(w.c.ns("edge"), "route", "del", minicluster.LB_RANGE)


def _source_ranges(w):
    w.service(svc_obj("ranged", "blog", "198.18.128.22",
                      [port("http", 80, 8080, 30081)], typ="LoadBalancer",
                      selector={"app": "steel"},
                      loadBalancerSourceRanges=["198.18.0.100/32"]),
              lb_ip="198.18.200.11")
    w.endpoints("ranged", "blog", ["steel-1", "steel-2"])
    w.wait(lambda: w.out(try_ask, "198.18.200.11", 80) is not None,
           "LoadBalancer IP served to an allowed source")
    # Another source is reset at once by the proxy (kube-proxy drops it).
    edge = w.ns("edge")
    with pytest.raises(OSError):
        edge(ask, "198.18.200.11", 80, 1.0)
    # The ranges guard the LoadBalancer IP only, as in kube-proxy.
    assert edge(try_ask, NODE_IP["node1"], 30081) is not None


def test_traffic_policies_local_and_health_check_node_port(w):
    w.add_pod("loc-1", "node1")
    w.add_pod("loc-2", "node2")
    w.service(svc_obj("itp", "shop", "198.18.128.30",
                      [port("http", 80, 8080)],
                      internalTrafficPolicy="Local"))
    w.service(svc_obj("etp", "shop", "198.18.128.31",
                      [port("http", 80, 8080, 30090)], typ="LoadBalancer",
                      externalTrafficPolicy="Local",
                      healthCheckNodePort=32100), lb_ip="198.18.200.20")
    for s in ("itp", "etp"):
        w.endpoints(s, "shop", ["loc-1", "loc-2"])
    mine = {"node1": "loc-1", "node2": "loc-2"}
    for node in NODE_IP:
        cl = w.client[node]
        w.wait(lambda cl=cl: cl(try_ask, "198.18.128.30", 80) is not None,
               "itp on " + node)
        assert set(cl(ask_many, "198.18.128.30", 80, 8)) == {mine[node]}
        w.wait(lambda n=node: w.out(try_ask, NODE_IP[n], 30090) is not None,
               "etp NodePort on " + node)
        assert set(w.out(ask_many, NODE_IP[node], 30090, 8)) == {mine[node]}
    assert set(w.out(ask_many, "198.18.200.20", 80, 6)) == {"loc-1"}
    # ETP Local is for external traffic only: the ClusterIP spreads.
    assert set(w.client["node1"](ask_many, "198.18.128.31", 80, 8)) == {
        "loc-1", "loc-2"}

    def hc(node):
        try:
            return w.out(http_get, NODE_IP[node], 32100, "/")
        except OSError:
            return (None, {}, "")
    for node in NODE_IP:
        w.wait(lambda n=node: hc(n)[0] == 200, "health check 200 on " + node)
    st, hdrs, body = hc("node1")
    assert json.loads(body) == {
        "service": {"namespace": "shop", "name": "etp"},
        "localEndpoints": 1, "serviceProxyHealthy": True}
    assert hdrs.get("X-Load-Balancing-Endpoint-Weight") == "1"
    # node2's pod goes: its health check fails, node1's still passes.
    w.endpoints("etp", "shop", ["loc-1"])
    w.wait(lambda: hc("node2")[0] == 503, "health check 503 on node2")
    st, hdrs, body = hc("node2")
    assert json.loads(body)["localEndpoints"] == 0
    assert hdrs.get("X-Load-Balancing-Endpoint-Weight") == "0"
    assert hc("node1")[0] == 200
    # kube-proxy's own endpoints, on every node.
    for node in NODE_IP:
        for path in ("/healthz", "/livez", "/readyz"):
            st, _, body = w.out(http_get, NODE_IP[node], 10256, path)
            assert st == 200, (node, path, body)
        assert json.loads(w.out(http_get, NODE_IP[node], 10256,
                                "/healthz")[2])["nodeEligible"] is True


def _hold_port(ip, port):
    """A listening socket on <ip>:<port>, in the caller's namespace."""
    s = socket.socket()
    s.bind((ip, port))
    s.listen(1)
    return s


def test_health_check_port_taken_is_opened_on_a_later_change(w):
    """A healthCheckNodePort that another process holds is retried on
    each table change, an endpoint change included, until it opens; and
    once it is open, changes leave it be."""
    hold = w.ns("node1")(_hold_port, NODE_IP["node1"], 32110)
    try:
        w.add_pod("hb-1", "node1")
        w.service(svc_obj("hcheld", "shop", "198.18.128.32",
                          [port("http", 80, 8080, 30091)], typ="LoadBalancer",
                          externalTrafficPolicy="Local",
                          healthCheckNodePort=32110), lb_ip="198.18.200.21")
        w.endpoints("hcheld", "shop", ["hb-1"])
        w.wait(lambda: "health check port of shop/hcheld" in w.log(
            "node1.log"), "node1 finding port 32110 taken")
        # The slice in force too: what comes next is an endpoint change,
        # which patches the table in force rather than building it whole.
        w.wait(lambda: w.out(try_ask, NODE_IP["node1"], 30091) == "hb-1",
               "hcheld's NodePort on node1")
    finally:
        hold.close()

    def hc():
        try:
            return w.out(http_get, NODE_IP["node1"], 32110, "/")[0]
        except OSError:
            return None
    opened = "answering load balancer health checks for shop/hcheld on " \
        "%s:32110" % NODE_IP["node1"]
    before = w.log("node1.log").count(opened)
    w.add_pod("hb-2", "node1")
    w.endpoints("hcheld", "shop", ["hb-1", "hb-2"])
    w.wait(lambda: hc() == 200, "port 32110 opened on node1")
    st, _, body = w.out(http_get, NODE_IP["node1"], 32110, "/")
    assert json.loads(body)["localEndpoints"] == 2, body
    assert w.log("node1.log").count(opened) == before + 1
    # Another change: counted again, not opened again.
    w.endpoints("hcheld", "shop", ["hb-1"])
    w.wait(lambda: json.loads(w.out(http_get, NODE_IP["node1"], 32110,
                                    "/")[2])["localEndpoints"] == 1,
           "one local endpoint on node1")
    assert w.log("node1.log").count(opened) == before + 1


def test_session_affinity_client_ip(w):
    timeout = 2  # seconds without a new connection before a pin lapses
    w.service(svc_obj("sticky", "shop", "198.18.128.40",
                      [port("http", 80, 8080)], sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP":
                                             {"timeoutSeconds": timeout}}))
    w.endpoints("sticky", "shop", ["web-a", "web-b", "web-c"])
    c1 = w.client["node1"]
    vip = ("198.18.128.40", 80)
    last = [0.0]  # when this client's last connection had been answered

    def sticky(fn, *args):
        try:
            return c1(fn, *vip, *args)
        finally:
            last[0] = time.monotonic()

    def lapsed(what):
        # ferry stamps a pin when it takes the connection, before the
        # answer reaches us: <timeout> s after <last> the pin has lapsed.
        w.wait(lambda: time.monotonic() > last[0] + timeout + 0.2, what,
               timeout=timeout + 5)

    w.wait(lambda: sticky(try_ask) is not None, "sticky served")
    lapsed("the probe's pin lapsing (a clean slate)")
    got = sticky(ask_many, 10)
    assert len(set(got)) == 1, got
    first = got[0]
    # A table change in the service (a pod added) keeps the pin: asked
    # until node1's ferry serves the new table, and after.
    w.endpoints("sticky", "shop", ["web-a", "web-b", "web-c", "web-d"])
    seen = []

    def applied():
        seen.append(sticky(ask))
        return len(w.backends("node1", "shop/sticky:http")) == 4
    w.wait(applied, "node1 serving web-d")
    seen += sticky(ask_many, 5)
    assert set(seen) == {first}, seen
    # Inactive for longer than the timeout: the balancer decides again
    # (round-robin moves on to another pod).
    lapsed("the pin lapsing")
    again = sticky(ask_many, 5)
    assert len(set(again)) == 1 and again[0] != first, (first, again)


def test_rolling_update_scale_down_and_pod_replaced(w):
    for name, node in (("orange-1", "node1"), ("orange-2", "node2"),
                       ("orange-3", "node1")):
        w.add_pod(name, node)
    w.service(svc_obj("django", "shop", "198.18.128.50",
                      [port("http", 80, 8080)]))
    w.endpoints("django", "shop", ["orange-1", "orange-2", "orange-3"])
    c1 = w.client["node1"]
    vip = ("198.18.128.50", 80)
    w.wait(lambda: c1(try_ask, *vip) is not None, "django served")
    assert set(c1(ask_many, *vip, 9)) == {"orange-1", "orange-2", "orange-3"}
    load = Load(w.c.ns("pod-client1"), *vip, max_s=dl(60))
    try:
        # Replicas 3 -> 1: endpoints go before the pods do.
        w.endpoints("django", "shop", ["orange-1"])
        w.until_only(c1, *vip, ["orange-1"], "scaled to one")
        w.wait_all_workers("node1")
        w.del_pod("orange-2")
        w.del_pod("orange-3")
        # Rolling update to maroon: both versions serve one selector.
        w.add_pod("maroon-1", "node2")
        w.endpoints("django", "shop", ["orange-1", "maroon-1"])
        w.wait(lambda: set(c1(ask_many, *vip, 4)) == {"orange-1",
                                                      "maroon-1"},
               "orange and maroon both serving")
        w.add_pod("maroon-2", "node1")
        w.endpoints("django", "shop", ["orange-1", "maroon-1", "maroon-2"],
                    terminating=["orange-1"])
        w.until_only(c1, *vip, ["maroon-1", "maroon-2"], "orange retired")
        w.wait_all_workers("node1")
        w.del_pod("orange-1")
        # A pod deleted and replaced: the new one first, the old one
        # terminating, then gone.
        w.add_pod("maroon-3", "node2")
        w.endpoints("django", "shop", ["maroon-1", "maroon-2", "maroon-3"],
                    terminating=["maroon-1"])
        w.until_only(c1, *vip, ["maroon-2", "maroon-3"], "maroon-1 out")
        w.wait_all_workers("node1")
        w.del_pod("maroon-1")
        w.endpoints("django", "shop", ["maroon-2", "maroon-3"])
        t = time.monotonic()
        w.wait(lambda: len(load.since(t)) >= 10, "load after the rollout")
    finally:
        seen = load.stop()
    assert None not in seen, "%d of %d connections failed" % (
        seen.count(None), len(seen))
    assert {"orange-1", "maroon-1", "maroon-2", "maroon-3"} <= set(seen)


def test_readiness_probe_failing_under_load(w):
    for name, node in (("api-1", "node1"), ("api-2", "node2"),
                       ("api-3", "node1")):
        w.add_pod(name, node)
    w.service(svc_obj("api", "shop", "198.18.128.60",
                      [port("http", 80, 8080)]))
    all3 = ["api-1", "api-2", "api-3"]
    w.endpoints("api", "shop", all3)
    c1 = w.client["node1"]
    vip = ("198.18.128.60", 80)
    w.wait(lambda: set(c1(ask_many, *vip, 6)) == set(all3), "api served")
    load = Load(w.c.ns("pod-client1"), *vip, max_s=dl(40))
    try:
        w.wait(lambda: len(load.seen) > 20, "load running")
        w.endpoints("api", "shop", all3, not_ready=["api-2"])
        w.until_only(c1, *vip, ["api-1", "api-3"], "api-2 out of rotation")
        w.wait_all_workers("node1")
        t_out = time.monotonic()
        w.wait(lambda: len(load.since(t_out)) >= 30, "load while api-2 out")
        out_window = load.since(t_out)
        w.endpoints("api", "shop", all3)
        w.wait(lambda: "api-2" in c1(ask_many, *vip, 6), "api-2 back")
        t_back = time.monotonic()
        w.wait(lambda: "api-2" in load.since(t_back), "api-2 serving load")
    finally:
        seen = load.stop()
    assert "api-2" not in out_window
    assert None not in seen, "%d of %d connections failed" % (
        seen.count(None), len(seen))


def test_edge_pool_follows_the_api(w):
    """The F5 story without the F5: a ferry outside the cluster, with a
    kubeconfig and no node, serves the LoadBalancer IP of the Services its
    selector picks, straight to the ready pods."""
    tmp = w.tmp
    kc = os.path.join(tmp, "edge.kubeconfig")
    with open(kc, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                "clusters:\n- name: sim\n  cluster: {server: "
                "\"http://%s\"}\ncontexts:\n- name: sim\n  context: "
                "{cluster: sim, user: edge}\nusers:\n- name: edge\n  user: "
                "{token: edge-token}\n" % API)
    cfg = os.path.join(tmp, "edge.yaml")
    with open(cfg, "w") as f:
        f.write("log: {level: info}\ndrain_timeout: 1s\n"
                "defaults: {connect_timeout: 1s, retries: 2}\n"
                "kubernetes:\n  enabled: true\n  mode: edge\n"
                "  kubeconfig: %s\n  service_selector: \"edge=f5\"\n"
                "node:\n  vip_interface: lo\n"
                "  healthz_listen: 198.18.0.50:10256\n" % kc)
    # The outside world sends this LoadBalancer IP to the edge host.
    w.c.ip(w.c.ns("out"), "route", "add", "198.18.200.99/32", "via",
           "198.18.0.50")
    w.add_pod("sf-1", "node1")
    w.add_pod("sf-2", "node2")
    w.service(svc_obj("shopfront", "shop", "198.18.128.70",
                      [port("http", 80, 8080, 30070)], typ="LoadBalancer",
                      labels={"edge": "f5"}), lb_ip="198.18.200.99")
    # Not selected: the edge must not serve it.
    w.service(svc_obj("internal", "shop", "198.18.128.71",
                      [port("http", 80, 8080, 30071)], typ="LoadBalancer"),
              lb_ip="198.18.200.98")
    w.endpoints("shopfront", "shop", ["sf-1", "sf-2"])
    w.endpoints("internal", "shop", ["sf-1"])
    edge = w.spawn("edge", [ft.ferry_bin(), "-c", cfg], "edge.log")
    w.ferry["edge"] = edge
    w.wait(lambda: w.out(try_ask, "198.18.200.99", 80) is not None,
           "edge serving the LoadBalancer IP")
    vip = ("198.18.200.99", 80)
    assert set(w.out(ask_many, *vip, 6)) == {"sf-1", "sf-2"}
    edge_lo = w.c.ip(w.c.ns("edge"), "-o", "addr", "show", "dev", "lo")
    assert "198.18.200.99/32" in edge_lo
    assert "198.18.200.98" not in edge_lo and "198.18.128.70" not in edge_lo
    # Scale up, scale down, roll out: the pool follows each change.
    w.add_pod("sf-3", "node2")
    w.endpoints("shopfront", "shop", ["sf-1", "sf-2", "sf-3"])
    w.wait(lambda: set(w.out(ask_many, *vip, 6)) == {"sf-1", "sf-2", "sf-3"},
           "edge after scale-up")
    w.endpoints("shopfront", "shop", ["sf-3"])
    w.until_only(w.out, *vip, ["sf-3"], "edge after scale-down")
    w.add_pod("sf-4", "node1")
    w.endpoints("shopfront", "shop", ["sf-3", "sf-4"], terminating=["sf-3"])
    w.until_only(w.out, *vip, ["sf-4"], "edge after the rollout")
    assert w.ns("edge")(http_get, "198.18.0.50", 10256, "/readyz")[0] == 200
    assert w.stop(edge) == 0  # clean exit (and no leak under LeakSanitizer)

def test_edge_pool_to_node_ports(w):
    """The edge variant that sends connections to the nodes' NodePorts
    (kube-proxy, here the nodes' ferries, takes them on from there)."""
    tmp = w.tmp
    kc = os.path.join(tmp, "edge-np.kubeconfig")
    with open(kc, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                "clusters:\n- name: sim\n  cluster: {server: "
                "\"http://%s\"}\ncontexts:\n- name: sim\n  context: "
                "{cluster: sim, user: edge}\nusers:\n- name: edge\n  user: "
                "{token: edge-token}\n" % API)
    cfg = os.path.join(tmp, "edge-np.yaml")
    with open(cfg, "w") as f:
        f.write("log: {level: info}\ndrain_timeout: 1s\n"
                "defaults: {connect_timeout: 1s, retries: 2}\n"
                "kubernetes:\n  enabled: true\n  mode: edge\n"
                "  kubeconfig: %s\n  service_selector: \"edge=np\"\n"
                "  edge_backends: nodeports\n"
                "  edge_nodes: [198.18.0.11, 198.18.0.12]\n"
                "node:\n  vip_interface: lo\n"
                "  healthz_listen: 198.18.0.50:10257\n"
                "admin: {enabled: true, listen: 127.0.0.1:9991}\n" % kc)
    w.c.ip(w.c.ns("out"), "route", "add", "198.18.200.97/32", "via",
           "198.18.0.50")
    w.add_pod("np-1", "node1")
    w.add_pod("np-2", "node2")
    w.service(svc_obj("viaports", "shop", "198.18.128.72",
                      [port("http", 80, 8080, 30072)], typ="LoadBalancer",
                      labels={"edge": "np"}), lb_ip="198.18.200.97")
    w.endpoints("viaports", "shop", ["np-1", "np-2"])
    edge = w.spawn("edge", [ft.ferry_bin(), "-c", cfg], "edge-np.log")
    w.ferry["edge-np"] = edge
    vip = ("198.18.200.97", 80)
    w.wait(lambda: w.out(try_ask, *vip) is not None,
           "edge serving the LoadBalancer IP through the NodePorts")
    assert set(w.out(ask_many, *vip, 8)) == {"np-1", "np-2"}
    # The edge's backends are the nodes' NodePorts, not the pods.
    assert w.ns("edge")(http_get, "198.18.0.50", 10257, "/readyz")[0] == 200
    status = json.loads(w.ns("edge")(http_get, "127.0.0.1", 9991,
                                     "/status")[2])
    svc = [x for x in status["services"] if x["name"] == "shop/viaports:http"]
    assert len(svc) == 1, status
    assert sorted(b["address"] for b in svc[0]["backends"]) == \
        ["198.18.0.11:30072", "198.18.0.12:30072"]
    # A scale-down reaches the pods through the nodes' own tables.
    w.endpoints("viaports", "shop", ["np-2"])
    w.until_only(w.out, *vip, ["np-2"], "edge via NodePorts after scale-down")
    assert w.stop(edge) == 0



def _kernel_has_ifa_proto():
    try:
        major, minor = (int(x) for x in
                        os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= (5, 18)


@pytest.mark.skipif(not _kernel_has_ifa_proto(),
                    reason="IFA_PROTO (ferry's mark on its addresses) needs "
                    "Linux 5.18 or later")
def test_cleanup_restores_the_nodes(w):
    w.remove_pods()
    for node in NODE_IP:
        assert w.stop(w.ferry[node]) == 0
        assert "table inet ferry" in w.ruleset(node), "rules kept on exit"
        r = subprocess.run(w.c.exec_args(node) + [ft.ferry_bin(), "cleanup"],
                           capture_output=True, text=True, timeout=dl(20))
        assert r.returncode == 0, r.stderr
        assert "deleted table inet ferry" in r.stdout
        assert "table inet ferry" not in w.ruleset(node)
        # Namespaces (and the pods' veths) go away asynchronously.
        try:
            w.wait(lambda n=node: w.state(n) == w.before[n],
                   "%s as before ferry" % node, timeout=5)
        except ft.Timeout:
            assert w.state(node) == w.before[node]
