"""The kernel dataplane (proxy/node/nft.c) in network namespaces.

The engine is driven by tests/tools/nftdrive, which reads a JSON
description of kernel services, programs table inet ferry in the "node"
namespace and re-reads the file on SIGHUP. The lab, all in 198.18.0.0/15
and 2001:2::/48:

    out   198.18.0.100 (and .101), 2001:2::100   the outside world
            |  eth0
    node  198.18.0.11, 2001:2::11                 runs the rules
            |  cbr0 198.18.1.1, 2001:2:0:1::1 (bridge)
            |      pod-a .2, pod-b .3, pod-c .4  (echo servers)
            |  veth 198.18.2.1, 2001:2:0:2::1 (routed)
            |      cpod 198.18.2.10, 2001:2:0:2::10  (a client pod)
            |  up0: a default route to nowhere, so that a packet for a
            |       Service address nobody serves is routed, then refused

Cluster CIDRs (no masquerade from there): 198.18.1.0/24, 198.18.2.0/24 and
their IPv6 twins. ClusterIPs come from 198.18.128.0/17 (2001:2:0:80::/64),
LoadBalancer IPs from 198.18.200.0/24, externalIPs from 198.18.201.0/24;
"out" routes them all to the node.

Each pod's echo server greets a TCP connection with "<pod> <client IP>"
and echoes what follows; a UDP datagram shaped like a DNS query gets a
DNS answer with the same id and a TXT record "<pod> <client IP>". The
in-cluster client sits on its own routed link (not on the pods' bridge),
so replies always go back through the node's conntrack whether or not the
host has br_netfilter.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import ferrytest as ft  # noqa: E402
import netns  # noqa: E402

NODE4, NODE6 = "198.18.0.11", "2001:2::11"
OUT4, OUT4B, OUT6 = "198.18.0.100", "198.18.0.101", "2001:2::100"
PODS = {"pod-a": ("198.18.1.2", "2001:2:0:1::2"),
        "pod-b": ("198.18.1.3", "2001:2:0:1::3"),
        "pod-c": ("198.18.1.4", "2001:2:0:1::4")}
CPOD4, CPOD6 = "198.18.2.10", "2001:2:0:2::10"
BRIDGE4 = "198.18.1.1"  # the node's address toward the pods
CONF = {"masquerade": "cidr",
        "cluster_cidrs": ["198.18.1.0/24", "198.18.2.0/24",
                          "2001:2:0:1::/64", "2001:2:0:2::/64"],
        "service_cidrs": ["198.18.128.0/17", "2001:2:0:80::/64"]}
TCP_PORT, UDP_PORT = 8080, 5353


def drive_bin():
    d = os.environ.get("FERRY_BUILD_DIR")
    p = os.path.join(d, "tests", "tools", "nftdrive") if d else str(
        ft.REPO_ROOT / "build" / "tests" / "tools" / "nftdrive")
    return p if os.access(p, os.X_OK) else None


def sh(*args, check=True, input=None):
    r = subprocess.run(list(args), capture_output=True, text=True,
                       input=input, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def _why_skip():
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    if drive_bin() is None:
        return "tests/tools/nftdrive not built (set FERRY_BUILD_DIR)"
    ns = "kdprobe%d" % os.getpid()
    if sh("ip", "netns", "add", ns, check=False).returncode != 0:
        return "cannot create network namespaces"
    try:
        r = sh("ip", "netns", "exec", ns, "nft",
               "add table inet probe; add chain inet probe c { type nat hook "
               "prerouting priority dstnat; }; add rule inet probe c numgen "
               "random mod 2 vmap { 0 : accept, 1 : accept }", check=False)
        if r.returncode != 0:
            return "the kernel lacks nftables (NAT, numgen): " + \
                r.stderr.strip()
    finally:
        sh("ip", "netns", "del", ns, check=False)
    return None


SKIP = _why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

# ---- code inside a namespace -------------------------------------------

InNs = netns.InNs


# ---- the pods' echo server --------------------------------------------

SERVER = r'''
import selectors, socket, struct, sys
name = sys.argv[1]
sel = selectors.DefaultSelector()
def peer_ip(a):
    ip = a[0]
    return ip[7:] if ip.startswith("::ffff:") else ip
def listen(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(128)
    s.setblocking(False)
    return s
tl = listen(socket.SOCK_STREAM, int(sys.argv[2]))
ul = listen(socket.SOCK_DGRAM, int(sys.argv[3]))
sel.register(tl, selectors.EVENT_READ, "accept")
sel.register(ul, selectors.EVENT_READ, "udp")
def dns_answer(q, text):
    if len(q) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", q[:6])
    if qd != 1 or flags & 0x8000:
        return None
    end = 12
    while end < len(q) and q[end] != 0:
        end += q[end] + 1
    question = q[12:end + 5]
    t = text.encode()
    rr = struct.pack("!HHHIH", 0xC00C, 16, 1, 0, len(t) + 1) + bytes([len(t)]) + t
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "accept":
            try:
                c, a = tl.accept()
            except OSError:
                continue
            c.setblocking(False)
            try:
                c.send(("%s %s\n" % (name, peer_ip(a))).encode())
            except OSError:
                c.close()
                continue
            sel.register(c, selectors.EVENT_READ, "conn")
        elif key.data == "udp":
            try:
                d, a = ul.recvfrom(2048)
            except OSError:
                continue
            text = "%s %s" % (name, peer_ip(a))
            ans = dns_answer(d, text)
            ul.sendto(ans if ans else text.encode(), a)
        else:
            c = key.fileobj
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            if not d:
                sel.unregister(c)
                c.close()
            else:
                try:
                    c.sendall(d)
                except OSError:
                    pass
'''

HOST_LISTENER = r'''
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"HOST\n")
        finally:
            c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''


def stop_proc(p, timeout=5.0):
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=timeout)


def wait_ready_line(p, what):
    """The process prints "ready" once listening; a bounded wait."""
    line = [None]

    def read():
        line[0] = p.stdout.readline()
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(ft.DEADLINE)
    if not line[0] or b"ready" not in line[0]:
        stop_proc(p)
        raise RuntimeError(f"{what} did not start")


# ---- the lab -----------------------------------------------------------


class Lab:
    def __init__(self, tmp):
        self.p = "kd" + uuid.uuid4().hex[:6]
        self.tmp = tmp
        self.namespaces = []
        self.procs = []
        self.drive = None
        self.seq = 0
        self.file = os.path.join(tmp, "services.json")
        self.out_path = os.path.join(tmp, "nftdrive.out")
        self.err_path = os.path.join(tmp, "nftdrive.err")
        self.threads = {}
        try:
            self._build()
        except Exception:
            self.destroy()
            raise

    def ns(self, name):
        return f"{self.p}-{name}"

    def ip(self, name, *args):
        return sh("ip", "-n", self.ns(name), *args)

    def run_in(self, name, *args, check=True, input=None):
        return sh("ip", "netns", "exec", self.ns(name), *args, check=check,
                  input=input)

    def _add_ns(self, name):
        sh("ip", "netns", "add", self.ns(name))
        self.namespaces.append(self.ns(name))
        # No duplicate address detection, link-local addresses included:
        # a tentative address delays neighbour discovery.
        for k in ("all", "default"):
            self.run_in(name, "sysctl", "-qw",
                        f"net.ipv6.conf.{k}.accept_dad=0")
        self.ip(name, "link", "set", "lo", "up")

    def _veth(self, a, b, name_a, name_b):
        tmp_a, tmp_b = f"{self.p}x{len(self.namespaces)}", \
            f"{self.p}y{len(self.namespaces)}"
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", self.ns(a))
        sh("ip", "link", "set", tmp_b, "netns", self.ns(b))
        self.ip(a, "link", "set", tmp_a, "name", name_a)
        self.ip(b, "link", "set", tmp_b, "name", name_b)

    def _addr(self, name, dev, *cidrs):
        for c in cidrs:
            extra = ["nodad"] if ":" in c else []
            self.ip(name, "addr", "add", c, "dev", dev, *extra)
        self.ip(name, "link", "set", dev, "up")

    def _build(self):
        for n in ("node", "out", "cpod"):
            self._add_ns(n)
        for k in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            self.run_in("node", "sysctl", "-qw", k)
        # An unrelated table the cleanup must leave as it is.
        self.run_in("node", "nft", "add table ip bystander; add chain ip "
                    "bystander input { type filter hook input priority 0; "
                    "policy accept; }; add rule ip bystander input tcp dport "
                    "9 counter")
        self._veth("node", "out", "eth0", "eth0")
        self._addr("node", "eth0", NODE4 + "/24", NODE6 + "/64")
        self._addr("out", "eth0", OUT4 + "/24", OUT4B + "/24", OUT6 + "/64")
        for r in ("198.18.128.0/17", "198.18.200.0/24", "198.18.201.0/24",
                  "198.18.1.0/24", "198.18.2.0/24"):
            self.ip("out", "route", "add", r, "via", NODE4)
        for r in ("2001:2:0:80::/64", "2001:2:0:1::/64", "2001:2:0:2::/64"):
            self.ip("out", "-6", "route", "add", r, "via", NODE6)
        # A default route on a link that leads nowhere (a veth pair: not
        # every kernel has the dummy link type).
        self.ip("node", "link", "add", "up0", "type", "veth", "peer", "name",
                "up1")
        self.ip("node", "link", "set", "up1", "up")
        self.ip("node", "link", "set", "up0", "up")
        self.ip("node", "route", "add", "default", "dev", "up0")
        self.ip("node", "-6", "route", "add", "default", "dev", "up0")
        self.ip("node", "link", "add", "cbr0", "address", "02:00:c6:12:01:01",
                "type", "bridge")
        self._addr("node", "cbr0", BRIDGE4 + "/24", "2001:2:0:1::1/64")
        for i, (pod, (v4, v6)) in enumerate(sorted(PODS.items())):
            self._add_ns(pod)
            self._veth("node", pod, f"vp{i}", "eth0")
            self.ip("node", "link", "set", f"vp{i}", "master", "cbr0")
            # As a CNI bridge does (hairpinMode): with br_netfilter, a pod
            # reaching itself through a Service is bridged back out of the
            # port it came in on.
            self.ip("node", "link", "set", f"vp{i}", "type", "bridge_slave",
                    "hairpin", "on")
            self.ip("node", "link", "set", f"vp{i}", "up")
            self._addr(pod, "eth0", v4 + "/24", v6 + "/64")
            self.ip(pod, "route", "add", "default", "via", BRIDGE4)
            self.ip(pod, "-6", "route", "add", "default", "via",
                    "2001:2:0:1::1")
            self.start_proc(["ip", "netns", "exec", self.ns(pod),
                             sys.executable, "-c", SERVER, pod,
                             str(TCP_PORT), str(UDP_PORT)], pod)
        self._veth("node", "cpod", "vc0", "eth0")
        self._addr("node", "vc0", "198.18.2.1/24", "2001:2:0:2::1/64")
        self._addr("cpod", "eth0", CPOD4 + "/24", CPOD6 + "/64")
        self.ip("cpod", "route", "add", "default", "via", "198.18.2.1")
        self.ip("cpod", "-6", "route", "add", "default", "via",
                "2001:2:0:2::1")
        self.ruleset_before = self.ruleset()
        self._wait_paths()

    def _wait_paths(self):
        """Every pod answers the client pod and the outside host straight
        (no Service), in both families: the lab is up."""
        def direct(ip):
            try:
                return tcp_hello(ip, TCP_PORT, timeout=0.5)[0]
            except OSError:
                return None
        for where in ("cpod", "out"):
            t = self.in_ns(where)
            for pod, (v4, v6) in PODS.items():
                for a in (v4, v6):
                    ft.wait_for(lambda: t(direct, a) == pod,
                                what=f"{where} to reach {pod} at {a}")

    def start_proc(self, args, what):
        p = subprocess.Popen(args, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        wait_ready_line(p, what)
        return p

    def ruleset(self):
        return self.run_in("node", "nft", "list", "ruleset").stdout

    def in_ns(self, name):
        if name not in self.threads:
            self.threads[name] = InNs(self.ns(name), threads=4)
        return self.threads[name]

    # -- the driver -------------------------------------------------------
    def write(self, services, conf=None):
        doc = {"config": conf or CONF, "services": services}
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.file)

    def out_lines(self):
        try:
            with open(self.out_path) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def _wait_applied(self, after):
        def done():
            for line in self.out_lines()[after:]:
                if line.startswith("applied"):
                    return True
                if line.startswith("error"):
                    raise AssertionError("nftdrive: " + line)
            return False
        ft.wait_for(done, what="nftdrive to apply the services")

    def start_drive(self, services=None):
        if services is not None:
            self.write(services)
        mark = len(self.out_lines())
        out = open(self.out_path, "a")
        err = open(self.err_path, "a")
        self.drive = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("node"), drive_bin(), "run",
             self.file, "200"], stdout=out, stderr=err)
        out.close()
        err.close()
        self._wait_applied(mark)

    def stop_drive(self):
        p, self.drive = self.drive, None
        if p is not None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=ft.DEADLINE)
            return p.returncode
        return None

    def fresh_engine(self):
        """A new driver adopting the table with no services: the counts
        earlier tests left idle, which keep their rules in the old
        driver's engine (and so spare a text), are gone."""
        assert self.stop_drive() == 0
        self.start_drive([])

    def apply(self, services):
        """Rewrite the description and wait until the driver applied it."""
        mark = len(self.out_lines())
        self.write(services)
        self.drive.send_signal(signal.SIGHUP)
        self._wait_applied(mark)

    def counts(self):
        """The engine's counters of the driver's last "applied" line:
        {"texts": N, "epmaps": N, "lean": N}."""
        lines = [ln for ln in self.out_lines() if ln.startswith("applied")]
        return {k: int(v) for k, v in (w.split("=", 1)
                                       for w in lines[-1].split()[2:])}

    def lean(self):
        """Updates the driver committed in lean transactions so far."""
        return self.counts()["lean"]

    def destroy(self):
        stop_proc(self.drive)
        for p in self.procs:
            stop_proc(p)
        for t in self.threads.values():
            t.close()
        for n in reversed(self.namespaces):
            sh("ip", "netns", "del", n, check=False)
        self.namespaces = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lb = Lab(str(tmp_path_factory.mktemp("kernel")))
    try:
        lb.start_drive([])
        yield lb
    finally:
        lb.destroy()


