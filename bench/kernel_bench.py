"""bench/kernel_bench.py - `bench/run kernel`: the ways a node can take a
client to a Service's backend, measured in the same run with the same
load, between three network namespaces:

    client  198.18.20.2  --veth--  198.18.20.1  node  198.18.21.1  --veth--  198.18.21.2  backend
                                   (ip_forward, the tables, the proxies)

The node namespace routes between the two links. The client reaches:

    direct   198.18.21.2:8081   routed through the node, no NAT
    dnat     198.18.128.81:80   the reference: one ClusterIP in the shape
                                kube-proxy's nftables mode programs
                                (kube_dnat_rules), DNAT to 198.18.21.2:8082
    kernel   198.18.128.80:80   ferry's kernel dataplane: the table inet
                                ferry that `nftdrive run` programs (the
                                engine of proxy/node/nft.c), DNAT to
                                198.18.21.2:8080
    ferry    198.18.20.1:18080  ferry's proxy in the node namespace
    haproxy  198.18.20.1:18081  HAProxy there
    nginx    198.18.20.1:18082  NGINX stream there; the three proxies get
                                bench/run's configurations (one worker,
                                same timeouts) and reach 198.18.21.2:8083

The UDP scenario (DNS-shaped, a fresh source port per query) has the
same targets on port 53 (the proxies on their ports, UDP) but HAProxy,
which proxies TCP only: ferry with `protocol: udp, udp_responses: 1`,
NGINX with `proxy_responses 1`.

The backend process listens on one port per kind of target
(ENDPOINT_PORT says why). Every target crosses the same node, the same
table hooks (both tables stay for the whole run) and conntrack. Nobody
owns the Service addresses: a connection to one works only through its
table, which the harness checks (no answer before, an answer after)
before it measures anything.

For each scenario it starts the backend in the backend namespace and the
proxies in the node namespace, then runs `ferry-bench` in the client
namespace against every target in turn, round after round, the first
target of a round rotating. Per run: the client's JSON result, the busy
time of every CPU from /proc/stat (user, nice, system, irq, softirq), and
the CPU of the lab's own threads: the client (getrusage), the backend,
the proxies (every thread and child), nftdrive and ksoftirqd (scheduler
clocks). A DNAT target does its work in softirq on the core that sends,
charged to whatever thread it interrupted (tick-based accounting): the
client's or the backend's, or ksoftirqd under load. So the figure that
compares targets is CPU per unit of work summed over the lab's threads
on every core (the per-process accounting, which leaves out the other
work of a shared machine), shown beside the all-cores /proc/stat figure,
each also less the direct run's of the same round ("beyond direct"): the
target's own cost. Beside them: the CPU other user-space processes took
meanwhile and how many processes started (noise gauges), and the node's
conntrack statistics (a tuple clash, an insert failure or a drop would
mean the run measured something else than the dataplane). With --settle,
each round waits (a bounded time) for a quiet machine before it starts.

Output, in <out> (bench/results/<date>/ by default): kernel.md (the
summary), kernel.json (medians with their spread, as `bench/run
--compare` reads them, and ratios), raw/kernel/ (runs.jsonl, the service
description, both rule sets, the proxies' configs and logs).

Everything it creates — the namespaces (and so their links), its
processes (stopped by PID), the tables (`nftdrive cleanup` and `nft
delete table` in the node namespace) — is removed at the end, also on
Ctrl-C, SIGTERM or an error. Namespaces left by a run that was killed
outright (SIGKILL) are removed by the next run: their names carry the PID
of the run that made them.
"""

import argparse
import atexit
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchstats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

NS_PREFIX = "fkb"  # fkb<pid>-client, fkb<pid>-node, fkb<pid>-backend
CLIENT_IP, NODE_C_IP = "198.18.20.2", "198.18.20.1"
BACKEND_IP, NODE_B_IP = "198.18.21.2", "198.18.21.1"
SERVICE_IP, SERVICE_PORT = "198.18.128.80", 80
# The backend listens on two ports: the Service's endpoint and the one the
# client reaches directly. With one port, the node's conntrack entries of
# one target's closed connections (TIME_WAIT, 120 s) would hold the reply
# tuples (backend:port -> client:port) the other target's new connections
# need, and every new connection would first look for a free tuple: that
# would measure the two targets' collisions, not the dataplane.
ENDPOINT_PORT, DIRECT_PORT = 8080, 8081
# The reference: one ClusterIP programmed in the shape of kube-proxy's
# nftables mode (kube_dnat_rules), its endpoint on a port of its own for
# the same reason; and the proxies in the node namespace, which all reach
# the backend on one more port (their connections come from the node's
# address, so they never share a tuple with the client's).
DNAT_IP, DNAT_PORT, DNAT_EP_PORT = "198.18.128.81", 80, 8082
UDP_SERVICE_PORT = 53
PROXY_EP_PORT = 8083
PROXY_PORTS = {"ferry": 18080, "haproxy": 18081, "nginx": 18082}
BACKEND_PORTS = (ENDPOINT_PORT, DIRECT_PORT, DNAT_EP_PORT, PROXY_EP_PORT)
ADDRS = {"direct": "%s:%d" % (BACKEND_IP, DIRECT_PORT),
         "dnat": "%s:%d" % (DNAT_IP, DNAT_PORT),
         "kernel": "%s:%d" % (SERVICE_IP, SERVICE_PORT)}
ADDRS.update({t: "%s:%d" % (NODE_C_IP, p) for t, p in PROXY_PORTS.items()})
# The same Services over UDP (port 53; the proxies' ports are the same
# numbers, UDP).
UDP_ADDRS = dict(ADDRS, dnat="%s:%d" % (DNAT_IP, UDP_SERVICE_PORT),
                 kernel="%s:%d" % (SERVICE_IP, UDP_SERVICE_PORT))
ALL_TARGETS = ["direct", "dnat", "kernel", "ferry", "haproxy", "nginx"]
# HAProxy proxies TCP only.
UDP_TARGETS = ["direct", "dnat", "kernel", "ferry", "nginx"]
PROXIES = ("ferry", "haproxy", "nginx")
DNAT_TABLE = "fkb-kube-proxy"  # ip family; in the node namespace only
# nftdrive verifies the table every VERIFY_MS; that is ferry's control
# loop, not the dataplane, so it is made rare (once an hour) to stay out
# of the measurements.
VERIFY_MS = 3600000
TICK = os.sysconf("SC_CLK_TCK")

# scenario -> backend args, client args, unit of work (as bench/run's)
SCENARIOS = {
    "connrate": {"serve": ["--mode", "fixed", "--size", "128"],
                 "client": ["connrate", "--concurrency", "32", "--size", "64",
                            "--reply-size", "128"],
                 "unit": "conn", "what": "new connections/s (connect, 64 B up, "
                 "128 B down, close; 32 in flight)"},
    "rr": {"serve": ["--mode", "echo"],
           "client": ["rr", "--connections", "32", "--size", "64"],
           "unit": "req", "what": "requests/s on 32 kept-alive connections "
           "(64 B ping-pong)"},
    "stream_down": {"serve": ["--mode", "source"],
                    "client": ["stream", "--connections", "4", "--direction",
                               "down"],
                    "unit": "GB", "what": "Gbit/s, 4 connections, backend to "
                    "client"},
    "stream_up": {"serve": ["--mode", "sink"],
                  "client": ["stream", "--connections", "4", "--direction",
                             "up"],
                  "unit": "GB", "what": "Gbit/s, 4 connections, client to "
                  "backend"},
    # DNS-shaped: one 64-byte query, one 128-byte answer, each from a fresh
    # socket (a new source port, so a new conntrack entry and, for the
    # proxies, a new flow: ferry udp_responses 1, NGINX proxy_responses 1).
    "udp": {"serve": ["--reply-size", "128"],
            "client": ["udp", "--concurrency", "32", "--size", "64",
                       "--reply-size", "128", "--source-port", "fresh"],
            "unit": "req", "proto": "udp",
            "what": "UDP queries/s, 32 in flight, a fresh source port per "
            "query (64 B query, 128 B answer)"},
}
DEFAULT_SCENARIOS = "connrate,rr,stream_down,udp"
# CPU cost per unit, for display: us/conn, us/req, ms/GB
COST_SCALE = {"conn": (1e6, "µs/conn"), "req": (1e6, "µs/req"),
              "GB": (1e3, "ms/GB")}
