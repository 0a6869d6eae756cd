"""bench/kernel_bench.py - `bench/run kernel`: a Service served by ferry's
kernel dataplane (table inet ferry, programmed by proxy/node/nft.c through
tests/tools/nftdrive) against the same backend reached directly, in the
same run, between three network namespaces:

    client  198.18.20.2  --veth--  198.18.20.1  node  198.18.21.1  --veth--  198.18.21.2  backend
                                   (ip_forward, table inet ferry)

The node namespace routes between the two links. In it, `nftdrive run`
programs one ClusterIP-style Service, 198.18.128.80:80, whose endpoint is
the backend, 198.18.21.2:8080. The client reaches:

    direct  198.18.21.2:8081   routed through the node, no NAT
    kernel  198.18.128.80:80   routed through the node, DNAT by ferry's
                               table to 198.18.21.2:8080

The backend process listens on both ports (ENDPOINT_PORT says why two).
Both paths cross the same node, the same table hooks and conntrack; the
only difference is the Service match and its DNAT. Nobody owns the
Service address: a connection to it works only through the table, which
the harness checks before it measures anything.

For each scenario it starts `ferry-bench serve` in the backend namespace,
then runs `ferry-bench` in the client namespace against direct and kernel
in turn, round after round (A B A B ...). Per run: the client's JSON
result, the busy time of every CPU from /proc/stat (user, nice, system,
irq, softirq: the kernel's forwarding and NAT run in softirq on the core
that sends, which is not the client's or the backend's process time), the
client's and the backend's own CPU, the CPU other user-space processes
of the machine took meanwhile and how many processes started (noise
gauges on a shared machine), and the node's conntrack statistics (a
tuple clash, an insert failure or a drop would mean the run measured
something else than the dataplane). With --settle, each round waits (a
bounded time) for a quiet machine before it starts.

Output, in <out> (bench/results/<date>/ by default): kernel.md (the
summary), kernel.json (medians and ratios), raw/kernel/ (runs.jsonl, the
service description, the table as listed after the runs, logs).

Everything it creates — the namespaces (and so their links), its
processes (stopped by PID), the table (`nftdrive cleanup` in the node
namespace) — is removed at the end, also on Ctrl-C, SIGTERM or an error.
Namespaces left by a run that was killed outright (SIGKILL) are removed
by the next run: their names carry the PID of the run that made them.
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
ADDRS = {"direct": "%s:%d" % (BACKEND_IP, DIRECT_PORT),
         "kernel": "%s:%d" % (SERVICE_IP, SERVICE_PORT)}
TARGETS = ["direct", "kernel"]
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
}
DEFAULT_SCENARIOS = "connrate,rr,stream_down"
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
        self.run_in("client", ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1",
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
                                                     "port": ENDPOINT_PORT}]}]}

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
        limit = int(self.args.rounds * len(TARGETS)
                    * (self.args.duration + self.args.settle + 60) + 60)
        p = self.procs.start(
            self.exec_argv("backend", [self.args.bench, "serve"]
                           + SCENARIOS[scenario]["serve"]
                           + ["--listen", "%s:%d" % (BACKEND_IP, ENDPOINT_PORT),
                              "--listen", "%s:%d" % (BACKEND_IP, DIRECT_PORT),
                              "--max-seconds", str(limit)],
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

    def probe(self, target, timeout_s=1.0):
        """One connection through <target>: True if it worked."""
        r = sh(self.exec_argv("client", [
            self.args.bench, "connrate", "--target", ADDRS[target],
            "--count", "1", "--concurrency", "1", "--duration", "2",
            "--timeout", str(timeout_s), "--max-errors", "1", "--quiet"]),
            timeout=15, check=False)
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False
        return r.returncode == 0 and res.get("count") == 1

    def wait_path(self, target, deadline_s=10):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.probe(target):
                return True
        return False

    def ct_stats(self):
        """The node's conntrack statistics summed over CPUs
        (/proc/net/stat/nf_conntrack, per namespace); {} if unreadable."""
        r = self.run_in("node", ["cat", "/proc/net/stat/nf_conntrack"],
                        check=False, timeout=10)
        lines = r.stdout.split("\n")
        if r.returncode != 0 or len(lines) < 2:
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

    def table(self):
        r = self.run_in("node", ["nft", "list", "table", "inet", "ferry"],
                        check=False)
        return r.stdout if r.returncode == 0 else ""

    def destroy(self):
        # A second Ctrl-C must not cut the cleanup short; every step of it
        # is bounded in time.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        self.stop_backend()
        if self.drive is not None:
            self.procs.stop(self.drive)
            self.drive = None
        self.procs.stop_all()
        if self.ns("node") in self.namespaces:
            r = self.run_in("node", [self.args.nftdrive, "cleanup"],
                            check=False)
            if r.returncode != 0:
                log("nftdrive cleanup: exit %d: %s" % (
                    r.returncode, r.stderr.strip()[-200:]))
        for n in reversed(self.namespaces):
            sh(["ip", "netns", "del", n], check=False)
        self.namespaces = []


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
        argv = self.lab.exec_argv(
            "client", [self.args.bench] + sc["client"]
            + ["--target", ADDRS[target], "--label", target,
               "--duration", str(self.args.duration), "--quiet"],
            self.args.client_cpus)
        backend = self.lab.backend
        mine = {os.getpid(), backend.pid}
        if self.lab.drive is not None:
            mine.add(self.lab.drive.pid)
        ct0 = self.lab.ct_stats()
        # The lab's own threads: the backend, nftdrive and ksoftirqd (the
        # client is a child: its CPU comes from getrusage once reaped).
        lab_pids = [backend.pid] + self.ksoftirqd + (
            [self.lab.drive.pid] if self.lab.drive is not None else [])
        b0 = {p: sched_s(p) for p in lab_pids}
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
        rec["lab_cpu_s"] = rec["client_cpu_s"] + sum(
            rec[k] or 0 for k in ("backend_cpu_s", "ksoftirqd_cpu_s",
                                  "nftdrive_cpu_s"))
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
        self.lab.start_backend(scenario)
        try:
            for rnd in range(1, self.args.rounds + 1):
                # Once per round: the two runs of a round follow each
                # other at once, so that what disturbs one disturbs the
                # other too, as far as can be.
                settled = settle(self.args.settle) if self.args.settle > 0 \
                    else -1
                # Which target goes first alternates too (direct, kernel |
                # kernel, direct | ...): the first run of a round starts
                # on the machine the settle found quiet, the second does
                # not always; a fixed order would favour one target.
                for t in (TARGETS if rnd % 2 else TARGETS[::-1]):
                    if self.lab.backend.poll() is not None:
                        raise Failed("the backend exited with %s" %
                                     self.lab.backend.returncode)
                    self.run_one(scenario, t, rnd, settled)
        finally:
            self.lab.stop_backend()


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
    ("others_s", lambda rec: rec["others_cpu_s"], False),
    # all cores' busy time the lab's threads do not account for: other
    # work on the machine (and the harness, and the sampling error of
    # /proc/stat's ticks)
    ("not_lab_s", lambda rec: rec["cpu_busy_s"] - rec["lab_cpu_s"]
     if "lab_cpu_s" in rec else None, False),
    ("forks", lambda rec: rec.get("forks"), False),
    ("p50", lambda rec: rec["result"].get("p50_us"), False),
    ("p99", lambda rec: rec["result"].get("p99_us"), False),
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
        out[key] = m
    return out


def round_ratios(runs, scenario, metric):
    """kernel/direct of each round (the two runs next to each other in
    time): the spread says how far one ratio can be trusted."""
    fn = [f for n, f, _ in METRICS if n == metric][0]
    by = {}
    for rec in runs:
        if "failed" not in rec and rec["scenario"] == scenario:
            by.setdefault(rec["round"], {})[rec["target"]] = fn(rec)
    out = []
    for rnd in sorted(by):
        d, k = by[rnd].get("direct"), by[rnd].get("kernel")
        if d and k is not None:
            out.append(k / d)
    return out


def ratio(med, scenario, metric):
    d = med.get((scenario, "direct"), {}).get(metric)
    k = med.get((scenario, "kernel"), {}).get(metric)
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
        ("conntrack max", open("/proc/sys/net/netfilter/nf_conntrack_max").read().strip()
         if os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max") else "n/a"),
    ]


def paired(runs, scenario, metric):
    """Median of the per-round ratios, or None."""
    rr = round_ratios(runs, scenario, metric)
    return statistics.median(rr) if rr else None


def summary_md(bench, med, args, started, finished, argv):
    lines = ["# Kernel dataplane between network namespaces", "",
             "`bench/run kernel%s` — %s to %s, %d round(s) × %g s per run, "
             "both targets in each round, the first one alternating (direct, "
             "kernel | kernel, direct | ...)." % (
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
             "verdict uses it: rate ≥ 0.95, CPU ≤ 1.05.", ""]
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
        description="ferry's kernel dataplane (table inet ferry) against "
        "the backend reached directly, between network namespaces")
    ap.add_argument("--quick", action="store_true",
                    help="one round, 2 s runs, no --settle (about 15 s)")
    ap.add_argument("--rounds", type=int, help="rounds (25; quick 1)")
    ap.add_argument("--duration", type=float,
                    help="seconds per run (2)")
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
    if not (1 <= args.rounds <= 100 and 0.5 <= args.duration <= 600):
        ap.error("rounds must be 1-100 and duration 0.5-600 s")
    scen = []
    for s in args.scenarios.split(","):
        if s not in SCENARIOS:
            ap.error("unknown scenario %r (known: %s)" % (
                s, ",".join(SCENARIOS)))
        if s not in scen:
            scen.append(s)
    args.scenarios = scen
    try:
        if cpu_set(args.client_cpus) & cpu_set(args.backend_cpus) and \
                os.cpu_count() >= 2:
            ap.error("--client-cpus and --backend-cpus overlap")
    except ValueError:
        ap.error("CPU lists look like 0 or 0-3,6")
    args.bench = os.path.abspath(args.bench)
    args.nftdrive = os.path.abspath(args.nftdrive)
    return args


def why_not(args):
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft", "taskset"):
        if shutil.which(tool) is None:
            return "needs the %s command" % tool
    for path, what in ((args.bench, "ferry-bench"), (args.nftdrive, "nftdrive")):
        if not os.access(path, os.X_OK):
            return "%s is missing at %s: build it first (meson setup build " \
                "&& ninja -C build), or pass --%s" % (
                    what, path, "bench" if what == "ferry-bench" else "nftdrive")
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
        lab.stop_backend()
        with open(os.path.join(raw, "table-before.nft"), "w") as f:
            f.write(lab.table())
        for sc in args.scenarios:
            try:
                bench.run_scenario(sc)
            except Failed as e:
                for t in TARGETS:
                    bench.fail(sc, t, str(e))
        with open(os.path.join(raw, "table-after.nft"), "w") as f:
            f.write(lab.table())
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
           "failures": [{"scenario": s, "target": t, "why": w}
                        for s, t, w in bench.failures]}
    with open(os.path.join(out, "kernel.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    log("done in %.0f s: %s" % ((finished - started).total_seconds(),
                                os.path.join(out, "kernel.md")))
    return 1 if rc or bench.failures else 0