# ---- clients -----------------------------------------------------------


def tcp_hello(ip, port, src=None, timeout=2.0):
    """Connect, read the greeting; returns (pod, client IP seen)."""
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if src:
            s.bind((src, 0))
        s.connect((ip, port))
        line = ft.read_line(s, timeout=timeout)
    parts = line.split()
    return parts[0], parts[1] if len(parts) > 1 else None


def tcp_try(ip, port, src=None, timeout=1.0):
    """The greeting's pod, or the error's class name."""
    try:
        return tcp_hello(ip, port, src, timeout)[0]
    except (ConnectionRefusedError, ConnectionResetError) as e:
        return type(e).__name__
    except (socket.timeout, TimeoutError):
        return "timeout"


def dns_query(sock, qid):
    """Send a TXT query for svc.test; returns the answer's (pod, client IP)
    after checking it answers this query."""
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in (b"svc", b"test"):
        q += bytes([len(label)]) + label
    q += b"\x00" + struct.pack("!HH", 16, 1)
    sock.send(q)
    ans = sock.recv(2048)
    rid, flags, qd, an = struct.unpack("!HHHH", ans[:8])
    assert rid == qid and flags & 0x8000 and qd == 1 and an == 1, ans
    at = len(q)  # the question is echoed back as it was
    assert ans[12:at] == q[12:], ans
    rtype, _, _, rdlen = struct.unpack("!HHIH", ans[at + 2:at + 12])
    rdata = ans[at + 12:at + 12 + rdlen]
    assert rtype == 16 and rdata[0] == rdlen - 1, ans
    pod, seen = rdata[1:].decode().split()
    return pod, seen


def udp_ask(ip, port, src=None, timeout=2.0):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        if src:
            s.bind(src)
        s.connect((ip, port))
        return dns_query(s, random.randrange(1, 65535))


# ---- services ----------------------------------------------------------


def ep(pod, port=TCP_PORT, v6=False, weight=1):
    return {"ip": PODS[pod][1 if v6 else 0], "port": port, "weight": weight}


def svc(name, port=80, proto="tcp", cips=("198.18.128.10",), eps=("pod-a",
        "pod-b"), **kw):
    tport = TCP_PORT if proto == "tcp" else UDP_PORT
    d = {"id": f"default/{name}:p", "protocol": proto, "port": port,
         "cluster_ips": list(cips),
         "cluster_endpoints": [ep(p, tport) for p in eps]}
    d.update(kw)
    return d


def keyed_maps(lab, fam=4, proto="tcp"):
    """Layout 4's keyed maps of family <fam> and <proto>, read back:
    {count: {(address, port): [endpoint "ip:port" of key 0, 1, ...]}}."""
    pre = "keys%d-%s-" % (fam, proto)
    out = {}
    for o in json.loads(lab.run_in("node", "nft", "-j", "list", "maps",
                                   "inet").stdout)["nftables"]:
        name = o.get("map", {}).get("name", "")
        if not name.startswith(pre):
            continue
        got = {}
        doc = json.loads(lab.run_in("node", "nft", "-j", "list", "map",
                                    "inet", "ferry", name).stdout)
        for x in doc["nftables"]:
            for k, v in x.get("map", {}).get("elem", []):
                ip, port, i = k["concat"]
                got.setdefault((ip, port), {})[i] = \
                    "%s:%d" % tuple(v["concat"])
        out[int(name[len(pre):])] = {k: [v[i] for i in sorted(v)]
                                     for k, v in got.items()}
    return out


def keyed(lab, fam=4, proto="tcp"):
    """{(address, port): [endpoint of each key]} over every count."""
    return {k: v for m in keyed_maps(lab, fam, proto).values()
            for k, v in m.items()}


def counts_of(lab, fam=4, proto="tcp"):
    """{count: sorted [(address, port), ...]} of the keyed maps."""
    return {n: sorted(m) for n, m in keyed_maps(lab, fam, proto).items()}