# conntrack statistics kept per run: failures and clashes would mean the
# run measured something other than the dataplane
CT_KEYS = ("new", "found", "invalid", "insert_failed", "drop", "early_drop",
           "clashres", "search_restart")
WITHIN = 0.05  # the goal: within 5 % of direct


def log(msg):
    print("[bench/run %s] %s" % (time.strftime("%H:%M:%S"), msg),
          file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def sh(argv, timeout=30, check=True):
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failed("%s: no answer within %d s" % (" ".join(argv), timeout))
    if check and r.returncode != 0:
        raise Failed("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                          r.stderr.strip()[-300:]))
    return r


def cpu_set(spec):
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In the child before exec: SIGTERM when the harness dies, even by
    SIGKILL (kept across exec; ip netns exec and taskset exec too)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Procs:
    """Every process started here, stopped by PID at the end."""

    def __init__(self):
        self.live = []

    def start(self, argv, stdout=None, stderr=None):
        p = subprocess.Popen(argv, stdout=stdout, stderr=stderr,
                             stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        p.line_buf = b""
        self.live.append(p)
        return p

    def stop(self, p, timeout=10):
        if p in self.live:
            self.live.remove(p)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
        return p.returncode

    def stop_all(self):
        for p in list(self.live):
            self.stop(p)


def wait_line(proc, pred, deadline_s):
    """Read proc's stdout until a line satisfies pred; None at the deadline
    or at end of file."""
    fd = proc.stdout.fileno()
    end = time.monotonic() + deadline_s
    while True:
        while b"\n" in proc.line_buf:
            line, proc.line_buf = proc.line_buf.split(b"\n", 1)
            text = line.decode(errors="replace")
            if pred(text):
                return text
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            proc.line_buf += chunk


# -------------------------------------------------------------------- lab

def remove_stale():
    """Namespaces of earlier runs whose harness is gone, and the processes
    left in them (stopped by PID: `ip netns pids`)."""
    for name in stale_namespaces():
        log("removing %s, left by a run that is gone" % name)
        r = sh(["ip", "netns", "pids", name], check=False)
        pids = [int(x) for x in r.stdout.split() if x.isdigit()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        end = time.monotonic() + 5
        while pids and time.monotonic() < end:
            pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
            time.sleep(0.05)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        sh(["ip", "netns", "del", name], check=False)


def stale_namespaces():
    """Namespaces of earlier runs whose harness is gone."""
    r = sh(["ip", "netns", "list"], check=False)
    out = []
    for line in r.stdout.splitlines():
        name = line.split(" ", 1)[0]
        m = re.match(r"^%s(\d+)-(client|node|backend)$" % NS_PREFIX, name)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            out.append(name)
    return out


class Lab:
    """Three namespaces joined by two veth pairs; the node routes."""

    def __init__(self, args, raw, procs):
        self.args = args
        self.raw = raw
        self.procs = procs
        self.tag = "%s%d" % (NS_PREFIX, os.getpid())
        self.namespaces = []
        self.drive = None
        self.backend = None
        self.dnat = False
        self.proxies = {}

    def ns(self, name):
        return "%s-%s" % (self.tag, name)

    def exec_argv(self, name, argv, cpus=None):
        """argv run inside namespace <name> (ip netns exec and taskset
        both exec, so the PID is the program's own)."""
        pre = ["ip", "netns", "exec", self.ns(name)]
        if cpus is not None and os.cpu_count() >= 2:
            pre += ["taskset", "-c", cpus]
        return pre + argv

    def run_in(self, name, argv, **kw):
        return sh(self.exec_argv(name, argv), **kw)

    def build(self):
        remove_stale()
        for n in ("client", "node", "backend"):
            sh(["ip", "netns", "add", self.ns(n)])
            self.namespaces.append(self.ns(n))
            sh(["ip", "-n", self.ns(n), "link", "set", "lo", "up"])
        # Temporary names in the root namespace are unique per run: the
        # PID is in them (at most 7 digits: 12 characters of 15).
        for i, (peer, mine, theirs) in enumerate(
                (("client", NODE_C_IP, CLIENT_IP),
                 ("backend", NODE_B_IP, BACKEND_IP))):
            a, b = "%sa%d" % (self.tag, i), "%sb%d" % (self.tag, i)
            sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            sh(["ip", "link", "set", a, "netns", self.ns("node")])
            sh(["ip", "link", "set", b, "netns", self.ns(peer)])
            dev = "to-" + peer
            sh(["ip", "-n", self.ns("node"), "link", "set", a, "name", dev])
            sh(["ip", "-n", self.ns(peer), "link", "set", b, "name", "eth0"])
            sh(["ip", "-n", self.ns("node"), "addr", "add", mine + "/24",
                "dev", dev])
            sh(["ip", "-n", self.ns(peer), "addr", "add", theirs + "/24",
                "dev", "eth0"])
            sh(["ip", "-n", self.ns("node"), "link", "set", dev, "up"])
            sh(["ip", "-n", self.ns(peer), "link", "set", "eth0", "up"])
            sh(["ip", "-n", self.ns(peer), "route", "add", "default", "via",
                mine])
        self.run_in("node", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The client closes first (connrate), so its TIME_WAIT sockets hold
        # its ports: reuse them after 1 s (a namespace starts with the
        # loopback-only default, 2) and use the whole port range. Both
        # targets get the same client.
        # The proxies in the node are clients of the backend and close
        # first there (after the client closed): the same for the node.
        for n in ("client", "node"):
            self.run_in(n, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
                            "net.ipv4.ip_local_port_range=1024 65535"])

    def services_doc(self):
        return {"config": {"masquerade": "cidr",
                           "cluster_cidrs": ["198.18.20.0/24",
                                             "198.18.21.0/24"],
                           "service_cidrs": ["198.18.128.0/17"]},
                "services": [{"id": "bench/kernel:http", "protocol": "tcp",
                              "port": SERVICE_PORT,
                              "cluster_ips": [SERVICE_IP],
                              "cluster_endpoints": [{"ip": BACKEND_IP,
                                                     "port": ENDPOINT_PORT}]},
                             {"id": "bench/kernel:dns", "protocol": "udp",
                              "port": UDP_SERVICE_PORT,
                              "cluster_ips": [SERVICE_IP],
                              "cluster_endpoints": [{"ip": BACKEND_IP,
                                                     "port": ENDPOINT_PORT}]}]}

    def start_dnat(self):
        """The reference rule set (kube_dnat_rules) in the node namespace."""
        path = os.path.join(self.raw, "kube-dnat.nft")
        with open(path, "w") as f:
            f.write(kube_dnat_rules())
        self.run_in("node", ["nft", "-f", path])
        self.dnat = True

    def start_proxies(self, scenario, targets):
        """The proxies of <targets> in the node namespace, each checked
        through the client namespace. Returns {target: why} for those
        that did not come up (stopped again)."""
        udp = SCENARIOS[scenario].get("proto") == "udp"
        failed = {}
        for t in targets:
            if t not in PROXIES:
                continue
            work = os.path.join(self.raw, "%s-%s" % (t, scenario))
            os.makedirs(work, exist_ok=True)
            argv = proxy_argv(t, self.args, work, udp)
            logf = open(os.path.join(work, "%s.log" % t), "w")
            p = self.procs.start(self.exec_argv("node", argv,
                                                self.args.proxy_cpus),
                                 stdout=logf, stderr=subprocess.STDOUT)
            logf.close()
            self.proxies[t] = p
            if not self.wait_path(t, udp=udp):
                why = "%s did not answer through the node (exit %s; see " \
                    "raw/kernel/%s-%s/)" % (t, p.poll(), t, scenario)
                self.procs.stop(p)
                del self.proxies[t]
                failed[t] = why
        return failed

    def stop_proxies(self):
        for t in list(self.proxies):
            self.procs.stop(self.proxies.pop(t))

    def start_drive(self):
        path = os.path.join(self.raw, "services.json")
        with open(path, "w") as f:
            json.dump(self.services_doc(), f, indent=1)
            f.write("\n")
        err = open(os.path.join(self.raw, "nftdrive.log"), "w")
        self.drive = self.procs.start(
            self.exec_argv("node", [self.args.nftdrive, "run", path,
                                    str(VERIFY_MS)]),
            stdout=subprocess.PIPE, stderr=err)
        err.close()
        line = wait_line(self.drive, lambda l: l.startswith(("applied",
                                                              "error")), 20)
        if line is None or not line.startswith("applied"):
            raise Failed("nftdrive did not apply the service: %s (see "
                         "raw/kernel/nftdrive.log)" % (line or "no answer"))
        log("nftdrive: %s" % line)

    def start_backend(self, scenario):
        logf = open(os.path.join(self.raw, "serve-%s.log" % scenario), "w")
        # Bounded: it exits by itself after --max-seconds at the latest.
        limit = int(self.args.rounds * len(self.args.targets)
                    * (self.args.duration + self.args.settle + 60) + 120)
        udp = SCENARIOS[scenario].get("proto") == "udp"
        listen = []
        for port in BACKEND_PORTS:
            listen += ["--listen", "%s:%d" % (BACKEND_IP, port)]
        p = self.procs.start(
            self.exec_argv("backend", [self.args.bench,
                                       "udp-serve" if udp else "serve"]
                           + SCENARIOS[scenario]["serve"] + listen
                           + ["--max-seconds", str(limit)],
                           self.args.backend_cpus),
            stdout=subprocess.PIPE, stderr=logf)
        logf.close()
        if wait_line(p, lambda l: l.strip() == "ready", 10) is None:
            self.procs.stop(p)
            raise Failed("ferry-bench serve did not become ready in the "
                         "backend namespace")
        self.backend = p
        return p

    def stop_backend(self):
        if self.backend is not None:
            self.procs.stop(self.backend)
            self.backend = None

    def probe(self, target, timeout_s=1.0, udp=False):
        """One connection (or UDP query) through <target>: True if it
        worked."""
        if udp:
            argv = [self.args.bench, "udp", "--target", UDP_ADDRS[target],
                    "--count", "1", "--concurrency", "1", "--duration", "2",
                    "--timeout", str(timeout_s), "--quiet"]
        else:
            argv = [self.args.bench, "connrate", "--target", ADDRS[target],
                    "--count", "1", "--concurrency", "1", "--duration", "2",
                    "--timeout", str(timeout_s), "--max-errors", "1",
                    "--quiet"]
        r = sh(self.exec_argv("client", argv), timeout=15, check=False)
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False
        return r.returncode == 0 and res.get("count") == 1

    def wait_path(self, target, deadline_s=10, udp=False):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.probe(target, udp=udp):
                return True
            time.sleep(0.05)
        return False

    def ct_stats(self):
        """The node's conntrack statistics summed over CPUs
        (/proc/net/stat/nf_conntrack, per namespace); {} if unreadable."""
        text = None
        if self.drive is not None and self.drive.poll() is None:
            # nftdrive lives in the node namespace: its /proc/PID/net is
            # the node's, read without starting a process around a run.
            try:
                with open("/proc/%d/net/stat/nf_conntrack"
                          % self.drive.pid) as f:
                    text = f.read()
            except OSError:
                pass
        if text is None:
            r = self.run_in("node", ["cat", "/proc/net/stat/nf_conntrack"],
                            check=False, timeout=10)
            text = r.stdout if r.returncode == 0 else ""
        lines = text.split("\n")
        if len(lines) < 2:
            return {}
        names = lines[0].split()
        out = {}
        for line in lines[1:]:
            vals = line.split()
            if len(vals) != len(names):
                continue
            for n, v in zip(names, vals):
                out[n] = out.get(n, 0) + int(v, 16)
        # "entries" is the same count on every line, not per CPU
        if "entries" in out:
            out["entries"] = int(lines[1].split()[0], 16)
        return out

    def ct_flush(self):
        """Empty the node's conntrack table (this namespace's entries
        only) so that every run starts from the same state: the entries
        of earlier runs (TCP TIME_WAIT 120 s, UDP 30 s) would otherwise
        pile up, and the table's limit is the machine's, shared by every
        namespace: a full table drops new flows everywhere. False when
        the conntrack tool is missing."""
        if shutil.which("conntrack") is None:
            return False
        # nsenter joins the network namespace only: quicker than ip netns
        # exec, which also remounts /sys.
        path = "/run/netns/%s" % self.ns("node")
        if shutil.which("nsenter") and os.path.exists(path):
            argv = ["nsenter", "--net=" + path, "conntrack", "-F"]
        else:
            argv = self.exec_argv("node", ["conntrack", "-F"])
        return sh(argv, check=False, timeout=30).returncode == 0

    def table(self, family="inet", name="ferry"):
        r = self.run_in("node", ["nft", "list", "table", family, name],
                        check=False)
        return r.stdout if r.returncode == 0 else ""

    def destroy(self):
        # A second Ctrl-C must not cut the cleanup short; every step of it
        # is bounded in time.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        self.stop_proxies()
        self.stop_backend()
        if self.drive is not None:
            self.procs.stop(self.drive)
            self.drive = None
        self.procs.stop_all()
        if self.dnat and self.ns("node") in self.namespaces:
            # (the namespace's end would take it too; said for the reader)
            self.run_in("node", ["nft", "delete", "table", "ip", DNAT_TABLE],
                        check=False)
            self.dnat = False
        if self.ns("node") in self.namespaces:
            r = self.run_in("node", [self.args.nftdrive, "cleanup"],
                            check=False)
            if r.returncode != 0:
                log("nftdrive cleanup: exit %d: %s" % (
                    r.returncode, r.stderr.strip()[-200:]))
        for n in reversed(self.namespaces):
            sh(["ip", "netns", "del", n], check=False)
        self.namespaces = []


# ---------------------------------------------------------------- targets

def kube_dnat_rules():
    """The reference: one ClusterIP, DNAT_IP port 80/tcp and 53/udp, one
    endpoint each, written in the shape kube-proxy's nftables mode gives a
    Service (KEP 3866): a "services" chain that looks the destination up
    in a verdict map, a chain per service that marks traffic from outside
    the cluster for masquerade and picks an endpoint with `numgen random
    mod N vmap`, a chain per endpoint that marks hairpin traffic and
    DNATs, masquerading on the mark in postrouting, and the filter hooks
    kube-proxy keeps beside them (firewall, no-endpoint and cluster-IP
    checks on new connections), here with nothing in their maps. Names
    are shortened; the work per packet is the same shape."""
    cluster = "198.18.20.0/23"  # the client's and the backend's subnets
    svc = []
    for proto, port, name in (("tcp", DNAT_PORT, "tcp80"),
                              ("udp", UDP_SERVICE_PORT, "udp53")):
        ep = "endpoint-bench-%s-%s-%d" % (name, BACKEND_IP, DNAT_EP_PORT)
        svc.append((proto, port, name, ep))
    out = ["table ip %s {" % DNAT_TABLE,
           '\tcomment "bench/run kernel: one ClusterIP in the shape of '
           'kube-proxy\'s nftables mode"',
           "\tset cluster-ips { type ipv4_addr; elements = { %s } }" % DNAT_IP,
           "\tset nodeport-ips { type ipv4_addr; }",
           "\tmap service-ips {",
           "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
           "\t\telements = { %s }" % ", ".join(
               "%s . %s . %d : goto service-bench-%s" % (DNAT_IP, proto, port,
                                                         name)
               for proto, port, name, _ in svc),
           "\t}",
           "\tmap service-nodeports { type inet_proto . inet_service : "
           "verdict; }",
           "\tmap no-endpoint-services { type ipv4_addr . inet_proto . "
           "inet_service : verdict; }",
           "\tmap no-endpoint-nodeports { type inet_proto . inet_service : "
           "verdict; }",
           "\tmap firewall-ips { type ipv4_addr . inet_proto . inet_service "
           ": verdict; }",
           "\tchain filter-prerouting {",
           "\t\ttype filter hook prerouting priority dstnat - 10; "
           "policy accept;",
           "\t\tct state new jump firewall-check", "\t}",
           "\tchain filter-input {",
           "\t\ttype filter hook input priority -110; policy accept;",
           "\t\tct state new jump nodeport-endpoints-check",
           "\t\tct state new jump service-endpoints-check", "\t}",
           "\tchain filter-forward {",
           "\t\ttype filter hook forward priority -110; policy accept;",
           "\t\tct state new jump service-endpoints-check",
           "\t\tct state new jump cluster-ips-check", "\t}",
           "\tchain filter-output {",
           "\t\ttype filter hook output priority -110; policy accept;",
           "\t\tct state new jump service-endpoints-check",
           "\t\tct state new jump firewall-check", "\t}",
           "\tchain filter-output-post-dnat {",
           "\t\ttype filter hook output priority -90; policy accept;",
           "\t\tct state new jump cluster-ips-check", "\t}",
           "\tchain nat-prerouting {",
           "\t\ttype nat hook prerouting priority dstnat; policy accept;",
           "\t\tjump services", "\t}",
           "\tchain nat-output {",
           "\t\ttype nat hook output priority -100; policy accept;",
           "\t\tjump services", "\t}",
           "\tchain nat-postrouting {",
           "\t\ttype nat hook postrouting priority srcnat; policy accept;",
           "\t\tjump masquerading", "\t}",
           "\tchain firewall-check {",
           "\t\tip daddr . meta l4proto . th dport vmap @firewall-ips", "\t}",
           "\tchain service-endpoints-check {",
           "\t\tip daddr . meta l4proto . th dport vmap "
           "@no-endpoint-services", "\t}",
           "\tchain nodeport-endpoints-check {",
           "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap "
           "@no-endpoint-nodeports", "\t}",
           # after DNAT, a packet still bound to a ClusterIP asked for a
           # port the Service does not have
           "\tchain cluster-ips-check {",
           "\t\tip daddr @cluster-ips reject", "\t}",
           "\tchain mark-for-masquerade {",
           "\t\tmeta mark set meta mark | 0x00004000", "\t}",
           "\tchain masquerading {",
           "\t\tmeta mark & 0x00004000 == 0 return",
           "\t\tmeta mark set meta mark ^ 0x00004000",
           "\t\tmasquerade fully-random", "\t}",
           "\tchain services {",
           "\t\tip daddr . meta l4proto . th dport vmap @service-ips",
           "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap "
           "@service-nodeports", "\t}"]
    for proto, port, name, ep in svc:
        out += ["\tchain service-bench-%s {" % name,
                "\t\tip daddr %s %s dport %d ip saddr != %s jump "
                "mark-for-masquerade" % (DNAT_IP, proto, port, cluster),
                "\t\tnumgen random mod 1 vmap { 0 : goto %s }" % ep, "\t}",
                "\tchain %s {" % ep,
                "\t\tip saddr %s jump mark-for-masquerade" % BACKEND_IP,
                "\t\tmeta l4proto %s dnat to %s:%d" % (proto, BACKEND_IP,
                                                       DNAT_EP_PORT),
                "\t}"]
    out.append("}")
    return "\n".join(out) + "\n"


_RUN = None


def bench_run_module():
    """bench/run, imported once for its proxy config writers: the proxies
    here get the configuration they get there."""
    global _RUN
    if _RUN is None:
        import importlib.machinery
        import importlib.util
        loader = importlib.machinery.SourceFileLoader(
            "bench_run", os.path.join(HERE, "run"))
        spec = importlib.util.spec_from_loader("bench_run", loader)
        _RUN = importlib.util.module_from_spec(spec)
        loader.exec_module(_RUN)
    return _RUN


def proxy_config(target, work, udp, cpus):
    """bench/run's config of <target>, made to listen on the node's
    address and to reach the backend's proxy port: bench/run writes one
    address for both (loopback), so it writes the node's for both here
    and the backend's is put in after."""
    run = bench_run_module()
    run.HOST, run.BACKEND_PORT, run.PROXY_CPU = NODE_C_IP, PROXY_EP_PORT, cpus
    run.PORTS.update(PROXY_PORTS)
    if target == "ferry":
        text = run.ferry_config(udp)
    elif target == "haproxy":
        text = run.haproxy_config()
    else:
        text = run.nginx_config(work, udp)
    wrong = "%s:%d" % (NODE_C_IP, PROXY_EP_PORT)
    if text.count(wrong) != 1:
        raise Failed("bench/run's %s config changed shape: %d backend "
                     "address(es) found" % (target, text.count(wrong)))
    return text.replace(wrong, "%s:%d" % (BACKEND_IP, PROXY_EP_PORT))


def proxy_argv(target, args, work, udp):
    names = {"ferry": "ferry.yaml", "haproxy": "haproxy.cfg",
             "nginx": "nginx.conf"}
    path = os.path.join(work, names[target])
    with open(path, "w") as f:
        f.write(proxy_config(target, work, udp, args.proxy_cpus))
    if target == "ferry":
        return [args.ferry, "-c", path]
    if target == "haproxy":
        return [shutil.which("haproxy"), "-db", "-f", path]
    return [shutil.which("nginx"), "-p", work + "/", "-c", path, "-e",
            os.path.join(work, "nginx-error.log")]


def tree_cpu_s(pid, depth=0):
    """CPU seconds of a process: every thread (ferry's relay workers are
    threads) and its child processes (NGINX's workers), from the
    scheduler's clocks; None if it is gone."""
    try:
        total, kids = 0.0, []
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0]) / 1e9
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    kids += [int(k) for k in f.read().split()]
            except OSError:
                pass
        for k in kids if depth < 2 else []:
            total += tree_cpu_s(k, depth + 1) or 0.0
        return total
    except (OSError, IndexError, ValueError):
        return None


# ------------------------------------------------------------ measurements

def cpu_times():
    """/proc/stat per CPU: {cpu: [user, nice, system, idle, iowait, irq,
    softirq, steal]} in ticks."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = [int(x) for x in line.split()[1:9]]
    return out


def busy_split(t0, t1):
    """Seconds over every CPU: (busy, user+nice, system, irq+softirq)."""
    user = sysc = irq = 0
    for cpu, v1 in t1.items():
        v0 = t0.get(cpu, v1)
        d = [b - a for a, b in zip(v0, v1)]
        user += d[0] + d[1]
        sysc += d[2]
        irq += d[5] + d[6]
    return ((user + sysc + irq) / TICK, user / TICK, sysc / TICK, irq / TICK)


def proc_cpu_s(pid):
    """CPU seconds of a process, all its threads (utime + stime)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def sched_s(pid):
    """CPU seconds of one thread from the scheduler's nanosecond clock
    (/proc/PID/schedstat; with tick-based accounting, as here, it holds
    the softirq work done in the thread's context too); None if gone."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def ksoftirqd_pids():
    """The per-CPU threads that take over softirq work under load."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/comm" % d) as f:
                    if f.read().startswith("ksoftirqd/"):
                        out.append(int(d))
            except OSError:
                pass
    return out


def forks():
    """Processes created since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("processes "):
                return int(line.split()[1])
    return 0


def others_cpu(exclude):
    """{pid: CPU seconds} of every user-space process but <exclude>
    (kernel threads such as ksoftirqd do the dataplane's work and are not
    counted as others). A gauge of what else ran, and a low one: a process
    that started and ended between two readings is not seen (the count of
    processes started, forks(), says how many there were)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if not f.read(1):
                    continue  # a kernel thread
        except OSError:
            continue
        s = proc_cpu_s(int(d))
        if s is not None:
            out[int(d)] = s
    return out


def others_delta(before, after):
    return sum(max(0.0, v - before.get(pid, 0.0)) for pid, v in after.items())


def settle(deadline_s, window_s=0.5, max_busy=0.1):
    """Wait, up to <deadline_s>, for a <window_s> during which every CPU
    together was busy less than <max_busy> of one CPU: a quiet machine to
    start a run on. Returns the seconds waited, or None at the deadline
    (the run then starts anyway and says so)."""
    t0 = time.monotonic()
    while True:
        c0 = cpu_times()
        time.sleep(window_s)
        busy = busy_split(c0, cpu_times())[0]
        waited = time.monotonic() - t0
        if busy < max_busy * window_s:
            return round(waited, 1)
        if waited >= deadline_s:
            return None


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def units(rec):
    """Units of work of one run: connections, requests or GB moved."""
    r = rec["result"]
    if SCENARIOS[rec["scenario"]]["unit"] == "GB":
        return (r["bytes_sent"] + r["bytes_recv"]) / 1e9
    return r["count"]


# ------------------------------------------------------------------ running

class Bench:
    def __init__(self, args, lab, raw):
        self.args = args
        self.lab = lab
        self.runs = []
        self.failures = []
        self.ksoftirqd = ksoftirqd_pids()
        self.runs_path = os.path.join(raw, "runs.jsonl")
        if os.path.exists(self.runs_path):
            os.remove(self.runs_path)

    def record(self, rec):
        self.runs.append(rec)
        with open(self.runs_path, "a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")

    def fail(self, scenario, target, why):
        log("%s/%s FAILED: %s" % (scenario, target, why))
        self.failures.append((scenario, target, why))
        self.record({"scenario": scenario, "target": target, "failed": why})

    def run_one(self, scenario, target, rnd, settled):
        sc = SCENARIOS[scenario]
        addrs = UDP_ADDRS if sc.get("proto") == "udp" else ADDRS
        argv = self.lab.exec_argv(
            "client", [self.args.bench] + sc["client"]
            + ["--target", addrs[target], "--label", target,
               "--duration", str(self.args.duration), "--quiet"],
            self.args.client_cpus)
        backend = self.lab.backend
        mine = {os.getpid(), backend.pid}
        if self.lab.drive is not None:
            mine.add(self.lab.drive.pid)
        # Every proxy runs through every round (idle but for its own
        # target's run): all of them are the lab's.
        proxies = {t: p.pid for t, p in self.lab.proxies.items()}
        mine.update(proxies.values())
        flushed = self.lab.ct_flush()
        ct0 = self.lab.ct_stats()
        # The lab's own threads: the backend, nftdrive and ksoftirqd (the
        # client is a child: its CPU comes from getrusage once reaped).
        lab_pids = [backend.pid] + self.ksoftirqd + (
            [self.lab.drive.pid] if self.lab.drive is not None else [])
        b0 = {p: sched_s(p) for p in lab_pids}
        x0 = {t: tree_cpu_s(pid) for t, pid in proxies.items()}
        o0 = others_cpu(mine)
        c0 = children_cpu_s()
        load = os.getloadavg()[0]
        f0 = forks()
        t0, w0 = cpu_times(), time.monotonic()
        try:
            res = subprocess.run(argv, capture_output=True, text=True,
                                 stdin=subprocess.DEVNULL,
                                 timeout=self.args.duration + 30)
        except subprocess.TimeoutExpired:
            self.fail(scenario, target, "client did not finish in time")
            return
        t1, wall = cpu_times(), time.monotonic() - w0
        f1 = forks()
        c1 = children_cpu_s()
        b1 = {p: sched_s(p) for p in lab_pids}
        x1 = {t: tree_cpu_s(pid) for t, pid in proxies.items()}
        o1 = others_cpu(mine)
        ct1 = self.lab.ct_stats()
        results = [json.loads(l) for l in res.stdout.splitlines()
                   if l.startswith("{") and '"event"' not in l]
        if res.returncode != 0 or not results:
            self.fail(scenario, target, "client exit %s: %s" % (
                res.returncode, res.stderr.strip()[-300:]))
            return
        busy, user, sysc, irq = busy_split(t0, t1)
        rec = {"scenario": scenario, "target": target, "round": rnd,
               "wall_s": round(wall, 3), "result": results[-1],
               "load1": load, "settle_s": settled,
               "ct_flushed": flushed,
               # None: not checked (--settle 0)
               "quiet": None if settled == -1 else settled is not None,
               "cpu_busy_s": busy, "cpu_user_s": user,
               "cpu_system_s": sysc, "cpu_irq_s": irq,
               "client_cpu_s": c1 - c0,
               "backend_cpu_s": delta(b0, b1, [backend.pid]),
               "ksoftirqd_cpu_s": delta(b0, b1, self.ksoftirqd),
               "nftdrive_cpu_s": delta(b0, b1, lab_pids[1 + len(self.ksoftirqd):]),
               "others_cpu_s": others_delta(o0, o1),
               # the client's own start is one of them
               "forks": f1 - f0,
               "per_cpu_busy_s": {str(c): busy_split({c: t0[c]}, {c: v})[0]
                                  for c, v in t1.items() if c in t0}}
        # The proxies' CPU: the target's own, and the idle others'
        # (timers; a gauge of noise, normally near zero).
        px = {t: x1[t] - x0[t] for t in proxies
              if x0.get(t) is not None and x1.get(t) is not None}
        rec["proxy_cpu_s"] = px.get(target, 0.0)
        rec["idle_proxies_cpu_s"] = sum(v for t, v in px.items()
                                        if t != target)
        rec["lab_cpu_s"] = rec["client_cpu_s"] + sum(
            rec[k] or 0 for k in ("backend_cpu_s", "ksoftirqd_cpu_s",
                                  "nftdrive_cpu_s", "proxy_cpu_s",
                                  "idle_proxies_cpu_s"))
        if ct0 and ct1:
            rec["conntrack"] = {k: ct1[k] - ct0.get(k, 0) for k in CT_KEYS
                                if k in ct1}
            rec["conntrack"]["entries_after"] = ct1.get("entries")
        if backend.poll() is not None:
            rec["backend_died"] = backend.returncode
        self.record(rec)
        log("%-11s %-6s round %d: %s" % (scenario, target, rnd, brief(rec)))

    def run_scenario(self, scenario):
        log("scenario %s: %s" % (scenario, SCENARIOS[scenario]["what"]))
        targets = scenario_targets(self.args, scenario)
        self.lab.start_backend(scenario)
        try:
            for t, why in self.lab.start_proxies(scenario, targets).items():
                self.fail(scenario, t, why)
                targets.remove(t)
            for rnd in range(1, self.args.rounds + 1):
                # Once per round: the two runs of a round follow each
                # other at once, so that what disturbs one disturbs the
                # other too, as far as can be.
                settled = settle(self.args.settle) if self.args.settle > 0 \
                    else -1
                # Which target goes first rotates too (direct, kernel |
                # kernel, direct | ... with two): the first run of a round
                # starts on the machine the settle found quiet, the later
                # ones not always; a fixed order would favour one target.
                k = (rnd - 1) % len(targets)
                for t in targets[k:] + targets[:k]:
                    if self.lab.backend.poll() is not None:
                        raise Failed("the backend exited with %s" %
                                     self.lab.backend.returncode)
                    self.run_one(scenario, t, rnd, settled)
        finally:
            self.lab.stop_proxies()
            self.lab.stop_backend()


def scenario_targets(args, scenario):
    """The targets of --targets that serve <scenario>'s protocol."""
    udp = SCENARIOS[scenario].get("proto") == "udp"
    return [t for t in args.targets if t in (UDP_TARGETS if udp
                                             else ALL_TARGETS)]


def delta(before, after, pids):
    """Seconds the threads <pids> ran between two readings."""
    vals = [after.get(p) - before.get(p) for p in pids
            if before.get(p) is not None and after.get(p) is not None]
    return sum(vals) if vals else (0.0 if not pids else None)


def brief(rec):
    r = rec["result"]
    if r["unit"] == "byte":
        s = "%.2f Gbit/s" % (r["throughput_mbit_s"] / 1000)
    else:
        s = "%.0f %s/s" % (r["rate"], r["unit"])
    n = units(rec)
    if n > 0:
        scale, unit = COST_SCALE[SCENARIOS[rec["scenario"]]["unit"]]
        s += ", all cores %.1f %s" % (rec["cpu_busy_s"] / n * scale, unit)
    if r["errors_total"]:
        s += ", %d errors %s" % (r["errors_total"],
                                 {k: v for k, v in r["errors"].items() if v})
    if rec["quiet"] is False:
        s += ", the machine was not quiet at the start"
    if rec["others_cpu_s"] > 0.05 * rec["wall_s"]:
        s += ", others %.2f s" % rec["others_cpu_s"]
    return s


# ------------------------------------------------------------------ summary

def per_unit(rec, key):
    n = units(rec)
    v = rec.get(key)
    if v is None or n <= 0:
        return None
    return v / n * COST_SCALE[SCENARIOS[rec["scenario"]]["unit"]][0]


METRICS = [
    # key, value of one run, higher is better
    ("rate", lambda rec: rec["result"]["rate"] if rec["result"]["unit"] != "byte"
     else None, True),
    ("gbit", lambda rec: rec["result"]["throughput_mbit_s"] / 1000, True),
    ("cpu", lambda rec: per_unit(rec, "cpu_busy_s"), False),
    ("cpu_lab", lambda rec: per_unit(rec, "lab_cpu_s"), False),
    ("cpu_irq", lambda rec: per_unit(rec, "cpu_irq_s"), False),
    ("cpu_proxy", lambda rec: per_unit(rec, "proxy_cpu_s"), False),
    ("others_s", lambda rec: rec["others_cpu_s"], False),
    # all cores' busy time the lab's threads do not account for: other
    # work on the machine (and the harness, and the sampling error of
    # /proc/stat's ticks)
    ("not_lab_s", lambda rec: rec["cpu_busy_s"] - rec["lab_cpu_s"]
     if "lab_cpu_s" in rec else None, False),
    ("forks", lambda rec: rec.get("forks"), False),
    ("p50", lambda rec: rec["result"].get("p50_us"), False),
    ("p99", lambda rec: rec["result"].get("p99_us"), False),
    ("p999", lambda rec: rec["result"].get("p999_us"), False),
    ("errors", lambda rec: rec["result"]["errors_total"], False),
    ("ct_trouble", lambda rec: sum(rec["conntrack"].get(k, 0) for k in (
        "found", "insert_failed", "drop", "early_drop", "clashres"))
     if "conntrack" in rec else None, False),
    ("quiet", lambda rec: None if rec.get("quiet") is None
     else int(rec["quiet"]), True),
]
SUMMED = ("errors", "quiet", "ct_trouble")
# judged against the 5 % goal
JUDGED = ("rate", "gbit", "cpu", "cpu_lab")
# with their spread in kernel.json (bench/run --compare reads it)
SPREAD = JUDGED + ("cpu_proxy", "p50", "p99", "p999")


def medians(runs):
    by = {}
    for rec in runs:
        if "failed" in rec:
            continue
        by.setdefault((rec["scenario"], rec["target"]), []).append(rec)
    out = {}
    for key, recs in by.items():
        m = {"rounds": len(recs)}
        for name, fn, _ in METRICS:
            vals = [v for v in (fn(r) for r in recs) if v is not None]
            if vals:
                m[name] = sum(vals) if name in SUMMED else statistics.median(vals)
                if name in JUDGED:
                    m[name + "_min"], m[name + "_max"] = min(vals), max(vals)
                if name in SPREAD:
                    # for bench/run --compare: median, min-max, 95 %
                    m[name + "_stats"] = benchstats.summarize(vals)
        out[key] = m
    for (sc, t), m in out.items():
        for key in ("cpu", "cpu_lab"):
            net = net_of_direct(runs, sc, t, key) if t != "direct" else []
            if net:
                m[key + "_net"] = statistics.median(net)
                m[key + "_net_stats"] = benchstats.summarize(net)
    return out


def by_round(runs, scenario, metric):
    """{round: {target: value of <metric>}}."""
    fn = [f for n, f, _ in METRICS if n == metric][0]
    by = {}
    for rec in runs:
        if "failed" not in rec and rec["scenario"] == scenario:
            by.setdefault(rec["round"], {})[rec["target"]] = fn(rec)
    return by


def round_ratios(runs, scenario, metric, target="kernel"):
    """target/direct of each round (runs close in time): the spread says
    how far one ratio can be trusted."""
    by = by_round(runs, scenario, metric)
    out = []
    for rnd in sorted(by):
        d, k = by[rnd].get("direct"), by[rnd].get(target)
        if d and k is not None:
            out.append(k / d)
    return out


def net_of_direct(runs, scenario, target, metric="cpu"):
    """<metric> of <target> less direct's in the same round, per round:
    what the target adds to reaching the backend directly (the client's
    and the backend's own work, the forwarding node) — the dataplane's
    or the proxy's cost."""
    by = by_round(runs, scenario, metric)
    return [by[r][target] - by[r]["direct"] for r in sorted(by)
            if by[r].get(target) is not None
            and by[r].get("direct") is not None]


def ratio(med, scenario, metric, target="kernel"):
    d = med.get((scenario, "direct"), {}).get(metric)
    k = med.get((scenario, target), {}).get(metric)
    if not d or k is None:
        return None
    return k / d


def fmt(v, nd=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    return "%.*f" % (nd, v)


def verdict(r, higher_better):
    if r is None:
        return "–"
    ok = r >= 1 - WITHIN if higher_better else r <= 1 + WITHIN
    return "yes" if ok else "**no**"


def cmd_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "n/a"


def shown(arg):
    """A path under the repository relative to it: no path of the machine
    in the summary."""
    if os.path.isabs(arg) and arg.startswith(ROOT + os.sep):
        return os.path.relpath(arg, ROOT)
    return arg


def machine_rows(args):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    # The engine measured is the one nftdrive was built from: the git
    # state of the tree that holds the binary (a worktree, maybe).
    tree = os.path.dirname(args.nftdrive)
    rev = cmd_out(["git", "-C", tree, "rev-parse", "--short", "HEAD"])
    dirty = cmd_out(["git", "-C", tree, "status", "--porcelain",
                     "--untracked-files=no"])
    return [
        ("CPU", "%s, %d logical CPUs" % (model, os.cpu_count())),
        ("kernel", platform.release()),
        ("OS", cmd_out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])),
        ("nft", cmd_out(["nft", "--version"])),
        ("ferry (nftdrive's tree)", "git %s%s, %s" % (
            rev, " + local changes" if dirty not in ("", "n/a") else "",
            shown(args.nftdrive))),
        ("pinning", "client on CPU %s, backend on CPU %s; the harness with "
         "the client" % (args.client_cpus, args.backend_cpus)
         if os.cpu_count() >= 2 else "none (one CPU)"),
        ("node's conntrack table emptied before each run",
         "yes (conntrack -F)" if shutil.which("conntrack") else
         "no: the conntrack tool is missing (apt-get install conntrack); "
         "entries of earlier runs pile up"),
        ("conntrack max", open("/proc/sys/net/netfilter/nf_conntrack_max").read().strip()
         if os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max") else "n/a"),
    ]


def paired(runs, scenario, metric):
    """Median of the per-round ratios, or None."""
    rr = round_ratios(runs, scenario, metric)
    return statistics.median(rr) if rr else None


TARGET_WHAT = {
    "direct": "the backend's own address, routed by the node, no NAT",
    "dnat": "a ClusterIP in kube-proxy's nftables shape (table ip %s), "
            "DNAT to the backend" % DNAT_TABLE,
    "kernel": "a ClusterIP in ferry's table (inet ferry), DNAT to the "
              "backend",
    "ferry": "ferry's proxy in the node namespace (bench/run's config)",
    "haproxy": "HAProxy in the node namespace (bench/run's config)",
    "nginx": "NGINX stream in the node namespace (bench/run's config)",
}


def spread(m, key, nd):
    """'median [min–max]' of a figure, or '–'."""
    st = m.get(key + "_stats")
    if not st:
        return fmt(m.get(key), nd)
    if st["n"] < 2:
        return fmt(st["median"], nd)
    return "%s [%s–%s]" % (fmt(st["median"], nd), fmt(st["min"], nd),
                           fmt(st["max"], nd))


def all_targets_md(bench, med, args):
    """Every target of every scenario: rate, the CPU per unit of work and
    what it costs beyond reaching the backend directly."""
    lines = ["", "## Every target", "",
             "Medians over rounds, [min–max] beside them. *CPU, lab "
             "threads*: the client, the backend, the proxies, nftdrive and "
             "ksoftirqd (scheduler clocks; the kernel's forwarding and NAT, "
             "softirq work, are in the time of the thread they interrupted, "
             "so a DNAT target's cost is there too) per unit of work; other "
             "processes of the machine are not. *CPU, all cores*: busy time "
             "of every CPU (/proc/stat) per unit: the same plus whatever "
             "else the machine did. *beyond direct*: the figure less the "
             "direct run's of the same round (the client's, the backend's "
             "and the forwarding node's share), median of the per-round "
             "differences: the target's own cost. *proxy process*: the "
             "proxy's own threads and processes; a DNAT target has none.",
             "",
             "| scenario | target | rate | CPU, lab threads | beyond direct "
             "| × direct's | CPU, all cores | beyond direct | proxy process "
             "| p50 µs | p99 µs | p99.9 µs | errors | conntrack trouble |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sc in args.scenarios:
        unit = SCENARIOS[sc]["unit"]
        cu = COST_SCALE[unit][1]
        rate_key, rnd = ("gbit", 2) if unit == "GB" else ("rate", 0)
        rate_unit = "Gbit/s" if unit == "GB" else "%s/s" % unit
        for t in scenario_targets(args, sc):
            m = med.get((sc, t))
            if not m:
                lines.append("| %s | %s | failed |%s" % (sc, t, " |" * 11))
                continue
            direct = t == "direct"
            r = ratio(med, sc, "cpu_lab", t)
            cells = [sc, t, "%s %s" % (spread(m, rate_key, rnd), rate_unit),
                     "%s %s" % (spread(m, "cpu_lab", 1), cu),
                     "–" if direct else spread(m, "cpu_lab_net", 1),
                     "–" if direct or r is None else "%.2f" % r,
                     "%s %s" % (spread(m, "cpu", 1), cu),
                     "–" if direct else spread(m, "cpu_net", 1),
                     fmt(m.get("cpu_proxy"), 1) if t in PROXIES else "–"]
            cells += [fmt(m.get(k), 0) if unit != "GB" else "–"
                      for k in ("p50", "p99", "p999")]
            cells += [fmt(m.get("errors"), 0), fmt(m.get("ct_trouble"), 0)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Targets: " + "; ".join(
        "*%s*: %s" % (t, TARGET_WHAT[t]) for t in args.targets) + "."]
    return lines


def summary_md(bench, med, args, started, finished, argv):
    lines = ["# Kernel dataplane between network namespaces", "",
             "`bench/run kernel%s` — %s to %s, %d round(s) × %g s per run, "
             "every target in each round, the first one rotating (direct, "
             "kernel, ... | kernel, ..., direct | ...)." % (
                 (" " + " ".join(shown(a) for a in argv)) if argv else "",
                 started, finished, args.rounds, args.duration), "",
             "client 198.18.20.2 → node (forwarding, table inet ferry) → "
             "backend 198.18.21.2, one process listening on two ports. "
             "*direct*: the client connects to 198.18.21.2:8081, routed by "
             "the node, no NAT. *kernel*: the client connects to the "
             "Service 198.18.128.80:80, which ferry's table DNATs to "
             "198.18.21.2:8080 (two ports, so that one target's conntrack "
             "entries never hold a tuple the other needs).", "",
             "*CPU, all cores*: the busy time of every CPU (user + nice + "
             "system + irq + softirq, /proc/stat) per unit of work. It holds "
             "the client, the backend, the kernel's forwarding and NAT "
             "(softirq on the sending core) — and whatever else the machine "
             "did. *CPU, lab threads*: the client (getrusage), the backend, "
             "nftdrive and ksoftirqd (their scheduler clocks) per unit; "
             "softirq work done in a thread's context is in its time, other "
             "processes are not. Values are medians over rounds. "
             "*kernel/direct, pairs*: the median of the per-round ratios "
             "(each kernel run against the direct run just before it), "
             "which drift and bursts of other work disturb least; the "
             "verdict uses it: rate ≥ 0.95, CPU ≤ 1.05. The other targets "
             "are in *Every target* below.", ""]
    lines += ["| scenario | measure | direct | kernel | kernel/direct, "
              "medians | kernel/direct, pairs | per-round ratios | "
              "within 5 % |", "|---|---|---|---|---|---|---|---|"]
    names = {"cpu": "CPU, all cores", "cpu_lab": "CPU, lab threads"}
    for sc in args.scenarios:
        unit = SCENARIOS[sc]["unit"]
        cost_unit = COST_SCALE[unit][1]
        d = med.get((sc, "direct"), {})
        k = med.get((sc, "kernel"), {})
        for key in JUDGED:
            if key == ("rate" if unit == "GB" else "gbit"):
                continue
            if key in ("rate", "gbit"):
                name = "Gbit/s" if unit == "GB" else "%s/s" % unit
                nd, hb = (2 if unit == "GB" else 0), True
            else:
                name, nd, hb = "%s (%s)" % (names[key], cost_unit), 1, False
            r, pr = ratio(med, sc, key), paired(bench.runs, sc, key)
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sc, name, fmt(d.get(key), nd), fmt(k.get(key), nd),
                "%.3f" % r if r is not None else "–",
                "%.3f" % pr if pr is not None else "–",
                " ".join("%.2f" % x for x in
                         round_ratios(bench.runs, sc, key)),
                verdict(pr, hb)))
    lines += all_targets_md(bench, med, args)
    lines += ["", "Beside them (medians over rounds unless said):", "",
              "| scenario | measure | direct | kernel |", "|---|---|---|---|"]
    for sc in args.scenarios:
        unit = SCENARIOS[sc]["unit"]
        cost_unit = COST_SCALE[unit][1]
        d = med.get((sc, "direct"), {})
        k = med.get((sc, "kernel"), {})
        rows = [("irq + softirq, /proc/stat (%s)" % cost_unit, "cpu_irq", 1)]
        if unit != "GB":
            rows += [("p50 latency (µs)", "p50", 0),
                     ("p99 latency (µs)", "p99", 0)]
        rows += [("busy time beyond the lab's threads, all cores (s per "
                  "run of %g s)" % args.duration, "not_lab_s", 2),
                 ("CPU of other processes seen (s per run)", "others_s", 2),
                 ("processes started per run (the client is 1)", "forks", 0),
                 ("rounds started on a quiet machine (of %d)" % args.rounds,
                  "quiet", 0),
                 ("conntrack clashes, failures, drops (all rounds)",
                  "ct_trouble", 0),
                 ("client errors (all rounds)", "errors", 0)]
        for name, key, nd in rows:
            lines.append("| %s | %s | %s | %s |" % (
                sc, name, fmt(d.get(key), nd), fmt(k.get(key), nd)))
    lines.append("")
    if bench.failures:
        lines += ["## Failures", ""]
        for sc, t, why in bench.failures:
            lines.append("- %s / %s: %s" % (sc, t, why))
        lines.append("")
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += ["| %s | %s |" % (k, v.replace("|", "/"))
              for k, v in machine_rows(args)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run kernel",
        description="the backend reached directly, through a kube-proxy-"
        "shaped DNAT, ferry's kernel dataplane and ferry, HAProxy and NGINX "
        "in the node, between network namespaces")
    ap.add_argument("--quick", action="store_true",
                    help="one round, 2 s runs, no --settle (about 15 s)")
    ap.add_argument("--rounds", type=int, help="rounds (25; quick 1)")
    ap.add_argument("--duration", type=float,
                    help="seconds per run (2)")
    ap.add_argument("--targets", default=",".join(ALL_TARGETS),
                    help="from (and default) %s; the UDP scenario leaves "
                    "out haproxy" % ",".join(ALL_TARGETS))
    ap.add_argument("--ferry", default=os.path.join(ROOT, "build", "proxy",
                                                    "ferry"),
                    help="the ferry binary of the ferry target")
    ap.add_argument("--proxy-cpus", default=None,
                    help="CPUs of the proxies in the node namespace "
                    "(taskset list; default: --backend-cpus)")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                    help="from %s (default %s)" % (",".join(SCENARIOS),
                                                   DEFAULT_SCENARIOS))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "bench",
                                                    "ferry-bench"))
    ap.add_argument("--nftdrive", default=os.path.join(
        ROOT, "build", "tests", "tools", "nftdrive"),
        help="the kernel dataplane driver (tests/tools/nftdrive)")
    ap.add_argument("--settle", type=float,
                    help="before each round, wait up to S seconds for a quiet "
                    "machine (all CPUs together under 10 %% of one CPU for "
                    "0.5 s); 0 = do not wait (15; quick 0)")
    ap.add_argument("--client-cpus", default="0",
                    help="CPUs of the load generator (taskset list; 0)")
    ap.add_argument("--backend-cpus", default="1",
                    help="CPUs of the backend (taskset list; 1)")
    ap.add_argument("--out", help="output directory (default "
                    "bench/results/<date>)")
    args = ap.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (1 if q else 25)
    args.duration = args.duration or 2.0
    if args.settle is None:
        args.settle = 0.0 if q else 15.0
    if not 0 <= args.settle <= 600:
        ap.error("--settle must be 0-600 s")
    if not (1 <= args.rounds <= 100 and 0.2 <= args.duration <= 600):
        ap.error("rounds must be 1-100 and duration 0.2-600 s")
    scen = []
    for s in args.scenarios.split(","):
        if s not in SCENARIOS:
            ap.error("unknown scenario %r (known: %s)" % (
                s, ",".join(SCENARIOS)))
        if s not in scen:
            scen.append(s)
    args.scenarios = scen
    targets = []
    for t in args.targets.split(","):
        if t not in ALL_TARGETS:
            ap.error("unknown target %r (known: %s)" % (
                t, ",".join(ALL_TARGETS)))
        if t not in targets:
            targets.append(t)
    if targets[:1] != ["direct"]:
        targets = ["direct"] + [t for t in targets if t != "direct"]
    args.targets = targets
    if args.proxy_cpus is None:
        args.proxy_cpus = args.backend_cpus
    try:
        cpu_set(args.proxy_cpus)
        if cpu_set(args.client_cpus) & cpu_set(args.backend_cpus) and \
                os.cpu_count() >= 2:
            ap.error("--client-cpus and --backend-cpus overlap")
    except ValueError:
        ap.error("CPU lists look like 0 or 0-3,6")
    args.bench = os.path.abspath(args.bench)
    args.nftdrive = os.path.abspath(args.nftdrive)
    args.ferry = os.path.abspath(args.ferry)
    return args