def traced(out, *args, calls="sendto"):
    """The driver run with <args> under strace, its system calls <calls>
    (its netlink sends by default) traced into <out>. LeakSanitizer cannot
    run under ptrace: a sanitized driver's leak check is left off for this
    run."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return ("strace", "-f", "-qq", "-e", "trace=" + calls, "-o", out, "env",
            "ASAN_OPTIONS=" + ":".join(x for x in (asan, "detect_leaks=0")
                                       if x),
            drive_bin()) + args


def hits(fn, n):
    seen = {}
    for _ in range(n):
        pod = fn()
        seen[pod] = seen.get(pod, 0) + 1
    return seen


def connect_until(stop, ip, pods, counts):
    """Connect to <ip>:80 until <stop> is set (or 100,000 times), counting
    answers from <pods> in counts["ok"] and anything else in
    counts["fail"]."""
    for _ in range(100000):
        if stop.is_set():
            return
        r = tcp_try(ip, 80)
        if r in pods:
            counts["ok"] += 1
        else:
            counts["fail"].append(r)


# ---- tests -------------------------------------------------------------


def test_tcp_cluster_ip_spreads_and_keeps_client_ip(lab):
    lab.apply([svc("web")])
    c = lab.in_ns("cpod")
    got = c(lambda: hits(lambda: tcp_hello("198.18.128.10", 80)[0], 40))
    assert set(got) == {"pod-a", "pod-b"}, got
    # An in-cluster client is seen as itself: no masquerade.
    assert c(tcp_hello, "198.18.128.10", 80)[1] == CPOD4


def test_no_chain_per_endpoint_but_for_affinity(lab):
    lab.apply([svc("web", eps=("pod-a", "pod-b", "pod-c")),
               svc("sticky", cips=("198.18.128.12",), affinity_timeout=60),
               heavy("np", "198.18.128.13", ("pod-a", 1), ("pod-b", 256)),
               svc("np2", cips=("198.18.128.15",), node_port=30015)])
    chains = json.loads(lab.run_in("node", "nft", "-j", "list", "chains",
                                   "inet").stdout)["nftables"]
    names = [c["chain"]["name"] for c in chains if "chain" in c]
    # A plain Service has no chain of its own (layout 4): its ClusterIP
    # leads to the TCP pick chain, and its endpoints are three keys of
    # the shared map.
    assert not [n for n in names if "default/web/" in n], names
    assert len([n for n in names if n.startswith("ep4-default/sticky/")]) \
        == 2, names
    out = lab.run_in("node", "nft", "list", "chain", "inet", "ferry",
                     "pick4-tcp").stdout
    assert "jump pick4-tcp-3" in out, out
    out = lab.run_in("node", "nft", "list", "chain", "inet", "ferry",
                     "pick4-tcp-3").stdout
    assert "dnat ip to ip daddr . tcp dport . numgen random mod 3 map " \
        "@keys4-tcp-3" in out, out
    assert keyed(lab)[("198.18.128.10", 80)] == [
        "198.18.1.2:8080", "198.18.1.3:8080", "198.18.1.4:8080"]
    assert counts_of(lab)[3] == [("198.18.128.10", 80)]
    assert "198.18.128.10 . tcp . 80 : goto pick4-tcp" in lab.run_in(
        "node", "nft", "list", "map", "inet", "ferry", "svc4").stdout
    # A NodePort under externalTrafficPolicy: Cluster is keyed by its
    # port alone; its ClusterIP as any.
    out = lab.run_in("node", "nft", "list", "map", "inet", "ferry",
                     "keysn4-tcp-2").stdout
    assert "30015 . 0 : 198.18.1.2 . 8080" in out, out
    assert "tcp . 30015 : goto pickn4-tcp" in lab.run_in(
        "node", "nft", "list", "map", "inet", "ferry", "nodeports4").stdout
    # A Service of more than 256 keys keeps its chain, whose one rule,
    # whatever the endpoints, picks from its endpoint map: each endpoint
    # owns a share of the random number, in proportion to its weight.
    out = lab.run_in("node", "nft", "list", "chain", "inet", "ferry",
                     "svc4-default/np/p/tcp").stdout
    assert "dnat ip to numgen random mod 16777216 map " \
        "@em4-default/np/p/tcp" in out, out
    out = lab.run_in("node", "nft", "list", "map", "inet", "ferry",
                     "em4-default/np/p/tcp").stdout
    assert "elements = { 0-65279 : 198.18.1.2 . 8080, " \
        "65280-16777215 : 198.18.1.3 . 8080 }" in out, out
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.10", 80)[0], 60))
    assert set(got) == {"pod-a", "pod-b", "pod-c"}, got
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.13", 80)[0], 20))
    assert set(got) <= {"pod-a", "pod-b"} and got.get("pod-b", 0) >= 15, got


def heavy(name, cip, *eps):
    """A Service whose endpoints (pod, weight) add up to more keys than
    layout 4's 256: it keeps a chain and an endpoint map of its own."""
    s = svc(name, cips=(cip,), eps=[p for p, _ in eps])
    for e, (_, w) in zip(s["cluster_endpoints"], eps):
        e["weight"] = w
    return s


def test_weights_are_numbers_of_keys(lab):
    # A plain Service's weights become numbers of keys over their common
    # factor: weights 2 and 4 are one key and two.
    s = svc("weighted", cips=("198.18.128.14",), eps=("pod-a", "pod-b"))
    s["cluster_endpoints"][0]["weight"] = 2
    s["cluster_endpoints"][1]["weight"] = 4
    lab.apply([s])
    assert keyed(lab)[("198.18.128.14", 80)] == [
        "198.18.1.2:8080", "198.18.1.3:8080", "198.18.1.3:8080"]
    assert ("198.18.128.14", 80) in counts_of(lab)[3]
    # Past NFTGEN_KEYS_MAX (256) keys, the Service has a map of its own.
    s["cluster_endpoints"][0]["weight"] = 1
    s["cluster_endpoints"][1]["weight"] = 256
    lab.apply([s])
    assert ("198.18.128.14", 80) not in keyed(lab)
    assert "em4-default/weighted/p/tcp" in lab.run_in(
        "node", "nft", "list", "maps", "inet").stdout
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.14", 80)[0], 20))
    assert set(got) <= {"pod-a", "pod-b"} and got.get("pod-b", 0) >= 15, got


def test_dual_stack_each_family_to_its_own_endpoints(lab):
    s = svc("web6", cips=("198.18.128.11", "2001:2:0:80::b"))
    s["cluster_endpoints"] = [ep("pod-a"), ep("pod-b", v6=True)]
    lab.apply([s])
    c = lab.in_ns("cpod")
    assert c(tcp_hello, "2001:2:0:80::b", 80) == ("pod-b", CPOD6)
    assert c(tcp_hello, "198.18.128.11", 80) == ("pod-a", CPOD4)


def test_udp_cluster_ip_dns_shaped(lab):
    lab.apply([svc("dns", port=53, proto="udp", cips=("198.18.128.53",))])
    c = lab.in_ns("cpod")
    got = c(lambda: hits(lambda: udp_ask("198.18.128.53", 53)[0], 30))
    assert set(got) == {"pod-a", "pod-b"}, got
    assert c(udp_ask, "198.18.128.53", 53)[1] == CPOD4


def test_outside_client_to_cluster_ip_is_masqueraded(lab):
    lab.apply([svc("web")])
    # From outside the cluster CIDRs: the pod sees the node.
    assert lab.in_ns("out")(tcp_hello, "198.18.128.10", 80)[1] == BRIDGE4


def test_nodeport_lb_and_external_ip(lab):
    lab.apply([svc("web", node_port=30080, lb_ips=["198.18.200.1"],
                   external_ips=["198.18.201.1"])])
    o = lab.in_ns("out")
    for ip, port in ((NODE4, 30080), ("198.18.200.1", 80),
                     ("198.18.201.1", 80)):
        got = o(lambda: hits(lambda: tcp_hello(ip, port)[0], 20))
        assert set(got) == {"pod-a", "pod-b"}, (ip, got)
        # externalTrafficPolicy Cluster: masqueraded.
        assert o(tcp_hello, ip, port)[1] == BRIDGE4


def test_service_deleted_keeps_open_connection_refuses_new(lab):
    lab.apply([svc("web")])
    c = lab.in_ns("cpod")

    def opened():
        s = socket.create_connection(("198.18.128.10", 80), timeout=2)
        s.settimeout(2)
        ft.read_line(s)
        s.sendall(b"one\n")
        assert ft.read_line(s) == "one"
        return s
    s = c(opened)
    try:
        lab.apply([])
        s.sendall(b"two\n")
        assert ft.read_line(s, timeout=2) == "two"
        # A new connection is refused at once, not left to time out.
        t0 = time.monotonic()
        assert c(tcp_try, "198.18.128.10", 80, None, 3.0) == \
            "ConnectionRefusedError"
        assert time.monotonic() - t0 < 1.0
        s.sendall(b"three\n")
        assert ft.read_line(s, timeout=2) == "three"
    finally:
        s.close()


def test_no_endpoints_refused_at_once(lab):
    lab.apply([svc("empty", cips=("198.18.128.20",), eps=()),
               svc("emptyu", port=53, proto="udp", cips=("198.18.128.20",),
                   eps=(), node_port=30053),
               svc("emptyn", port=81, cips=("198.18.128.20",), eps=(),
                   node_port=30081)])
    c, o = lab.in_ns("cpod"), lab.in_ns("out")
    t0 = time.monotonic()
    assert c(tcp_try, "198.18.128.20", 80, None, 3.0) == \
        "ConnectionRefusedError"
    assert o(tcp_try, NODE4, 30081, None, 3.0) == "ConnectionRefusedError"
    assert time.monotonic() - t0 < 1.0

    def udp_refused():
        with pytest.raises(ConnectionRefusedError):
            udp_ask("198.18.128.20", 53, timeout=3.0)
    c(udp_refused)
    # A ClusterIP on a port no Service has is refused too.
    assert c(tcp_try, "198.18.128.20", 82, None, 3.0) == \
        "ConnectionRefusedError"


def test_host_listener_does_not_take_service_traffic(lab):
    host = lab.start_proc(["ip", "netns", "exec", lab.ns("node"),
                           sys.executable, "-c", HOST_LISTENER, "80",
                           "30080"], "host listener")
    try:
        lab.apply([svc("web", node_port=30080)])
        o, c = lab.in_ns("out"), lab.in_ns("cpod")
        got = o(lambda: hits(lambda: tcp_try(NODE4, 30080), 10))
        got2 = c(lambda: hits(lambda: tcp_try("198.18.128.10", 80), 10))
        assert set(got) <= {"pod-a", "pod-b"}, got
        assert set(got2) <= {"pod-a", "pod-b"}, got2
        # The listener is there: its own port answers it.
        assert o(tcp_try, NODE4, 80) == "HOST"
    finally:
        stop_proc(host)


def test_load_balancer_source_ranges(lab):
    lab.apply([svc("fw", lb_ips=["198.18.200.2"],
                   source_ranges=[OUT4 + "/32"])])
    o = lab.in_ns("out")
    assert o(tcp_try, "198.18.200.2", 80, OUT4) in ("pod-a", "pod-b")
    # Another source is dropped (not refused: no answer at all).
    assert o(tcp_try, "198.18.200.2", 80, OUT4B, 1.0) == "timeout"


def test_session_affinity_client_ip(lab):
    lab.apply([svc("sticky", eps=("pod-a", "pod-b", "pod-c"),
                   affinity_timeout=600)])
    got = lab.in_ns("cpod")(
        lambda: hits(lambda: tcp_hello("198.18.128.10", 80)[0], 20))
    assert len(got) == 1, got


def test_external_traffic_policy_local(lab):
    s = svc("local", lb_ips=["198.18.200.3"], node_port=30090,
            external_traffic_policy="Local")
    s["local_endpoints"] = [ep("pod-a")]
    lab.apply([s])
    o, c = lab.in_ns("out"), lab.in_ns("cpod")
    for ip, port in (("198.18.200.3", 80), (NODE4, 30090)):
        got = o(lambda: hits(lambda: tcp_hello(ip, port), 15))
        # Only the local endpoint, and it sees the client's own IP.
        assert set(got) == {("pod-a", OUT4)}, (ip, got)
    # Pods reach every endpoint through the same address and the
    # NodePort, and so does the node itself.
    got = c(lambda: hits(lambda: tcp_hello("198.18.200.3", 80)[0], 30))
    assert set(got) == {"pod-a", "pod-b"}, got
    got = c(lambda: hits(lambda: tcp_hello(NODE4, 30090)[0], 30))
    assert set(got) == {"pod-a", "pod-b"}, got
    got = lab.in_ns("node")(lambda: hits(
        lambda: tcp_hello("198.18.200.3", 80)[0], 30))
    assert set(got) == {"pod-a", "pod-b"}, got
    # No local endpoint: outside traffic is dropped, pods still served.
    s["local_endpoints"] = []
    lab.apply([s])
    assert o(tcp_try, "198.18.200.3", 80, None, 1.0) == "timeout"
    assert c(tcp_try, "198.18.200.3", 80) in ("pod-a", "pod-b")


def test_hairpin_pod_reaches_itself(lab):
    s = svc("hair", cips=("198.18.128.10", "2001:2:0:80::a"), eps=("pod-a",))
    s["cluster_endpoints"].append(ep("pod-a", v6=True))
    lab.apply([s])
    pa = lab.in_ns("pod-a")
    assert pa(tcp_hello, "198.18.128.10", 80) == ("pod-a", BRIDGE4)
    assert pa(tcp_hello, "2001:2:0:80::a", 80) == ("pod-a", "2001:2:0:1::1")


def test_hairpin_kept_while_another_service_has_the_pod(lab):
    # One set of endpoint pairs serves every Service: the pair stays while
    # any Service still sends to the pod.
    a = svc("hair", eps=("pod-a",))
    b = svc("hair2", cips=("198.18.128.11",), eps=("pod-a", "pod-b"))
    lab.apply([a, b])
    lab.apply([b])
    pa = lab.in_ns("pod-a")
    got = {pa(tcp_hello, "198.18.128.11", 80) for _ in range(30)}
    assert ("pod-a", BRIDGE4) in got, got
    # pod-b reached from pod-a keeps the client's address.
    assert ("pod-b", PODS["pod-a"][0]) in got, got
    lab.apply([svc("hair2", cips=("198.18.128.11",), eps=("pod-b",))])
    out = lab.run_in("node", "nft", "list", "set", "inet", "ferry",
                     "hairpin4").stdout
    assert "198.18.1.3 . 198.18.1.3" in out and "198.18.1.2 " not in out, out


def test_remote_endpoints_get_no_hairpin_pair(lab):
    # Only a pod on this node reaches itself through it: an endpoint its
    # slice places on another node gets no pair, and one that comes here
    # gets it.
    s = svc("far", cips=("198.18.128.33",), eps=("pod-a", "pod-b"))
    s["cluster_endpoints"][1]["remote"] = True
    lab.apply([s])

    def pairs():
        return lab.run_in("node", "nft", "list", "set", "inet", "ferry",
                          "hairpin4").stdout
    assert "198.18.1.2 . 198.18.1.2" in pairs()
    assert "198.18.1.3 . 198.18.1.3" not in pairs()
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.33", 80)[0], 30))
    assert set(got) == {"pod-a", "pod-b"}, got
    s["cluster_endpoints"][1]["remote"] = False
    lab.apply([s])
    assert "198.18.1.3 . 198.18.1.3" in pairs()
    assert lab.in_ns("pod-b")(tcp_hello, "198.18.128.33", 80) in \
        (("pod-b", BRIDGE4), ("pod-a", PODS["pod-b"][0]))
    lab.apply([])


def test_endpoint_changes_skip_libnftables_set_fetch(lab):
    # An endpoint leaving or coming back is one netlink transaction: the
    # Service's endpoint map rewritten, the shared sets' new elements
    # added (a hairpin pair), those it leaves unused deleted; no rule
    # changes, and libnftables (which would first fetch every set of the
    # table: 10,000 maps at 10,000 Services) is not involved.
    # A plain Service's change is its keys (layout 4); one of more than
    # 256 keys has a map of its own, rewritten.
    a = svc("lean", cips=("198.18.128.20",), eps=("pod-a", "pod-b"))
    b = svc("lean2", cips=("198.18.128.21",), eps=("pod-c",))
    np = heavy("leannp", "198.18.128.23", ("pod-a", 256), ("pod-b", 1))
    lab.fresh_engine()
    lab.apply([a, b, np])
    c0 = lab.counts()
    lab.apply([svc("lean", cips=("198.18.128.20",), eps=("pod-a",)), b,
               heavy("leannp", "198.18.128.23", ("pod-a", 256),
                     ("pod-c", 1))])
    c1 = lab.counts()
    assert c1["keyed"] == c0["keyed"] + 1, (c0, c1)
    assert c1["epmaps"] == c0["epmaps"] + 1, (c0, c1)
    assert c1["texts"] == c0["texts"], (c0, c1)
    assert keyed(lab)[("198.18.128.20", 80)] == ["198.18.1.2:8080"]
    assert counts_of(lab)[1] == [("198.18.128.20", 80),
                                 ("198.18.128.21", 80)]

    def elems(name):
        return lab.run_in("node", "nft", "list", "set", "inet", "ferry",
                          name).stdout
    assert "198.18.1.3 . 198.18.1.3" not in elems("hairpin4")
    assert "198.18.1.2 . 198.18.1.2" in elems("hairpin4")
    lab.apply([a, b])  # and the NodePort Service deleted
    c2 = lab.counts()
    assert c2["keyed"] == c1["keyed"] + 1, (c1, c2)
    assert ("198.18.128.20", 80) in counts_of(lab)[2]
    assert "198.18.1.3 . 198.18.1.3" in elems("hairpin4")
    # A new Service rewrites chains: one lean libnftables transaction.
    d = svc("lean3", cips=("198.18.128.22",), eps=("pod-b",))
    lab.apply([a, b, d])
    c3 = lab.counts()
    assert c3["texts"] == c2["texts"] + 1, (c2, c3)
    assert c3["lean"] == c2["lean"] + 1, (c2, c3)
    assert "198.18.128.22" in elems("cluster-ips4")
    lab.apply([a, b])
    cp = lab.in_ns("cpod")
    got = {cp(tcp_hello, "198.18.128.20", 80)[0] for _ in range(30)}
    assert got == {"pod-a", "pod-b"}, got
    # A Service deleted: its ClusterIP and pairs go too.
    lab.apply([a])
    assert "198.18.128.21" not in elems("cluster-ips4")
    assert "198.18.128.20" in elems("cluster-ips4")
    assert "198.18.1.4 . 198.18.1.4" not in elems("hairpin4")
    # A count new to the node: one text (its map, its chain, the jump;
    # count 1, idle since lean2 and lean3 went, keeps its rule), then
    # the keys. Back to a count that kept its rule: no text.
    c4 = lab.counts()
    lab.apply([svc("lean", cips=("198.18.128.20",),
                   eps=("pod-a", "pod-b", "pod-c"))])
    c5 = lab.counts()
    assert c5["texts"] == c4["texts"] + 1, (c4, c5)
    assert counts_of(lab) == {1: [], 2: [], 3: [("198.18.128.20", 80)]}
    lab.apply([svc("lean", cips=("198.18.128.20",), eps=("pod-c",))])
    c6 = lab.counts()
    assert c6["texts"] == c5["texts"], (c5, c6)
    assert counts_of(lab) == {1: [("198.18.128.20", 80)], 2: [], 3: []}
    assert lab.in_ns("cpod")(tcp_hello, "198.18.128.20", 80)[0] == "pod-c"