def why_not(args):
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "taskset"):
        if shutil.which(tool) is None:
            return "needs the %s command" % tool
    for path, what in ((args.bench, "ferry-bench"), (args.nftdrive, "nftdrive"),
                       (args.ferry, "ferry")):
        if what == "ferry" and "ferry" not in args.targets:
            continue
        if not os.access(path, os.X_OK):
            return "%s is missing at %s: build it first (meson setup build " \
                "&& ninja -C build), or pass --%s" % (
                    what, path, {"ferry-bench": "bench"}.get(what, what))
    for t in ("haproxy", "nginx"):
        if t in args.targets and shutil.which(t) is None:
            return "needs %s for the %s target (apt-get install %s), or " \
                "leave it out with --targets" % (
                    t, t, "haproxy" if t == "haproxy"
                    else "nginx-light libnginx-mod-stream")
    return None


def main(argv):
    args = parse_args(argv)
    why = why_not(args)
    if why:
        log(why)
        return 1
    if os.cpu_count() >= 2:
        os.sched_setaffinity(0, cpu_set(args.client_cpus))
    started = datetime.datetime.now().astimezone()
    out = os.path.abspath(args.out) if args.out else os.path.join(
        ROOT, "bench", "results", started.strftime("%Y-%m-%d"))
    raw = os.path.join(out, "raw", "kernel")
    os.makedirs(raw, exist_ok=True)
    procs = Procs()
    lab = Lab(args, raw, procs)
    atexit.register(lab.destroy)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    bench = Bench(args, lab, raw)
    log("kernel dataplane: scenarios %s, %d round(s) x %.1f s -> %s" % (
        ",".join(args.scenarios), args.rounds, args.duration, out))
    rc = 0
    try:
        lab.build()
        lab.start_backend("rr")
        # Nobody owns the Service address: before the table, it must not
        # answer; after, it must. So the kernel target is ferry's table.
        if not lab.wait_path("direct"):
            raise Failed("the backend is not reachable through the node")
        if lab.probe("kernel", 0.5):
            raise Failed("the Service address answers without ferry's table")
        lab.start_drive()
        if not lab.wait_path("kernel"):
            raise Failed("the Service does not answer with the table in place")
        # The same for the reference rule set. Both tables stay for the
        # whole run: every target crosses the same hooks.
        if "dnat" in args.targets:
            if lab.probe("dnat", 0.5):
                raise Failed("the reference ClusterIP answers without its "
                             "rules")
            lab.start_dnat()
            if not lab.wait_path("dnat"):
                raise Failed("the reference ClusterIP does not answer with "
                             "its rules in place (raw/kernel/kube-dnat.nft)")
        lab.stop_backend()
        with open(os.path.join(raw, "table-before.nft"), "w") as f:
            f.write(lab.table())
        for sc in args.scenarios:
            try:
                bench.run_scenario(sc)
            except Failed as e:
                for t in scenario_targets(args, sc):
                    bench.fail(sc, t, str(e))
        with open(os.path.join(raw, "table-after.nft"), "w") as f:
            f.write(lab.table())
        if lab.dnat:
            with open(os.path.join(raw, "dnat-table.nft"), "w") as f:
                f.write(lab.table("ip", DNAT_TABLE))
        if lab.drive.poll() is not None:
            bench.fail("-", "kernel", "nftdrive exited with %s during the "
                       "runs" % lab.drive.returncode)
    except Failed as e:
        log("FAILED: %s" % e)
        bench.failures.append(("setup", "-", str(e)))
        rc = 1
    finally:
        lab.destroy()
    finished = datetime.datetime.now().astimezone()
    med = medians(bench.runs)
    fmt_t = "%Y-%m-%d %H:%M:%S %Z"
    text = summary_md(bench, med, args, started.strftime(fmt_t),
                      finished.strftime(fmt_t), argv)
    with open(os.path.join(out, "kernel.md"), "w") as f:
        f.write(text)
    doc = {"command": " ".join(["bench/run", "kernel"]
                               + [shown(a) for a in argv]),
           "started": started.isoformat(), "finished": finished.isoformat(),
           "rounds": args.rounds, "duration_s": args.duration,
           "medians": {"%s/%s" % k: v for k, v in sorted(med.items())},
           "ratios": {sc: {m: ratio(med, sc, m) for m in
                           JUDGED + ("cpu_irq", "p50", "p99")}
                      for sc in args.scenarios},
           "paired_ratios": {sc: {m: paired(bench.runs, sc, m)
                                  for m in JUDGED}
                             for sc in args.scenarios},
           "targets": args.targets,
           "cpu_beyond_direct": {
               sc: {t: {k: med.get((sc, t), {}).get(k + "_net")
                        for k in ("cpu", "cpu_lab")}
                    for t in scenario_targets(args, sc) if t != "direct"}
               for sc in args.scenarios},
           "cpu_unit": {sc: COST_SCALE[SCENARIOS[sc]["unit"]][1]
                        for sc in args.scenarios},
           "failures": [{"scenario": s, "target": t, "why": w}
                        for s, t, w in bench.failures]}
    with open(os.path.join(out, "kernel.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    log("done in %.0f s: %s" % ((finished - started).total_seconds(),
                                os.path.join(out, "kernel.md")))
    return 1 if rc or bench.failures else 0