def test_endpoint_changes_under_load_refuse_no_connection(lab):
    # Each change rewrites the Service's keys, and moves its address to
    # the set of its new count, in one netlink transaction (layout 4): a
    # new connection meanwhile finds the old endpoints or the new ones,
    # never a count without its keys (which would leave it untranslated,
    # refused as a ClusterIP no Service holds).
    rounds = [("pod-a", "pod-b"), ("pod-a", "pod-b", "pod-c"),
              ("pod-b", "pod-c"), ("pod-c",), ("pod-a", "pod-c")]
    lab.apply([svc("churn", cips=("198.18.128.30",), eps=rounds[0])])
    c0 = lab.counts()
    c = lab.in_ns("cpod")
    stop = threading.Event()
    counts = {"ok": 0, "fail": []}
    worker = c.submit(connect_until, stop, "198.18.128.30",
                      ("pod-a", "pod-b", "pod-c"), counts)
    try:
        for i in range(1, 26):
            lab.apply([svc("churn", cips=("198.18.128.30",),
                           eps=rounds[i % len(rounds)])])
            at = counts["ok"]
            ft.wait_for(lambda: counts["ok"] > at or counts["fail"],
                        what="a connection after change %d" % i)
    finally:
        stop.set()
        worker.result(timeout=ft.DEADLINE)
    assert counts["fail"] == [], counts
    assert counts["ok"] >= 25, counts
    # Every change was the Service's keys alone, and the last one is in
    # force.
    c1 = lab.counts()
    assert c1["keyed"] == c0["keyed"] + 25, (c0, c1)
    got = c(lambda: hits(lambda: tcp_hello("198.18.128.30", 80)[0], 40))
    assert set(got) == set(rounds[25 % len(rounds)]), got


def test_failed_element_transaction_is_converged(lab):
    # An endpoint change's netlink transaction fails whole when an element
    # it deletes is already gone (here a hairpin pair deleted by hand):
    # the engine says so, and its next apply converges the table, with
    # the change in force.
    lab.apply([svc("web", eps=("pod-a", "pod-b"))])
    lab.run_in("node", "nft", "delete", "element", "inet", "ferry",
               "hairpin4", "{ 198.18.1.3 . 198.18.1.3 }")
    mark = len(lab.out_lines())
    lab.write([svc("web", eps=("pod-a",))])
    lab.drive.send_signal(signal.SIGHUP)
    ft.wait_for(lambda: any(ln.startswith("applied")
                            for ln in lab.out_lines()[mark:]),
                what="the driver to apply after its failure")
    errors = [ln for ln in lab.out_lines()[mark:] if ln.startswith("error")]
    assert errors and "nf_tables set elements" in errors[0], errors
    assert keyed(lab)[("198.18.128.10", 80)] == ["198.18.1.2:8080"]
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.10", 80)[0], 20))
    assert set(got) == {"pod-a"}, got


def test_udp_endpoint_removal_moves_client(lab):
    dns = svc("dns", port=53, proto="udp", cips=("198.18.128.53",),
              eps=("pod-a",))
    lab.apply([dns])
    c = lab.in_ns("cpod")
    sock = c(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.bind((CPOD4, 40053))
        sock.connect(("198.18.128.53", 53))
        sock.settimeout(0.3)

        def ask():
            try:
                return dns_query(sock, random.randrange(1, 65535))[0]
            except (socket.timeout, TimeoutError, ConnectionRefusedError):
                return None
        assert c(ask) == "pod-a"
        # pod-a stays up: only the conntrack entry could keep the client
        # there.
        dns["cluster_endpoints"] = [ep("pod-b", UDP_PORT)]
        lab.apply([dns])
        # The apply has deleted the entry when it returns: the next query
        # moves. A second, scaled, is room for a loaded machine.
        t0 = time.monotonic()
        moved = None
        while time.monotonic() - t0 < ft.scaled(3):
            if c(ask) == "pod-b":
                moved = time.monotonic() - t0
                break
            time.sleep(0.05)
        assert moved is not None and moved <= ft.scaled(1.0), moved
    finally:
        sock.close()


def test_verify_restores_a_flushed_table(lab):
    lab.apply([svc("web")])
    # Each edit the verify step must see: a shared map's or set's elements
    # (counted by the kernel; the hairpin pairs looked up, a sample of
    # them each time), the sets themselves (the layout set, one not
    # ferry's), a fixed chain's rules, every rule, the table itself.
    for edit in (("flush", "map", "inet", "ferry", "svc4"),
                 ("flush", "map", "inet", "ferry", "keys4-tcp-2"),
                 ("delete", "element", "inet", "ferry", "keys4-tcp-2",
                  "{ 198.18.128.10 . 80 . 1 }"),
                 ("flush", "chain", "inet", "ferry", "pick4-tcp"),
                 ("flush", "chain", "inet", "ferry", "pick4-tcp-2"),
                 ("flush", "set", "inet", "ferry", "hairpin4"),
                 ("delete", "element", "inet", "ferry", "hairpin4",
                  "{ %s . %s }" % (PODS["pod-b"][0], PODS["pod-b"][0])),
                 ("delete", "set", "inet", "ferry", "layout"),
                 ("add", "set", "inet", "ferry", "intruder",
                  "{ type ipv4_addr; }"),
                 ("flush", "chain", "inet", "ferry", "nat-postrouting"),
                 ("flush", "table", "inet", "ferry"),
                 ("delete", "table", "inet", "ferry")):
        mark = len(lab.out_lines())
        lab.run_in("node", "nft", *edit)
        ft.wait_for(lambda: "restored" in lab.out_lines()[mark:],
                    what="the driver to restore the table after %s" %
                    " ".join(edit))
        assert lab.in_ns("cpod")(tcp_try, "198.18.128.10", 80) in \
            ("pod-a", "pod-b")
    assert lab.in_ns("pod-a")(tcp_hello, "198.18.128.10", 80) in \
        (("pod-a", BRIDGE4), ("pod-b", PODS["pod-a"][0]))


def test_verify_lists_the_sets_only_when_their_count_may_move(lab):
    # The verify step lists every set by name (10,000 endpoint maps at
    # 10,000 Services) only after a transaction that could create or
    # delete one; endpoint changes go through netlink and create none, so
    # the verifies after them read the kernel's count of the table's
    # chains and sets instead. A set added by hand moves that count.
    # Counts 1 and 2 have their rules from the start (layout 4: a count
    # new to the node is a text).
    svcs = [svc("shape", cips=("198.18.128.40",), eps=("pod-a", "pod-b")),
            svc("shape1", cips=("198.18.128.39",), eps=("pod-c",))]
    lab.apply(svcs)

    def after_verifies(k):
        """The driver's counters once it verified <k> more times (a
        SIGHUP of the same file only prints them; the driver verifies
        when 200 ms pass without a signal)."""
        start = lab.counts()["verifies"]
        got = {}

        def done():
            lab.apply(svcs)
            got.update(lab.counts())
            return got["verifies"] >= start + k
        ft.wait_for(done, what="%d verifies" % k, interval=0.5)
        return got
    base = after_verifies(2)
    for eps in (("pod-a",), ("pod-a", "pod-c"), ("pod-a", "pod-b")):
        svcs[0] = svc("shape", cips=("198.18.128.40",), eps=eps)
        lab.apply(svcs)
    c = after_verifies(3)
    assert c["texts"] == base["texts"], (base, c)
    assert c["vlists"] == base["vlists"], (base, c)
    # A Service added is a text: the next verify lists the sets again.
    svcs.append(svc("shape2", cips=("198.18.128.41",)))
    lab.apply(svcs)
    c2 = after_verifies(2)
    assert c2["vlists"] == c["vlists"] + 1, (c, c2)
    # A set added by hand, while the verifies take the short way.
    mark = len(lab.out_lines())
    lab.run_in("node", "nft", "add", "set", "inet", "ferry", "intruder2",
               "{ type ipv4_addr; }")
    ft.wait_for(lambda: "restored" in lab.out_lines()[mark:],
                what="the driver to restore the table")
    assert "intruder2" not in lab.ruleset()
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.40", 80)[0], 20))
    assert set(got) <= {"pod-a", "pod-b"} and got, got


def test_verify_samples_every_hairpin_pair_in_turn(lab):
    # 150 endpoints: more hairpin pairs than one verify looks up (64). A
    # pair deleted by hand is found by a later sample wherever it sits,
    # so the sample must move on from one verify to the next.
    many = svc("pairs", cips=("198.18.128.42",))
    many["cluster_endpoints"] = [
        {"ip": "198.18.1.%d" % i, "port": TCP_PORT, "weight": 1}
        for i in range(100, 250)]
    lab.apply([svc("web"), many])
    for i in (100, 137, 174, 211, 249):
        pair = "198.18.1.%d . 198.18.1.%d" % (i, i)
        mark = len(lab.out_lines())
        lab.run_in("node", "nft", "delete", "element", "inet", "ferry",
                   "hairpin4", "{ %s }" % pair)
        ft.wait_for(lambda: "restored" in lab.out_lines()[mark:],
                    what="the driver to find %s gone" % pair)
        assert pair in lab.run_in("node", "nft", "list", "set", "inet",
                                  "ferry", "hairpin4").stdout
    lab.apply([svc("web")])


def test_restarts_adopt_without_flushing(lab):
    lab.apply([svc("web"), svc("sticky", cips=("198.18.128.12",),
                               affinity_timeout=600)])
    c = lab.in_ns("cpod")
    log_before = open(lab.err_path).read()
    sticky = c(tcp_hello, "198.18.128.12", 80)[0]
    held = c(lambda: socket.create_connection(("198.18.128.10", 80), 2))
    stop = threading.Event()
    counts = {"ok": 0, "fail": []}
    worker = c.submit(connect_until, stop, "198.18.128.10",
                      ("pod-a", "pod-b"), counts)
    try:
        held.settimeout(2)
        ft.read_line(held)
        for i in range(10):
            assert lab.stop_drive() == 0
            lab.start_drive()
            held.sendall(b"ping%d\n" % i)
            assert ft.read_line(held) == "ping%d" % i
        ft.wait_for(lambda: counts["ok"] > 20, what="connections to run")
    finally:
        stop.set()
        worker.result(timeout=ft.DEADLINE)
        held.close()
    assert counts["fail"] == [], counts
    # The affinity set kept its element: the table was adopted, not
    # recreated.
    assert c(tcp_hello, "198.18.128.12", 80)[0] == sticky
    log = open(lab.err_path).read()[len(log_before):]
    assert log.count("table inet ferry adopted") == 10, log
    assert "created" not in log and "recreated" not in log, log


def test_restart_adopts_endpoints_changed_meanwhile(lab):
    # An adoption keeps the shared maps' keys through its one transaction
    # and rewrites them through netlink after it (the keyed maps flushed
    # and filled in one transaction): endpoints that
    # changed while ferry was down are in force once it is back, a
    # Service new since then is served, and a count left idle is gone.
    lab.apply([svc("web", eps=("pod-a", "pod-b"))])
    c = lab.in_ns("cpod")
    assert lab.stop_drive() == 0
    lab.start_drive([svc("web", eps=("pod-c",)),
                     svc("late", cips=("198.18.128.31",), eps=("pod-b",))])
    got = c(lambda: hits(lambda: tcp_hello("198.18.128.10", 80)[0], 30))
    assert set(got) == {"pod-c"}, got
    assert c(tcp_hello, "198.18.128.31", 80)[0] == "pod-b"
    assert keyed(lab)[("198.18.128.10", 80)] == ["198.18.1.4:8080"]
    assert keyed(lab)[("198.18.128.31", 80)] == ["198.18.1.3:8080"]
    assert counts_of(lab) == {1: [("198.18.128.10", 80),
                                  ("198.18.128.31", 80)]}


def test_adoption_fetches_no_set_elements(lab):
    # An adoption's one libnftables transaction must not make libnftables
    # fetch the elements of the table's sets first: an "add element"
    # command does (one dump per endpoint map, the interval maps'), and at
    # 10,000 Services of 25 endpoints that held 470 MB at a restart. The
    # shared sets' elements go in "add set|map NAME { ... elements = }"
    # instead, the endpoint maps' through netlink after the text.
    many = [svc("fetch%d" % i, cips=("198.18.128.%d" % (100 + i),),
                eps=(("pod-a", "pod-b", "pod-c")[i % 3],))
            for i in range(20)]
    lab.apply(many)
    assert lab.stop_drive() == 0
    trace = lab.file + ".strace"
    try:
        r = lab.run_in("node", *traced(trace, "apply", lab.file))
        assert "applied" in r.stdout, r.stdout
        with open(trace) as f:
            sent = f.read()
    finally:
        lab.start_drive()
    # The trace decodes what was sent: a dump that strace cannot name
    # would slip by, so first check that it names what it must.
    assert "NFT_MSG_NEWSETELEM" in sent and "NFT_MSG_GETSET" in sent, sent
    assert sent.count("NFT_MSG_GETSETELEM") == 0, sent
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.119", 80)[0], 20))
    assert set(got) == {"pod-b"}, got
    lab.apply([svc("web")])


def test_endpoint_changes_share_one_netlink_socket(lab):
    # An endpoint change rewrites its map through netlink, on a socket
    # the engine keeps: opening, setting up and closing one for each
    # change cost about a third of ferry's part of it. The driver's time
    # mode, with four endpoint changes after the table, opens no more
    # netlink sockets than with none.
    two = [svc("web", eps=("pod-a", "pod-b"))]
    lab.apply(two)
    assert lab.stop_drive() == 0
    files = {}
    for name, services in (("two", two),
                           ("one", [svc("web", eps=("pod-a",))])):
        files[name] = lab.file + "." + name
        with open(files[name], "w") as f:
            json.dump({"config": CONF, "services": services}, f)
    opened = []
    try:
        for after in ([], ["one", "two", "one", "two"]):
            trace = lab.file + ".strace"
            r = lab.run_in("node", *traced(
                trace, "time", files["two"], *[files[a] for a in after],
                calls="socket"))
            assert r.stdout.count("update ") == len(after), r.stdout
            with open(trace) as f:
                opened.append(f.read().count("AF_NETLINK"))
    finally:
        lab.start_drive()
    assert 0 < opened[1] == opened[0], opened
    got = lab.in_ns("cpod")(lambda: hits(
        lambda: tcp_hello("198.18.128.10", 80)[0], 20))
    assert set(got) == {"pod-a", "pod-b"}, got
    lab.apply([svc("web")])


def test_a_failed_endpoint_write_leaves_the_next_working(lab):
    # The kept socket after an error: the keyed map of the Service's
    # count deleted by hand makes the next endpoint change fail in the
    # kernel. The engine drops
    # that socket, converges on the retry (the map back, with the new
    # endpoints) and writes the change after on a new socket. The driver
    # here verifies only hourly, so that no verify restores the map first.
    lab.apply([svc("web", eps=("pod-a", "pod-b"))])
    assert lab.stop_drive() == 0
    out_path = lab.file + ".fail.out"
    drive = None
    try:
        with open(out_path, "w") as out:
            drive = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns("node"), drive_bin(), "run",
                 lab.file, "3600000"], stdout=out, stderr=subprocess.DEVNULL)

        def lines():
            with open(out_path) as f:
                return f.read().splitlines()

        def applied(k):
            return any(x.startswith("applied %d " % k) for x in lines())

        ft.wait_for(lambda: applied(1), what="the driver's first apply")
        lab.run_in("node", "nft", "flush", "chain", "inet", "ferry",
                   "pick4-tcp-2")
        lab.run_in("node", "nft", "delete", "map", "inet", "ferry",
                   "keys4-tcp-2")
        lab.write([svc("web", eps=("pod-a",))])
        drive.send_signal(signal.SIGHUP)
        ft.wait_for(lambda: applied(2), what="the change after a retry")
        failed = [x for x in lines() if x.startswith("error:")]
        assert failed and "keys4-tcp-1" in lab.run_in(
            "node", "nft", "list", "maps", "inet").stdout, lines()
        got = lab.in_ns("cpod")(lambda: hits(
            lambda: tcp_hello("198.18.128.10", 80)[0], 20))
        assert set(got) == {"pod-a"}, got
        lab.write([svc("web", eps=("pod-a", "pod-b"))])
        drive.send_signal(signal.SIGHUP)
        ft.wait_for(lambda: applied(3), what="the next change")
        assert lines()[-1].startswith("applied 3 "), lines()
        got = lab.in_ns("cpod")(lambda: hits(
            lambda: tcp_hello("198.18.128.10", 80)[0], 40))
        assert set(got) == {"pod-a", "pod-b"}, got
    finally:
        if drive is not None:
            drive.send_signal(signal.SIGTERM)
            drive.wait(timeout=ft.DEADLINE)
        lab.start_drive([svc("web")])


def test_another_layout_is_replaced_in_one_transaction(lab):
    # A ferry whose rules have another shape (an upgrade: layout 2 had an
    # anonymous map in each Service's rule) replaces the table it finds
    # in one transaction: the old one serves until the new one does, and
    # conntrack keeps the open connections.
    lab.apply([svc("web")])
    c = lab.in_ns("cpod")
    held = c(lambda: socket.create_connection(("198.18.128.10", 80), 2))
    try:
        held.settimeout(2)
        ft.read_line(held)
        assert lab.stop_drive() == 0
        lab.run_in("node", "nft", "delete", "set", "inet", "ferry", "layout")
        lab.run_in("node", "nft", "add", "set", "inet", "ferry", "layout",
                   '{ type inet_service; comment "ferry layout 2"; }')
        log_before = open(lab.err_path).read()
        lab.start_drive()
        log = open(lab.err_path).read()[len(log_before):]
        assert "another layout: recreating" in log, log
        assert "table inet ferry recreated" in log, log
        held.sendall(b"still\n")
        assert ft.read_line(held) == "still"
    finally:
        held.close()
    out = lab.run_in("node", "nft", "list", "set", "inet", "ferry",
                     "layout").stdout
    assert "ferry layout 4" in out, out
    assert c(tcp_try, "198.18.128.10", 80) in ("pod-a", "pod-b")


def test_kube_proxy_tables_are_named(lab):
    lab.apply([svc("web")])
    trace = lab.file + ".kp.strace"
    r = lab.run_in("node", *traced(trace, "kube-proxy"), check=False)
    assert r.returncode == 0 and "none" in r.stdout
    # Every start makes this check, a restart with ferry's own table in
    # place: it reads the tables' names, then looks KUBE-SERVICES up by
    # name in each, never every rule (libnftables' "list tables" did: 5.8
    # s and 495 MB at 10,000 Services of 25 endpoints) nor every chain
    # ("list chains": 0.15 s there, and it repeats every 2 s while
    # kube-proxy's rules are on the node).
    with open(trace) as f:
        sent = f.read()
    assert "NFT_MSG_GETTABLE" in sent, sent
    assert "NFT_MSG_GETRULE" not in sent, sent
    assert not re.search(r"NFT_MSG_GETCHAIN, nlmsg_flags=[^,]*NLM_F_DUMP",
                         sent), sent
    for fam in ("ip", "ip6"):
        lab.run_in("node", "nft", "add", "table", fam, "kube-proxy")
        try:
            r = lab.run_in("node", drive_bin(), "kube-proxy", check=False)
            assert r.returncode == 3, r.stdout + r.stderr
            assert "table %s kube-proxy" % fam in r.stdout
        finally:
            lab.run_in("node", "nft", "delete", "table", fam, "kube-proxy")
    # Another family's table of that name is not kube-proxy's.
    lab.run_in("node", "nft", "add", "table", "inet", "kube-proxy")
    try:
        r = lab.run_in("node", drive_bin(), "kube-proxy", check=False)
        assert r.returncode == 0 and "none" in r.stdout, r.stdout
    finally:
        lab.run_in("node", "nft", "delete", "table", "inet", "kube-proxy")
    # iptables-nft's chain, in any ip or ip6 table, beside tables without
    # it; in an inet table it is not iptables'.
    lab.run_in("node", "nft", "add table ip filter; add chain ip filter "
               "FORWARD; add table ip6 mangle")
    try:
        for fam, table in (("ip", "nat"), ("ip6", "filter")):
            lab.run_in("node", "nft", "add table %s %s; add chain %s %s "
                       "KUBE-SERVICES" % (fam, table, fam, table))
            try:
                trace = lab.file + ".kp2.strace"
                r = lab.run_in("node", *traced(trace, "kube-proxy"),
                               check=False)
                assert r.returncode == 3, r.stdout + r.stderr
                assert ("iptables chain KUBE-SERVICES (nftables table %s %s)"
                        % (fam, table)) in r.stdout, r.stdout
                with open(trace) as f:
                    sent = f.read()
                assert not re.search(r"NFT_MSG_GETCHAIN, nlmsg_flags=[^,]*"
                                     r"NLM_F_DUMP", sent), sent
            finally:
                lab.run_in("node", "nft", "delete", "table", fam, table)
        lab.run_in("node", "nft", "add table inet other; add chain inet "
                   "other KUBE-SERVICES")
        r = lab.run_in("node", drive_bin(), "kube-proxy", check=False)
        assert r.returncode == 0 and "none" in r.stdout, r.stdout
    finally:
        for t in ("ip filter", "ip6 mangle", "inet other"):
            lab.run_in("node", "nft", "delete table " + t, check=False)


def test_cleanup_leaves_the_ruleset_as_before(lab):
    lab.apply([svc("web", node_port=30080, affinity_timeout=60)])
    assert "table inet ferry" in lab.ruleset()
    assert lab.stop_drive() == 0
    # SIGTERM leaves the rules in place.
    assert "table inet ferry" in lab.ruleset()
    r = lab.run_in("node", drive_bin(), "cleanup")
    assert "deleted" in r.stdout
    assert lab.ruleset() == lab.ruleset_before
    r = lab.run_in("node", drive_bin(), "cleanup")
    assert "absent" in r.stdout
    lab.start_drive([])


def test_large_table_created_in_parts_is_whole(lab, tmp_path):
    # More services than one creation transaction holds (100), and more
    # hairpin pairs than one holds of elements (5000): every one is in
    # the table, and the verify step finds it intact.
    fresh = "kdparts%d" % os.getpid()
    path = str(tmp_path / "many.json")

    def pod(i, k):
        n = i * 5 + k
        return {"ip": f"198.19.{n // 250}.{n % 250 + 1}", "port": TCP_PORT,
                "weight": 1}
    services = [{"id": f"default/m{i}:p", "protocol": "tcp", "port": 80,
                 "cluster_ips": [f"198.18.{140 + i // 250}.{i % 250 + 1}"],
                 "cluster_endpoints": [ep("pod-a"), ep("pod-b")]
                 + [pod(i, k) for k in range(5)]}
                for i in range(1100)]
    with open(path, "w") as f:
        json.dump({"config": CONF, "services": services}, f)
    sh("ip", "netns", "add", fresh)
    try:
        r = sh("ip", "netns", "exec", fresh, drive_bin(), "time", path)
        assert "verify" in r.stdout and "(intact)" in r.stdout, r.stdout
        out = sh("ip", "netns", "exec", fresh, "nft", "-j", "list", "map",
                 "inet", "ferry", "svc4").stdout
        m = [x["map"] for x in json.loads(out)["nftables"] if "map" in x]
        assert len(m[0]["elem"]) == 1100
        out = sh("ip", "netns", "exec", fresh, "nft", "-j", "list", "set",
                 "inet", "ferry", "hairpin4").stdout
        s = [x["set"] for x in json.loads(out)["nftables"] if "set" in x]
        assert len(s[0]["elem"]) == 1100 * 5 + 2
    finally:
        sh("ip", "netns", "del", fresh, check=False)


def test_large_endpoint_maps_rewritten_as_a_fresh_build(lab, tmp_path):
    # Endpoint changes go to the kernel through netlink, not libnftables:
    # a map of 6,000 endpoints (more than one list took before the maps
    # were named) takes several element messages, and maps
    # past NFTRULES_SET_BATCH bytes several transactions. What they leave
    # is what libnftables writes for the same services from scratch.
    fresh = "kdmaps%d" % os.getpid()
    fresh_file = str(tmp_path / "fresh.json")

    def many(name, cip, n, skip=0, heavy=()):
        eps = [{"ip": f"198.18.{32 + k // 250}.{k % 250 + 1}",
                "port": TCP_PORT, "weight": 3 if k in heavy else 1}
               for k in range(skip, skip + n)]
        return {"id": f"default/{name}:p", "protocol": "tcp", "port": 80,
                "cluster_ips": [cip], "cluster_endpoints": eps}
    before = [many("big", "198.18.130.1", 6000)] + \
        [many(f"mid{i}", f"198.18.130.{i + 2}", 300, skip=i) for i in range(8)]
    after = [many("big", "198.18.130.1", 5999, skip=1, heavy=(7, 99))] + \
        [many(f"mid{i}", f"198.18.130.{i + 2}", 301, skip=i + 1)
         for i in range(8)]
    lab.apply(before)
    c0 = lab.counts()
    lab.apply(after)
    c1 = lab.counts()
    assert c1["epmaps"] == c0["epmaps"] + 9, (c0, c1)
    with open(fresh_file, "w") as f:
        json.dump({"config": CONF, "services": after}, f)
    sh("ip", "netns", "add", fresh)
    try:
        sh("ip", "netns", "exec", fresh, drive_bin(), "apply", fresh_file)
        got = _without_idle_counts(_table_model(lab.run_in(
            "node", "nft", "-j", "list", "table", "inet", "ferry").stdout))
        want = _table_model(sh("ip", "netns", "exec", fresh, "nft", "-j",
                               "list", "table", "inet", "ferry").stdout)
        diff = sorted(k for k in set(got) | set(want)
                      if got.get(k) != want.get(k))
        assert diff == [], diff[:5]
        big = got[("map", "em4-default/big/p/tcp")][1]
        assert len(big) == 5999, len(big)
    finally:
        sh("ip", "netns", "del", fresh, check=False)


# ---- incremental changes equal a table built from scratch ---------------

def _table_model(text):
    """table inet ferry as comparable data: each chain's rules, each set's
    or map's elements (sorted: the kernel lists hash sets in its own
    order), without handles or the table's comment."""
    doc = json.loads(text)
    model = {}
    for item in doc.get("nftables", []):
        for kind in ("chain", "rule", "set", "map"):
            if kind not in item:
                continue
            o = dict(item[kind])
            o.pop("handle", None)
            if kind == "chain":
                model.setdefault(("chain", o["name"]), [])
                model[("chain-spec", o["name"])] = json.dumps(o,
                                                              sort_keys=True)
            elif kind == "rule":
                o.pop("comment", None)
                model.setdefault(("chain", o["chain"]), []).append(
                    json.dumps(o["expr"], sort_keys=True))
            else:
                elems = sorted(json.dumps(e, sort_keys=True)
                               for e in o.pop("elem", []))
                model[(kind, o["name"])] = (json.dumps(o, sort_keys=True),
                                            elems)
    return model


def _without_idle_counts(model):
    """<model> less layout 4's idle counts: a keyed map no Service is in,
    its chain and the pick chain's jump to it. The engine keeps those
    until it next writes the pick chains (so that a Service resized back
    and forth writes no chain); a fresh start has none. Inert: no key is
    found in an empty map."""
    idle = {k[1] for k, v in model.items()
            if k[0] == "map" and k[1].startswith("keys") and not v[1]}
    chains = {"pick" + n[len("keys"):] for n in idle}
    out = {k: v for k, v in model.items()
           if not (k[0] == "map" and k[1] in idle)
           and not (k[0] in ("chain", "chain-spec") and k[1] in chains)}
    for k, rules in model.items():
        if k[0] == "chain" and k[1].startswith("pick") and k in out:
            out[k] = [r for r in rules
                      if not any('"%s"' % c in r for c in chains)]
    return out


def _random_services(rng, n):
    pods = list(PODS)
    out = []
    for i in range(n):
        proto = rng.choice(["tcp", "tcp", "udp"])
        tport = TCP_PORT if proto == "tcp" else UDP_PORT
        s = {"id": f"default/r{i}:p", "protocol": proto,
             "port": rng.choice([80, 443, 53]),
             "cluster_ips": [f"198.18.129.{i + 1}"]}
        if rng.random() < 0.3:
            s["cluster_ips"].append(f"2001:2:0:80::{i + 1:x}")
        eps = rng.sample(pods, rng.randint(0, 3))
        s["cluster_endpoints"] = [ep(p, tport, weight=rng.choice([1, 1, 2]))
                                  for p in eps]
        if rng.random() < 0.3:
            s["node_port"] = 30000 + i
        if rng.random() < 0.2:
            s["lb_ips"] = [f"198.18.130.{i + 1}"]
            if rng.random() < 0.5:
                s["source_ranges"] = ["198.18.0.0/24"]
        if rng.random() < 0.2:
            s["external_ips"] = [f"198.18.131.{i + 1}"]
        if rng.random() < 0.2:
            s["affinity_timeout"] = rng.choice([10, 10800])
        if (s.get("node_port") or s.get("lb_ips")) and rng.random() < 0.3:
            s["external_traffic_policy"] = "Local"
            s["local_endpoints"] = s["cluster_endpoints"][:1]
        if proto == "tcp" and rng.random() < 0.1:
            s = {k: v for k, v in s.items()
                 if k not in ("cluster_endpoints", "local_endpoints",
                              "external_traffic_policy",
                              "affinity_timeout")}
            s["redirect_port"] = 10263
        out.append(s)
    return out


def test_incremental_changes_equal_a_fresh_build(lab, tmp_path):
    import random
    seed = int(os.environ.get("FERRY_RANDOM_SEED", "0")) or \
        random.randrange(1 << 30)
    rng = random.Random(seed)
    fresh = "kdfresh%d" % os.getpid()
    fresh_file = str(tmp_path / "fresh.json")

    def with_ghosts(s):
        # Endpoints of a few addresses no pod has, each in few services at
        # a time: their hairpin elements come and go as services change
        # (the three pods are nearly always in some service).
        ghosts = [f"198.18.3.{k}" for k in range(1, 7)] + \
            [f"2001:2:0:1::{k:x}" for k in range(16, 19)]
        tport = TCP_PORT if s["protocol"] == "tcp" else UDP_PORT
        s.setdefault("cluster_endpoints", []).extend(
            {"ip": ip, "port": tport, "weight": 1}
            for ip in rng.sample(ghosts, rng.randint(0, 2)))
        return s
    sh("ip", "netns", "add", fresh)
    try:
        services = [with_ghosts(s) for s in _random_services(rng, 12)]
        lab.apply(services)
        for batch in range(12):
            # A batch of changes: some services rewritten at random, some
            # removed, some added back.
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(len(services))
                services[i] = with_ghosts(_random_services(rng, i + 1)[i])
            keep = [s for s in services if rng.random() > 0.1]
            lab.apply(keep)
            with open(fresh_file, "w") as f:
                json.dump({"config": CONF, "services": keep}, f)
            sh("ip", "netns", "exec", fresh, drive_bin(), "cleanup")
            sh("ip", "netns", "exec", fresh, drive_bin(), "apply",
               fresh_file)
            got = _without_idle_counts(_table_model(lab.run_in(
                "node", "nft", "-j", "list", "table", "inet", "ferry").stdout))
            want = _table_model(sh("ip", "netns", "exec", fresh, "nft", "-j",
                                   "list", "table", "inet",
                                   "ferry").stdout)
            assert got == want, "seed %d, batch %d: incremental table " \
                "differs from a fresh one in %s" % (
                    seed, batch, sorted(k for k in set(got) | set(want)
                                        if got.get(k) != want.get(k))[:5])
            assert sum(k[0] == "chain" for k in got) > 10
        # The comparison sees a difference: the fresh table with one map
        # flushed (the node's driver would restore its own at once).
        sh("ip", "netns", "exec", fresh, "nft", "flush", "map", "inet",
           "ferry", "svc4")
        want = _table_model(sh("ip", "netns", "exec", fresh, "nft", "-j",
                               "list", "table", "inet", "ferry").stdout)
        assert got != want
    finally:
        sh("ip", "netns", "del", fresh, check=False)


def test_counts_past_the_cap_keep_chains_of_their_own(lab):
    # A connection's first packet tries the counts of its family and
    # protocol in turn, so at most 48 have a rule (NFTGEN_COUNTS_MAX); a
    # plain Service of a 49th count keeps a chain of its own, and takes
    # a count's place once one is idle.
    def many(name, k, n):
        s = svc(name, cips=("198.18.132.%d" % k,))
        s["cluster_endpoints"] = [
            {"ip": "198.18.4.%d" % (i + 1), "port": TCP_PORT, "weight": 1}
            for i in range(n)]
        return s
    svcs = [many("c%d" % n, n, n) for n in range(1, 50)]
    lab.apply(svcs)
    counts = counts_of(lab)
    assert sorted(counts) == list(range(1, 49)), sorted(counts)
    chains = lab.run_in("node", "nft", "list", "chains", "inet").stdout
    assert "svc4-default/c49/p/tcp" in chains
    assert "svc4-default/c48/p/tcp" not in chains
    # Count 1 left idle, then a Service of a count new to the node (put
    # first): it takes the idle count's place, and the 49th, which finds
    # none left, stays as it was.
    lab.apply(svcs[1:])
    lab.apply([many("c50", 50, 50)] + svcs[1:])
    counts = counts_of(lab)
    assert 1 not in counts and counts[50] == [("198.18.132.50", 80)], \
        sorted(counts)
    assert "svc4-default/c49/p/tcp" in lab.run_in(
        "node", "nft", "list", "chains", "inet").stdout
    got = lab.in_ns("cpod")(tcp_try, "198.18.132.50", 80, None, 0.5)
    # The endpoints are addresses no pod has: the connection is
    # translated (not refused as a ClusterIP without a Service) and
    # times out.
    assert got == "timeout", got


def test_idle_counts_keep_their_rules_up_to_32(lab):
    # A count no Service has any more keeps its rule, so that one coming
    # back costs no text (each makes the kernel check the whole table);
    # when a text adds a count, idle ones past 32 go, the smallest first
    # (those a connection's first packet tries before its own).
    def many(name, n, k=None):
        s = svc(name, cips=("198.18.133.%d" % (k or n),))
        s["cluster_endpoints"] = [
            {"ip": "198.18.5.%d" % (i + 1), "port": TCP_PORT, "weight": 1}
            for i in range(n)]
        return s
    lab.fresh_engine()
    lab.apply([many("k%d" % n, n) for n in range(1, 41)])
    assert sorted(counts_of(lab)) == list(range(1, 41))
    # Every Service at 40 endpoints: their keys move, counts 1 to 39
    # turn idle, and no rule changes.
    c0 = lab.counts()
    lab.apply([many("k%d" % n, 40, n) for n in range(1, 41)])
    c1 = lab.counts()
    assert c1["texts"] == c0["texts"], (c0, c1)
    counts = counts_of(lab)
    assert sorted(counts) == list(range(1, 41))
    assert len(counts[40]) == 40 and counts[1] == [], counts[1]
    lab.apply([many("k40", 40)])
    assert sorted(counts_of(lab)) == list(range(1, 41))
    c1 = lab.counts()
    lab.apply([many("k40", 40), many("k45", 45)])
    c2 = lab.counts()
    assert c2["texts"] == c1["texts"] + 1, (c1, c2)
    counts = counts_of(lab)
    assert sorted(counts) == list(range(10, 41)) + [45], sorted(counts)
    assert counts[45] == [("198.18.133.45", 80)]
    # A count that kept its rule, idle, serves a Service again at once,
    # without a text: k45 down to 12 keys, 11 of pod-a's and one of
    # pod-b's.
    k45 = many("k45", 45)
    k45["cluster_endpoints"] = [ep("pod-a", weight=11), ep("pod-b")]
    lab.apply([many("k40", 40), k45])
    assert lab.counts()["texts"] == c2["texts"]
    assert counts_of(lab)[12] == [("198.18.133.45", 80)]
    assert lab.in_ns("cpod")(tcp_try, "198.18.133.45", 80) in ("pod-a",
                                                              "pod-b")


def test_an_address_listed_twice_is_one_element(lab):
    # An externalIP that is also the Service's load balancer's: one
    # element and one set of keys, so that a change or a deletion removes
    # it once (twice failed the transaction and sent every later change
    # through a full convergence), with chains of its own or without.
    for extra in ({}, {"external_traffic_policy": "Local",
                       "node_port": 30031,
                       "local_endpoints": [ep("pod-a")]},
                  {"affinity_timeout": 60}):
        s = svc("twice", cips=("198.18.128.31",), eps=("pod-a", "pod-b"),
                external_ips=["198.18.200.31"], lb_ips=["198.18.200.31"],
                **extra)
        mark = len(lab.out_lines())
        lab.apply([s])
        s["cluster_endpoints"] = [ep("pod-b")]
        lab.apply([s])
        assert lab.in_ns("cpod")(tcp_try, "198.18.200.31", 80) == "pod-b"
        lab.apply([])
        errors = [ln for ln in lab.out_lines()[mark:]
                  if ln.startswith("error")]
        assert errors == [], errors
        assert "198.18.200.31" not in lab.run_in(
            "node", "nft", "list", "map", "inet", "ferry", "svc4").stdout
