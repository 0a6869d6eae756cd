"""bench/cp_bench.py - `bench/run control-plane`: ferry's Kubernetes side at
scale, through the simulated API server (bench/cp_sim.py over
tests/kapisim).

Steps, each bounded in time:

1. Start the simulator with N Services x M endpoints (cp_sim.py) and time
   the full LIST of both kinds as ferry does it (pages of 500): the
   simulator's own share of the start-up.
2. Start ferry in Kubernetes mode (node n1, vip_interface none, admin and
   healthz on loopback ports, log level info so that its own timeline
   can be read) and poll /readyz every 20 ms: start -> first full table
   in force. VmHWM (peak RSS) from /proc/PID/status then and at the end.
3. Churn: C endpoint readiness changes at R per second, each a PUT of one
   EndpointSlice, flipping one endpoint of one of the K probe Services
   between ready and not ready. A probe Service is LoadBalancer +
   externalTrafficPolicy Local with its endpoints on node n1, so ferry
   answers on its healthCheckNodePort (127.0.0.1) with
   {"localEndpoints": n}: ferry updates that answer in the same callback
   that puts the new table in force (proxy_apply, then the health
   responders), so the first probe answer showing the new count is the
   moment the change is live. Latency = that moment minus the PUT's
   response (and minus its sending). A probe Service gets its next change
   only once the last one was seen, so every change is measured alone.
   Meanwhile bench/connprobe.py, a process of its own, opens new
   connections at a fixed rate through Service `conn-probe` (a NodePort
   whose one endpoint is an echo server on 127.0.0.1) and times each
   from its scheduled start to the first byte back: whether a busy
   control side holds up the data plane.
4. ferry's own view: ferry_network_programming_duration_seconds from
   /metrics (if /metrics fits its 64 MiB cap), the CPU of its API work
   and the tables it published (ferry_control_cpu_seconds_total and
   ferry_table_generation, before and after the churn), and the "change
   latency" of the tables its log names (event arrival -> table
   published; at most one patched table a second).

Results: <out>/control-plane.json, a control-plane section in
<out>/summary.md, raw files (config, logs, per-change JSON lines) in
<out>/raw/control-plane/.
"""

import datetime
import gzip
import http.client
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = "127.0.0.1"
# Where ferry's NodePorts and healthCheckNodePorts listen
# (node_port_addresses): loopback, except where the kernel steers Services
# (the nftables dataplane, the proxy's redirect steering), whose NodePorts
# refuse it (the veth address of the bench's namespace).
NODE_HOST = HOST
NFT_NODE_IP = "198.18.0.1"
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# healthCheckNodePorts come from this range (the simulator allocates them in
# order from its start): below the ephemeral range, away from the
# 30000-32767 other tests use.
NODE_PORTS = (29000, 29999)
ADMIN_PORT, HEALTHZ_PORT = 18090, 18091
PROBE_GAP = 0.005  # s between two probes of one change: the resolution...
PROBE_RATE = 1000  # ...unless that makes more probes per second than this
PROBE_INFLIGHT = 48  # open probe connections at most: ferry's health
# responders take 128 connections in all and close any more at once
MARK_BEGIN = "<!-- control-plane: begin -->"
MARK_END = "<!-- control-plane: end -->"

sys.path.insert(0, HERE)
import cp_sim  # noqa: E402


def log(msg):
    print("[bench/run %s] %s" % (time.strftime("%H:%M:%S"), msg),
          file=sys.stderr, flush=True)


def port_free(port):
    with socket.socket() as s:
        # SO_REUSEADDR: TIME_WAIT left by an earlier run does not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


def http_get(port, path, timeout=5.0, limit=None, host=None):
    """(status, body bytes) with a fresh connection; None on error."""
    try:
        with socket.create_connection((host or HOST, port),
                                      timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "\r\n" % path).encode())
            chunks = []
            n = 0
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                chunks.append(b)
                n += len(b)
                if limit and n > limit:
                    break
        data = b"".join(chunks)
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    except (OSError, ValueError, IndexError):
        return None


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid):
    """CPU seconds of every thread of <pid> (/proc/PID/schedstat alone
    is its first thread's)."""
    t = thread_cpu_s(pid)
    return sum(t.values()) if t else None


def thread_cpu_s(pid):
    """{tid: CPU seconds} of every thread of <pid>."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for t in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                out[int(t)] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
    return out


def split_cpu(pid, before):
    """CPU since <before> (thread_cpu_s) of <pid>'s first thread, which
    runs ferry's control loop (the API, tables, the kernel, health
    responders, admin), and of all its other threads (the workers)."""
    now = thread_cpu_s(pid)
    main = now.get(pid, 0) - before.get(pid, 0)
    rest = sum(v - before.get(t, 0) for t, v in now.items() if t != pid)
    return main, rest


CPU_PARTS = ("api", "tables", "workers")
OWN_COUNTERS = {"generation": "ferry_table_generation",
                "translated": "ferry_api_services_translated_total"}


def control_cpu():
    """ferry's own count of its API work's CPU, by part
    (ferry_control_cpu_seconds_total), and its table generation and
    Services translated (OWN_COUNTERS), or None."""
    m = http_get(ADMIN_PORT, "/metrics", timeout=60.0)
    if m is None or m[0] != 200:
        return None
    want = {'ferry_control_cpu_seconds_total{part="%s"}' % p: p
            for p in CPU_PARTS}
    want.update({v: k for k, v in OWN_COUNTERS.items()})
    out = {}
    for ln in m[1].decode(errors="replace").splitlines():
        f = ln.split()
        if len(f) == 2 and f[0] in want:
            out[want[f[0]]] = float(f[1])
    return out if len(out) == len(want) else None


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def cpu_set(spec):
    """'0-3,6' -> {0, 1, 2, 3, 6}"""
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def pct(vals, p):
    """Nearest-rank percentile."""
    if not vals:
        return None
    s = sorted(vals)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return None


# ------------------------------------------------------------------ parts

class Stopper:
    """Processes started here, stopped by PID."""

    def __init__(self):
        self.procs = []

    def add(self, p):
        self.procs.append(p)
        return p

    def stop(self, p, timeout=20):
        if p in self.procs:
            self.procs.remove(p)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        return p.returncode

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def start_sim(cfg, raw, stopper, conn_port=0):
    argv = [PY, os.path.join(HERE, "cp_sim.py")] + (
        ["--conn-probe-proxied"] if cfg["dataplane"] == "nftables" else []) + [
            "--services", str(cfg["services"]),
            "--endpoints", str(cfg["endpoints"]),
            "--probe-services", str(cfg["probes"]),
            "--conn-probe", str(conn_port),
            "--listen", "%s:0" % HOST,
            "--node-port-range", "%d-%d" % NODE_PORTS,
            "--history-size", str(max(10000, 4 * cfg["changes"]))]
    if os.cpu_count() >= 2:
        argv = ["taskset", "-c", cfg["sim_cpu"]] + argv
    err = open(os.path.join(raw, "sim.stderr"), "w")
    p = stopper.add(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.DEVNULL))
    err.close()
    end = time.monotonic() + 900
    line = b""
    while time.monotonic() < end and p.poll() is None:
        import select
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if r:
            line = p.stdout.readline()
            if line.startswith(b"{"):
                break
    if not line.startswith(b"{"):
        raise RuntimeError("simulator did not start (see raw/sim.stderr)")
    return p, json.loads(line)


CONN_PROBE_RATE = 200  # new connections per second during the churn


def start_echo(args, raw, stopper):
    """ferry-bench serve --mode echo on a free loopback port: the
    endpoint of Service conn-probe. Returns (process, port)."""
    bench = getattr(args, "bench", None) or os.path.join(
        ROOT, "build", "bench", "ferry-bench")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    err = open(os.path.join(raw, "echo.log"), "w")
    p = stopper.add(subprocess.Popen(
        [bench, "serve", "--mode", "echo", "--listen", "%s:%d" % (HOST, port),
         "--max-seconds", "7200"], stdout=err, stderr=err,
        stdin=subprocess.DEVNULL))
    err.close()
    if not wait_echo("%s:%d" % (HOST, port), 10):
        raise RuntimeError("the echo server did not start (raw/echo.log)")
    return p, port


def wait_echo(target, deadline_s):
    """True once <target> echoes a byte back, within <deadline_s>."""
    host, port = target.rsplit(":", 1)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(b"x")
                if s.recv(1) == b"x":
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def start_connprobe(cfg, raw, stopper, target, direct):
    secs = cfg["changes"] / cfg["rate"]
    argv = [PY, os.path.join(HERE, "connprobe.py"),
            "--target", "ferry=" + target, "--target", "direct=" + direct,
            "--rate", str(CONN_PROBE_RATE), "--duration", "%.1f" % secs,
            "--out", os.path.join(raw, "connprobe.json")]
    if os.cpu_count() >= 2:
        argv = ["taskset", "-c", cfg["sim_cpu"]] + argv
    return stopper.add(subprocess.Popen(argv, stdin=subprocess.DEVNULL))


def finish_connprobe(p, raw, stopper):
    if p is None:
        return {"failed_to_run": "conn-probe did not answer through ferry"}
    try:
        p.wait(timeout=60)  # its duration was the churn's
    except subprocess.TimeoutExpired:
        pass
    rc = stopper.stop(p)
    try:
        with open(os.path.join(raw, "connprobe.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"failed_to_run": "connprobe.py exited with %s" % rc}


# ferry's label selector for both kinds (watcher.c, no service-proxy-name)
SELECTOR = urllib.parse.quote(
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name")


LIST_PATHS = {"services": "/api/v1/services",
              "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices"}


def _list_kind(port, kind):
    """List one kind as ferry does (pages of 500, its label selector, gzip
    accepted): seconds, bytes on the wire, items, pages."""
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    path = LIST_PATHS[kind]
    t0 = time.monotonic()
    cont, nbytes, items, pages = "", 0, 0, 0
    while pages < 10000:
        q = "?limit=500&labelSelector=" + SELECTOR + (
            "&continue=" + cont if cont else "")
        conn.request("GET", path + q, headers={
            "Accept-Encoding": "gzip", "Accept": "application/json"})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError("list %s: HTTP %d" % (kind, r.status))
        nbytes += len(body)
        if r.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        d = json.loads(body)
        items += len(d["items"])
        pages += 1
        cont = urllib.parse.quote(d["metadata"].get("continue") or "")
        if not cont:
            break
    conn.close()
    return {"seconds": round(time.monotonic() - t0, 3), "bytes": nbytes,
            "items": items, "pages": pages}


def time_lists(port):
    """Each kind listed alone, one after the other."""
    return {k: _list_kind(port, k) for k in LIST_PATHS}


def time_lists_together(port):
    """Both kinds listed at the same time, as ferry does: wall seconds."""
    res = {}
    t0 = time.monotonic()
    ths = []
    for kind in ("services", "endpointslices"):
        th = threading.Thread(target=_list_one, args=(port, kind, res))
        th.start()
        ths.append(th)
    for th in ths:
        th.join(600)
    return round(time.monotonic() - t0, 3)


def _list_one(port, kind, res):
    res[kind] = _list_kind(port, kind)


def ferry_config(sim_port, dataplane="proxy", steering=None):
    return ("log: {level: info, format: text}\n"
            "kubernetes: {enabled: true, api_server: 'http://%s:%d', "
            "node_name: n1}\n"
            "node: {vip_interface: none, dataplane: %s, %s"
            "node_port_addresses: [%s], "
            "healthz_listen: '%s:%d'}\n"
            "admin: {enabled: true, listen: '%s:%d'}\n"
            % (HOST, sim_port, dataplane,
               "proxy_steering: %s, " % steering if steering else "",
               NODE_HOST, HOST, HEALTHZ_PORT, HOST, ADMIN_PORT))


def steered(cfg):
    """The kernel steers the Services (nftables, or the proxy dataplane's
    redirect steering): the bench runs in a network namespace of its own
    and the connection probe goes to a ClusterIP."""
    return cfg["dataplane"] == "nftables" or cfg.get("steering") == "redirect"


NETNS_ENV = "FERRY_CP_NETNS"


def run_in_netns(argv):
    """--dataplane nftables, or proxy with redirect steering: run this
    whole bench again inside a network
    namespace of its own (ferry's nftables table, the simulator, the
    clients, all in it), with a veth pair whose address routes the
    Services' ClusterIPs (198.18.0.0/15), and remove it afterwards."""
    ns = "ferrycp%d" % os.getpid()

    def ip(*a):
        subprocess.run(["ip"] + list(a), check=True, capture_output=True,
                       timeout=30)
    try:
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "link", "add", "cpa", "type", "veth", "peer", "name",
           "cpb")
        ip("-n", ns, "addr", "add", "198.18.0.1/15", "dev", "cpa")
        ip("-n", ns, "link", "set", "cpa", "up")
        ip("-n", ns, "link", "set", "cpb", "up")
    except (OSError, subprocess.SubprocessError) as e:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        log("cannot make the network namespace: %s" % e)
        return 1
    env = dict(os.environ, **{NETNS_ENV: ns})
    inner = None
    try:
        inner = subprocess.Popen(["ip", "netns", "exec", ns, PY,
                                  os.path.join(HERE, "run")] + argv, env=env)
        return inner.wait(timeout=7200)
    finally:
        # Cleaning up: a second signal must not cut it short.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # Stopped early: the inner run stops what it started first.
        if inner is not None and inner.poll() is None:
            inner.send_signal(signal.SIGTERM)
            try:
                inner.wait(timeout=120)
            except subprocess.TimeoutExpired:
                inner.kill()
                inner.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True,
                       timeout=30)


LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z (\w+)\s+(.*)$")


def parse_log(path):
    """[(unix time, level, message)] of ferry's text log."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = LOG_RE.match(line.rstrip("\n"))
                if not m:
                    continue
                ts = datetime.datetime.strptime(
                    m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
                        tzinfo=datetime.timezone.utc).timestamp()
                out.append((ts, m.group(2), m.group(3)))
    except OSError:
        pass
    return out


def timeline(lines, t0_wall):
    """Start-up milestones from ferry's log, seconds after t0_wall."""
    marks = {}

    def first(key, pred):
        for ts, _, msg in lines:
            if pred(msg):
                marks[key] = round(ts - t0_wall, 3)
                return

    def last(key, pred):
        for ts, _, msg in reversed(lines):
            if pred(msg):
                marks[key] = round(ts - t0_wall, 3)
                return

    first("first_log_line", lambda m: True)
    first("listed_services", lambda m: m.startswith("kube-api: listed")
          and " services " in m)
    first("listed_endpointslices", lambda m: m.startswith("kube-api: listed")
          and " endpointslices " in m)
    first("table_1_published", lambda m: m.startswith("watcher: publishing "
                                                      "table"))
    first("first_full_sync_logged",
          lambda m: m.startswith("kubernetes: first full sync:"))
    first("first_listener", lambda m: m.startswith("listening on "))
    # the last listener of the first table (before any churn)
    ls = [ts for ts, _, m in lines if m.startswith("listening on ")]
    if ls:
        marks["last_listener"] = round(ls[-1] - t0_wall, 3)
    return marks


PUB_RE = re.compile(r"watcher: publishing table (\d+): (\d+) "
                    r"(?:services|proxied and \d+ kernel service\(s\))"
                    r"(?:, (\d+) Service\(s\) translated"
                    r"(?: into the last table)?)? "
                    r"\(change latency ([\d.]+) ms\)")


def metric_hist(text, name):
    """A Prometheus histogram from the text: {count, sum, buckets}."""
    h = {"count": None, "sum": None, "buckets": []}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        key, _, val = line.rpartition(" ")
        if key.endswith("{}"):  # an empty label set, as ferry writes it
            key = key[:-2]
        try:
            v = float(val)
        except ValueError:
            continue
        if key.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', key)
            if le:
                h["buckets"].append([le.group(1), v])
        elif key == name + "_count":
            h["count"] = v
        elif key == name + "_sum":
            h["sum"] = v
    return h


def hist_quantile(h, q):
    """Upper bound of the bucket holding quantile q (as Prometheus
    histogram_quantile would bound it)."""
    if not h.get("count"):
        return None
    want = q * h["count"]
    for le, c in h["buckets"]:
        if c >= want:
            return le
    return None


# ------------------------------------------------------------------ churn

class Churn:
    """C readiness flips at R/s on K probe Services, each measured from
    the PUT to the healthCheckNodePort answer showing its effect.

    Each probe Service walks its ready count down from M to 1 and back up,
    one endpoint per change, so that within one direction the count says
    which changes are in force: answer c confirms every outstanding change
    expecting c or more (going down) or c or less (going up). A Service
    may have many changes outstanding, all in one direction; it turns
    only when none is. So one probe per Service covers all its changes and
    the probes stay few however slow ferry is."""

    def __init__(self, cfg, sim_port, probes, ferry):
        self.cfg = cfg
        self.sim_port = sim_port
        self.m = cfg["endpoints"]
        self.probes = probes                 # name -> hc port
        self.names = sorted(probes)
        self.ferry = ferry
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.outstanding = {}                # name -> [change records]
        self.state = {n: set(range(self.m)) for n in self.names}  # ready
        self.down = {n: True for n in self.names}
        self.records = []
        self.writer_done = False
        self.waited_for_free = 0
        self.elapsed = 0.0
        self.nprobes = 0                     # health probes made

    def body(self, name, j):
        """The slice of <name> holding endpoint j, as it is now."""
        i = int(name.split("-")[1])
        obj = cp_sim.slice_obj(i, self.m, "n1", self.state[name],
                               cp_sim.slice_of(j, self.m))
        # As the EndpointSlice controller stamps a change: the moment the
        # Pod changed, from which ferry (like kube-proxy) measures
        # ferry_network_programming_duration_seconds.
        now = datetime.datetime.now(datetime.timezone.utc)
        obj["metadata"]["annotations"] = {
            "endpoints.kubernetes.io/last-change-trigger-time":
                now.strftime("%Y-%m-%dT%H:%M:%S.") + "%06dZ" % now.microsecond}
        return json.dumps(obj).encode()

    def _flip(self, name):
        """Next change of <name> or None if it must turn with changes
        outstanding. Returns (endpoint, expected count)."""
        ready = self.state[name]
        down = self.down[name]
        if (down and len(ready) <= 1) or (not down and len(ready) >= self.m):
            if self.outstanding.get(name):
                return None
            down = self.down[name] = not down
        if self.m == 1:
            return None
        if down:
            j = min(ready)
            ready.discard(j)
        else:
            j = min(set(range(self.m)) - ready)
            ready.add(j)
        return j, len(ready)

    def writer(self):
        c = self.cfg
        conn = http.client.HTTPConnection(HOST, self.sim_port, timeout=30)
        start = time.monotonic()
        nxt = 0
        hard_end = start + c["changes"] / c["rate"] * 3 + 120
        k = 0
        while k < c["changes"] and time.monotonic() < hard_end:
            due = start + k / c["rate"]
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            with self.lock:
                pick = None
                for x in range(len(self.names)):
                    cand = self.names[(nxt + x) % len(self.names)]
                    f = self._flip(cand)
                    if f is not None:
                        pick = (cand, f)
                        nxt = (nxt + x + 1) % len(self.names)
                        break
                if pick is None:
                    self.waited_for_free += 1
                    self.wake.wait(0.05)
                    continue
                name, (j, expect) = pick
                body = self.body(name, j)
                sname = cp_sim.slice_name(int(name.split("-")[1]),
                                          cp_sim.slice_of(j, self.m))
                down = self.down[name]
            path = ("/apis/discovery.k8s.io/v1/namespaces/default/"
                    "endpointslices/%s" % sname)
            t_sent = time.monotonic()
            try:
                conn.request("PUT", path, body,
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = None
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.sim_port,
                                                  timeout=30)
            t_resp = time.monotonic()
            rec = {"k": k, "service": name, "endpoint": j,
                   "expect": expect, "down": down, "t_sent": t_sent,
                   "t_resp": t_resp, "status": status, "probes": 0}
            with self.lock:
                self.records.append(rec)
                if status == 200:
                    self.outstanding.setdefault(name, []).append(rec)
                    self.wake.notify_all()
            k += 1
        self.elapsed = time.monotonic() - start
        conn.close()
        with self.lock:
            self.writer_done = True
            self.wake.notify_all()

    def _confirm(self, name, seen, t_ans):
        """Mark the outstanding changes of <name> that answer <seen>
        shows in force. Under self.lock."""
        recs = self.outstanding.get(name) or []
        keep = []
        for rec in recs:
            ok = seen is not None and (seen <= rec["expect"] if rec["down"]
                                       else seen >= rec["expect"])
            if ok:
                rec["t_live"] = t_ans
            else:
                keep.append(rec)
        if keep:
            self.outstanding[name] = keep
        else:
            self.outstanding.pop(name, None)
        if len(keep) != len(recs):
            self.wake.notify_all()

    def prober(self):
        """One probe in flight per Service with changes outstanding, all at
        once (a probe answered after a table build must not delay the
        others): a fresh connection to its healthCheckNodePort, at most one
        every PROBE_GAP seconds per Service, PROBE_RATE per second and
        PROBE_INFLIGHT open in all (the probes cost ferry's control loop
        too). The answer's arrival is the time the changes it confirms
        were live (at the latest)."""
        give_up = self.cfg["change_timeout"]
        sel = selectors.DefaultSelector()
        inflight = {}      # name -> [sock, sent_at, buf, sent]
        next_at = {}       # name -> earliest next probe
        req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

        def close(name):
            sk = inflight.pop(name, None)
            if sk is not None:
                try:
                    sel.unregister(sk[0])
                except (KeyError, ValueError):
                    pass
                sk[0].close()

        while True:
            with self.lock:
                if self.writer_done and not self.outstanding:
                    break
                todo = {n: list(v) for n, v in self.outstanding.items()}
            if self.ferry.poll() is not None:
                break
            now = time.monotonic()
            for name, recs in todo.items():
                if len(inflight) >= PROBE_INFLIGHT:
                    break
                if name in inflight or next_at.get(name, 0) > now:
                    continue
                sk = socket.socket()
                sk.setblocking(False)
                sk.connect_ex((NODE_HOST, self.probes[name]))
                inflight[name] = [sk, now, b"", False]
                next_at[name] = now + max(PROBE_GAP, len(todo) / PROBE_RATE)
                sel.register(sk, selectors.EVENT_WRITE, name)
                self.nprobes += 1
                for rec in recs:
                    rec["probes"] += 1
            waits = [t for n, t in next_at.items()
                     if n in todo and n not in inflight]
            timeout = min([0.002] + [max(0.0, t - now) for t in waits])
            for key, ev in sel.select(timeout):
                name = key.data
                st = inflight.get(name)
                if st is None:
                    continue
                sk = st[0]
                if ev & selectors.EVENT_WRITE and not st[3]:
                    try:
                        sk.send(req)
                        st[3] = True
                        sel.modify(sk, selectors.EVENT_READ, name)
                    except OSError:
                        close(name)
                    continue
                try:
                    b = sk.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    b = b""
                    st[2] = b""
                if b:
                    st[2] += b
                    continue
                t_ans = time.monotonic()
                body = st[2].partition(b"\r\n\r\n")[2]
                close(name)
                try:
                    seen = json.loads(body)["localEndpoints"]
                except (ValueError, KeyError, TypeError):
                    seen = None
                with self.lock:
                    self._confirm(name, seen, t_ans)
            now = time.monotonic()
            with self.lock:
                for name in list(self.outstanding):
                    recs = self.outstanding[name]
                    old = [r for r in recs if now - r["t_resp"] > give_up]
                    for r in old:
                        r["lost"] = True
                    if old:
                        self.outstanding[name] = [r for r in recs
                                                  if not r.get("lost")]
                        if not self.outstanding[name]:
                            del self.outstanding[name]
                            close(name)
                        self.wake.notify_all()
        for name in list(inflight):
            close(name)
        with self.lock:
            for recs in self.outstanding.values():
                for rec in recs:
                    rec["lost"] = True
            self.outstanding.clear()
        sel.close()

    def run(self):
        tw = threading.Thread(target=self.writer, daemon=True)
        tp = threading.Thread(target=self.prober, daemon=True)
        tw.start()
        tp.start()
        limit = self.cfg["changes"] / self.cfg["rate"] * 3 + 120 + \
            self.cfg["change_timeout"] + 30
        tw.join(limit)
        tp.join(limit)
        return self.records


def check_probes(probes, m, deadline_s):
    """Every probe Service answers with m local endpoints."""
    end = time.monotonic() + deadline_s
    bad = dict(probes)
    while bad and time.monotonic() < end:
        for name, port in list(bad.items()):
            res = http_get(port, "/", timeout=2.0, host=NODE_HOST)
            try:
                if res and json.loads(res[1])["localEndpoints"] == m:
                    del bad[name]
            except (ValueError, KeyError, TypeError):
                pass
        if bad:
            time.sleep(0.1)
    return sorted(bad)


# ------------------------------------------------------------------- main

def summarize_changes(records):
    ok = [r for r in records if "t_live" in r]
    from_resp = [(r["t_live"] - r["t_resp"]) * 1e3 for r in ok]
    from_sent = [(r["t_live"] - r["t_sent"]) * 1e3 for r in ok]
    put_rtt = [(r["t_resp"] - r["t_sent"]) * 1e3 for r in records]

    def dist(v):
        if not v:
            return None
        return {"n": len(v), "min": round(min(v), 2),
                "p50": round(pct(v, 50), 2), "p90": round(pct(v, 90), 2),
                "p99": round(pct(v, 99), 2), "max": round(max(v), 2),
                "mean": round(statistics.mean(v), 2)}
    return {"changes_sent": len(records),
            "changes_measured": len(ok),
            "changes_lost": sum(1 for r in records if r.get("lost")),
            "put_errors": sum(1 for r in records if r["status"] != 200),
            "latency_ms_from_put_response": dist(from_resp),
            "latency_ms_from_put_sent": dist(from_sent),
            "put_round_trip_ms": dist(put_rtt),
            "probes_per_change_mean": round(statistics.mean(
                [r.get("probes", 0) for r in ok]), 1) if ok else None,
            "outstanding_per_measured_change_note":
                "a probe answer may confirm several changes of one Service"}


def use_port_base(base):
    """--port-base: the admin and health ports at base and base+1, the
    NodePorts from base+10, rather than 18090, 18091 and 29000-29999."""
    global NODE_PORTS, ADMIN_PORT, HEALTHZ_PORT
    ADMIN_PORT, HEALTHZ_PORT = base, base + 1
    NODE_PORTS = (base + 10, min(base + 1009, 65535))


def run(args):
    if getattr(args, "port_base", None) is not None:
        use_port_base(args.port_base)
    # Stopped from outside (SIGTERM, SIGHUP): unwind, so that the
    # processes started here are stopped and the namespace removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    dataplane = getattr(args, "dataplane", None) or "proxy"
    steering = (getattr(args, "proxy_steering", None) or "redirect"
                if dataplane == "proxy" else None)
    if (steered({"dataplane": dataplane, "steering": steering})
            and not os.environ.get(NETNS_ENV)):
        return run_in_netns(sys.argv[1:])
    if steered({"dataplane": dataplane, "steering": steering}):
        global NODE_HOST
        NODE_HOST = NFT_NODE_IP
    quick = args.quick
    cfg = {"services": args.services or (1000 if quick else 10000),
           "endpoints": args.endpoints or 25,
           "changes": args.changes or (200 if quick else 1000),
           "rate": args.rate or 50.0,
           "probes": args.probe_services or (20 if quick else 40),
           "change_timeout": 60.0,
           "start_deadline": args.start_deadline or 900.0,
           "ferry_cpu": args.proxy_cpus, "sim_cpu": args.load_cpus,
           "dataplane": dataplane, "steering": steering,
           "relist": bool(getattr(args, "relist", False)),
           "restart": bool(getattr(args, "restart", False))}
    # A probe Service takes one port of the range (its
    # healthCheckNodePort: no NodePorts), and conn-probe one.
    cfg["probes"] = min(cfg["probes"], cfg["services"],
                        NODE_PORTS[1] - NODE_PORTS[0])
    if not (1 <= cfg["services"] <= 30000 and 1 <= cfg["endpoints"] <= 100000
            and cfg["services"] * cfg["endpoints"] <= 1000000
            and 1 <= cfg["changes"] <= 100000 and 0.1 <= cfg["rate"] <= 1000):
        log("services 1-30000, endpoints 2-100000 (in slices of %d), at "
            "most 1,000,000 in all, changes 1-100000, rate 0.1-1000"
            % cp_sim.SLICE_MAX)
        return 2
    if cfg["endpoints"] < 2:
        # The churn flips one endpoint of a probe Service at a time and
        # keeps one ready: with one endpoint there is nothing to flip.
        log("endpoints: at least 2 (the churn takes a probe Service's "
            "endpoints out of service one at a time, and keeps one)")
        return 2
    if (cfg["endpoints"] > cp_sim.SLICE_MAX
            and cfg["services"] * cfg["endpoints"] > cp_sim.BIG_MAX):
        log("over %d endpoints per Service, at most %d in all (one address "
            "each)" % (cp_sim.SLICE_MAX, cp_sim.BIG_MAX))
        return 2
    if not os.access(args.ferry, os.X_OK):
        log("%s is missing: build it first" % args.ferry)
        return 1
    started = datetime.datetime.now().astimezone()
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   started.strftime("%Y-%m-%d"))
    raw = os.path.join(out, "raw", "control-plane")
    os.makedirs(raw, exist_ok=True)
    # One NodePort more than the probes: conn-probe's.
    for port in [ADMIN_PORT, HEALTHZ_PORT] + list(
            range(NODE_PORTS[0], NODE_PORTS[0] + cfg["probes"] + 1)):
        if not port_free(port):
            log("port %d is in use; control-plane needs %d, %d and %d-%d" % (
                port, ADMIN_PORT, HEALTHZ_PORT, NODE_PORTS[0],
                NODE_PORTS[0] + cfg["probes"]))
            return 1
    stopper = Stopper()
    res = {"scenario": "control-plane", "config": dict(cfg),
           "started": started.isoformat(timespec="seconds"),
           "loadavg_before": loadavg(),
           "ferry": os.path.relpath(args.ferry, ROOT)
           if args.ferry.startswith(ROOT) else os.path.basename(args.ferry),
           "open_files_limit": os.sysconf("SC_OPEN_MAX")}
    # The commit of the tree the binary was built in (a --ferry from
    # another worktree is that worktree's), not this tree's.
    tree = os.path.dirname(os.path.abspath(args.ferry))
    try:
        rev = subprocess.run(["git", "-C", tree, "rev-parse", "--short",
                              "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if rev:
            res["commit"] = rev + (" + local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    log("control-plane: %d services x %d endpoints, %d changes at %.0f/s "
        "on %d probe services -> %s" % (cfg["services"], cfg["endpoints"],
                                        cfg["changes"], cfg["rate"],
                                        cfg["probes"], out))
    try:
        return _run(cfg, args, out, raw, res, stopper)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stopper.stop_all()


def start_ferry(argv, logf, cfg, stopper):
    """Start ferry logging to the open file <logf> (closed here) and wait
    for /readyz 200: (process, start time, ready time or None, polls)."""
    t0 = time.monotonic()
    ferry = stopper.add(subprocess.Popen(argv, stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL))
    logf.close()
    ready_at = None
    polls = 0
    end = t0 + cfg["start_deadline"]
    while time.monotonic() < end and ferry.poll() is None:
        r = http_get(ADMIN_PORT, "/readyz", timeout=5.0)
        polls += 1
        if r is not None and r[0] == 200:
            ready_at = time.monotonic()
            break
        time.sleep(0.02)
    return ferry, t0, ready_at, polls


def restart(argv, raw, cfg, stopper):
    """A second ferry after the first one exited, as a DaemonSet pod's
    restart: it finds the first one's kernel table (nftables) and adopts
    it. Start to ready, CPU, peak RSS."""
    logpath = os.path.join(raw, "ferry-restart.log")
    ferry, t0, ready_at, _ = start_ferry(argv, open(logpath, "w"), cfg,
                                         stopper)
    r = {}
    if ready_at is None:
        r["failed"] = ("ferry exited with %s" % ferry.returncode
                       if ferry.poll() is not None else
                       "no /readyz 200 within %.0f s" % cfg["start_deadline"])
    else:
        r["to_ready_s"] = round(ready_at - t0, 3)
        r["cpu_s"] = round(cpu_s(ferry.pid) or 0, 3)
        r["vmhwm_kb"] = status_kb(ferry.pid, "VmHWM")
        r["vmrss_kb"] = status_kb(ferry.pid, "VmRSS")
        with open(logpath) as f:
            text = f.read()
        r["adopted"] = "table inet ferry adopted" in text
    r["exit"] = stopper.stop(ferry, timeout=60)
    log("restart: %s" % (r.get("failed") or
                          "ready after %.2f s, %.2f s of CPU, peak %.0f MiB%s"
                          % (r["to_ready_s"], r["cpu_s"],
                             r["vmhwm_kb"] / 1024,
                             ", the table adopted" if r["adopted"] else "")))
    return r


def _run(cfg, args, out, raw, res, stopper):
    if os.cpu_count() >= 2:
        os.sched_setaffinity(0, cpu_set(cfg["sim_cpu"]))
    echo, echo_port = start_echo(args, raw, stopper)
    t = time.monotonic()
    sim, info = start_sim(cfg, raw, stopper, echo_port)
    res["sim"] = {"start_s": round(time.monotonic() - t, 2),
                  "populate_s": info["populate_s"],
                  "objects": {"services": info["services"],
                              "endpointslices": info["endpointslices"]},
                  "cluster_ips": [info["first_cluster_ip"],
                                  info["last_cluster_ip"]]}
    probes = info["probes"]
    if any(not p for p in probes.values()):
        raise RuntimeError("probe services without a healthCheckNodePort")
    log("simulator up in %.1f s (%d objects created in %.1f s); timing its "
        "LISTs" % (res["sim"]["start_s"], info["services"] +
                   info["endpointslices"], info["populate_s"]))
    c0 = cpu_s(sim.pid)
    res["sim"]["list"] = time_lists(info["port"])
    res["sim"]["list_cpu_s"] = round(cpu_s(sim.pid) - c0, 2)
    res["sim"]["list_together_s"] = time_lists_together(info["port"])
    log("simulator LIST: services %.2f s, endpointslices %.2f s (%.1f MB "
        "gzipped), both at once %.2f s" % (
            res["sim"]["list"]["services"]["seconds"],
            res["sim"]["list"]["endpointslices"]["seconds"],
            res["sim"]["list"]["endpointslices"]["bytes"] / 1e6,
            res["sim"]["list_together_s"]))

    # ---- ferry start
    conf = os.path.join(raw, "ferry.yaml")
    with open(conf, "w") as f:
        f.write(ferry_config(info["port"], cfg["dataplane"],
                             cfg["steering"]))
    logpath = os.path.join(raw, "ferry.log")
    logf = open(logpath, "w")
    argv = [args.ferry, "-c", conf]
    if os.cpu_count() >= 2:
        argv = ["taskset", "-c", cfg["ferry_cpu"]] + argv
    sim_c0 = cpu_s(sim.pid)
    t0_wall = time.time()
    ferry, t0, ready_at, polls = start_ferry(argv, logf, cfg, stopper)
    st = {"readyz_polls": polls}
    if ready_at is None:
        st["failed"] = ("ferry exited with %s" % ferry.returncode
                        if ferry.poll() is not None else
                        "no /readyz 200 within %.0f s" % cfg["start_deadline"])
        res["start"] = st
        lines = parse_log(logpath)
        res["ferry_log_tail"] = [m for _, lv, m in lines[-20:]]
        log("ferry start FAILED: %s" % st["failed"])
        finish(out, res)
        return 1
    st["to_ready_s"] = round(ready_at - t0, 3)
    st["vmhwm_kb"] = status_kb(ferry.pid, "VmHWM")
    st["vmrss_kb"] = status_kb(ferry.pid, "VmRSS")
    st["cpu_s"] = round(cpu_s(ferry.pid) or 0, 3)
    st["sim_cpu_s"] = round(cpu_s(sim.pid) - sim_c0, 2)
    st["open_fds"] = nfds(ferry.pid)
    if cfg["dataplane"] == "nftables":
        # Counted with nft's own listing, in a process of its own; at
        # 10,000 x 25 it takes minutes.
        t = time.monotonic()
        try:
            r = subprocess.run(["nft", "list", "table", "inet", "ferry"],
                               capture_output=True, text=True, timeout=600)
            st["nft_lines"] = len(r.stdout.splitlines())
        except subprocess.TimeoutExpired:
            st["nft_lines"] = None
        st["nft_list_s"] = round(time.monotonic() - t, 2)
        st["vmrss_kb_after_nft_list"] = status_kb(ferry.pid, "VmRSS")
    log("ferry ready after %.2f s (VmHWM %.0f MiB, %s fds)" % (
        st["to_ready_s"], st["vmhwm_kb"] / 1024, st["open_fds"]))
    bad = check_probes(probes, cfg["endpoints"], 60)
    res["start"] = st
    if bad:
        st["probes_not_answering"] = bad[:10]
        st["failed"] = ("%d probe services do not answer with %d endpoints "
                        "on their healthCheckNodePort, e.g. %s" % (
                            len(bad), cfg["endpoints"], bad[0]))
        log(st["failed"])
        finish(out, res)
        return 1

    # ---- churn
    time.sleep(1.0)
    st["timeline_s"] = timeline(parse_log(logpath), t0_wall)
    # Through the kernel's redirect to the proxy under nftables (a
    # proxied Service's ClusterIP) and under the proxy's redirect
    # steering, else the proxy's NodePort listener.
    cp_target = ("%s:%d" % (info.get("conn_probe_cluster_ip"), cp_sim.SVC_PORT)
                 if steered(cfg) else
                 "%s:%s" % (HOST, info.get("conn_probe_node_port")))
    cp_ok = wait_echo(cp_target, 30)
    if not cp_ok:
        log("conn-probe %s does not answer through ferry: no connection "
            "latency" % cp_target)
    own_c0 = control_cpu()
    f_c0, s_c0 = cpu_s(ferry.pid), cpu_s(sim.pid)
    f_t0 = thread_cpu_s(ferry.pid)
    log("churn: %d changes at %.0f/s" % (cfg["changes"], cfg["rate"]))
    t_churn0 = time.time()
    res["mono_to_wall"] = time.time() - time.monotonic()
    churn = Churn(cfg, info["port"], probes, ferry)
    cprobe = start_connprobe(cfg, raw, stopper, cp_target,
                             "%s:%d" % (HOST, echo_port)) if cp_ok else None
    records = churn.run()
    ch = summarize_changes(records)
    ch["seconds"] = round(getattr(churn, "elapsed", 0), 2)
    ch["rate_achieved"] = round(len(records) / churn.elapsed, 1) \
        if getattr(churn, "elapsed", 0) else None
    ch["writer_waited_for_free_probe"] = churn.waited_for_free
    ch["ferry_cpu_s"] = round((cpu_s(ferry.pid) or 0) - (f_c0 or 0), 2)
    ch["sim_cpu_s"] = round((cpu_s(sim.pid) or 0) - (s_c0 or 0), 2)
    main_s, workers_s = split_cpu(ferry.pid, f_t0)
    ch["ferry_control_cpu_s"] = round(main_s, 3)
    ch["ferry_workers_cpu_s"] = round(workers_s, 3)
    ch["health_probes"] = churn.nprobes
    if records:
        ch["ferry_cpu_ms_per_change"] = round(
            ch["ferry_cpu_s"] * 1e3 / len(records), 2)
        ch["ferry_control_cpu_us_per_change"] = round(
            main_s * 1e6 / len(records), 1)
        ch["ferry_workers_cpu_us_per_change"] = round(
            workers_s * 1e6 / len(records), 1)
        ch["health_probes_per_change"] = round(
            ch["health_probes"] / len(records), 2)
    ch["conn_probe"] = finish_connprobe(cprobe, raw, stopper)
    res["churn"] = ch
    lat = ch["latency_ms_from_put_response"] or {}
    log("churn: %d/%d measured, PUT->live p50 %s ms p99 %s ms" % (
        ch["changes_measured"], ch["changes_sent"], lat.get("p50"),
        lat.get("p99")))
    with open(os.path.join(raw, "changes.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")

    # ---- ferry's own view
    time.sleep(1.2)  # its counters are copied for /metrics every second
    own = {}
    own_c1 = control_cpu()
    if own_c0 and own_c1 and records:
        own["cpu_us_per_change"] = {
            p: round((own_c1[p] - own_c0[p]) * 1e6 / len(records), 1)
            for p in CPU_PARTS}
        own["cpu_us_per_change"]["all"] = round(
            sum(own["cpu_us_per_change"][p] for p in CPU_PARTS), 1)
        # Tables, from ferry's count: its log has a line for at most one
        # patched table a second (watcher.c).
        tables = int(own_c1["generation"] - own_c0["generation"])
        own["tables_published_during_churn"] = tables
        if tables > 0:
            own["changes_per_table"] = round(len(records) / tables, 2)
            own["services_translated_per_table"] = round(
                (own_c1["translated"] - own_c0["translated"]) / tables, 2)
    t = time.monotonic()
    m = http_get(ADMIN_PORT, "/metrics", timeout=120.0)
    own["metrics_fetch_s"] = round(time.monotonic() - t, 2)
    if m is None:
        own["metrics"] = "no answer (connection closed or timed out)"
    elif m[0] != 200:
        own["metrics"] = "HTTP %d: %s" % (m[0], m[1][:80].decode(
            errors="replace").strip())
    else:
        text = m[1].decode(errors="replace")
        own["metrics_bytes"] = len(m[1])
        for name in ("ferry_network_programming_duration_seconds",
                     "ferry_sync_proxy_rules_duration_seconds"):
            h = metric_hist(text, name)
            h["p50_le"] = hist_quantile(h, 0.5)
            h["p99_le"] = hist_quantile(h, 0.99)
            own[name] = h
    pubs = [(ts, int(g), float(lms), int(tr or 0))
            for ts, _, msg in parse_log(logpath)
            for mm in [PUB_RE.search(msg)] if mm
            for g, tr, lms in [(mm.group(1), mm.group(3), mm.group(4))]]
    during = [p for p in pubs if p[0] >= t_churn0]
    if during:
        # The tables its log names: at most one patched table a second.
        v = [p[2] for p in during]
        own["log_change_latency_ms"] = {
            "n": len(v), "p50": round(pct(v, 50), 2),
            "p99": round(pct(v, 99), 2), "max": round(max(v), 2)}
    res["ferry_own"] = own
    if cfg["relist"]:
        res["relist"] = relist(info["port"], ferry, logpath)
    res["end"] = {"vmhwm_kb": status_kb(ferry.pid, "VmHWM"),
                  "vmrss_kb": status_kb(ferry.pid, "VmRSS"),
                  "cpu_s": round(cpu_s(ferry.pid) or 0, 2),
                  "open_fds": nfds(ferry.pid)}
    t = time.monotonic()
    rc = stopper.stop(ferry, timeout=60)
    res["end"]["stop_s"] = round(time.monotonic() - t, 2)
    res["end"]["exit"] = rc
    if cfg["restart"]:
        res["restart"] = restart(argv, raw, cfg, stopper)
    stopper.stop(sim)
    stopper.stop(echo)
    res["loadavg_after"] = loadavg()
    res["finished"] = datetime.datetime.now().astimezone().isoformat(
        timespec="seconds")
    finish(out, res)
    return 0


def sim_fault(port, rule):
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("POST", "/_sim/faults", json.dumps(rule),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError("simulator fault %r: HTTP %d" % (rule, r.status))
    finally:
        conn.close()


def metric_value(name):
    m = http_get(ADMIN_PORT, "/metrics", timeout=60.0)
    if m is None or m[0] != 200:
        return None
    for line in m[1].decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


RELISTED = ("/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices")
LISTED = "kube-api: listed "


def relist(sim_port, ferry, logpath, deadline_s=300.0):
    """A full relist of Services and EndpointSlices (each watch answered
    410 Gone once): ferry's RSS before, its peak during (the kernel's
    high-water mark is reset first, /proc/PID/clear_refs) and after, the
    time and CPU until both kinds are listed again; RSS after once ferry
    idles again."""
    r = {"vmrss_kb_before": status_kb(ferry.pid, "VmRSS"),
         "vmhwm_kb_before": status_kb(ferry.pid, "VmHWM")}
    try:
        with open("/proc/%d/clear_refs" % ferry.pid, "w") as f:
            f.write("5")
        r["peak_reset"] = True
    except OSError as e:
        r["peak_reset"] = "cannot reset VmHWM (%s): the peak is the run's" % e
    before = metric_value("ferry_api_relists_total") or 0
    # Done when both kinds were listed again (a relist that changes
    # nothing publishes no table).
    lists0 = sum(1 for _, _, m in parse_log(logpath) if LISTED in m)
    c0, t0 = cpu_s(ferry.pid) or 0, time.monotonic()
    log("relist: each watch answered 410 Gone once")
    for path in RELISTED:
        sim_fault(sim_port, {"action": "gone", "watch": True, "path": path,
                             "count": 1})
    sim_fault(sim_port, {"action": "end_watches"})
    end = t0 + deadline_s
    done = False
    while time.monotonic() < end and ferry.poll() is None:
        n = metric_value("ferry_api_relists_total") or 0
        lists = sum(1 for _, _, m in parse_log(logpath) if LISTED in m)
        if (n >= before + len(RELISTED)
                and lists >= lists0 + len(RELISTED)):
            done = True
            break
        time.sleep(0.2)
    r["seconds"] = round(time.monotonic() - t0, 2)
    r["ferry_cpu_s"] = round((cpu_s(ferry.pid) or 0) - c0, 2)
    r["relists"] = (metric_value("ferry_api_relists_total") or 0) - before
    if not done:
        r["failed"] = "no relist of both kinds within %.0f s" % deadline_s
    # The table is built from the lists after them: wait until ferry idles
    # (under 20 ms of CPU in a second, 15 s at most), then for the trim
    # that follows a second's pause.
    idle_end = time.monotonic() + 15.0
    while time.monotonic() < idle_end and ferry.poll() is None:
        c = cpu_s(ferry.pid) or 0
        time.sleep(1.0)
        if (cpu_s(ferry.pid) or 0) - c < 0.02:
            break
    time.sleep(1.5)
    r["vmhwm_kb_during"] = status_kb(ferry.pid, "VmHWM")
    r["vmrss_kb_after"] = status_kb(ferry.pid, "VmRSS")
    log("relist: %s in %.2f s, %.2f s of ferry CPU; RSS %.0f MiB before, "
        "peak %.0f MiB, %.0f after" % (
            "done" if done else "NOT done", r["seconds"], r["ferry_cpu_s"],
            (r["vmrss_kb_before"] or 0) / 1024,
            (r["vmhwm_kb_during"] or 0) / 1024,
            (r["vmrss_kb_after"] or 0) / 1024))
    return r


def finish(out, res):
    with open(os.path.join(out, "control-plane.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write("\n")
    section = section_md(res)
    path = os.path.join(out, "summary.md")
    text = open(path).read() if os.path.exists(path) else \
        "# ferry benchmark summary\n"
    text = replace_section(text, section)
    with open(path, "w") as f:
        f.write(text)
    log("control-plane results: %s" % os.path.join(out, "control-plane.json"))


def replace_section(text, section):
    block = MARK_BEGIN + "\n" + section.rstrip("\n") + "\n" + MARK_END + "\n"
    if MARK_BEGIN in text and MARK_END in text:
        a = text.index(MARK_BEGIN)
        b = text.index(MARK_END) + len(MARK_END)
        return text[:a] + block.rstrip("\n") + text[b:]
    return text.rstrip("\n") + "\n\n" + block


def keep_section(old_text):
    """The control-plane block of an old summary.md, or ''."""
    if MARK_BEGIN in old_text and MARK_END in old_text:
        a = old_text.index(MARK_BEGIN)
        b = old_text.index(MARK_END) + len(MARK_END)
        return old_text[a:b] + "\n"
    return ""


def _f(v, nd=1):
    return "–" if v is None else ("{:,.%df}" % nd).format(v)


def section_md(res):
    c = res["config"]
    st = res.get("start", {})
    lines = ["## control-plane", "",
             "%s services x %s endpoints (%s endpoints) in the simulated API "
             "server, node.dataplane %s%s; ferry %s (git %s); run %s, load "
             "average before %s, after %s." % (
                 "{:,}".format(c["services"]), c["endpoints"],
                 "{:,}".format(c["services"] * c["endpoints"]),
                 c.get("dataplane", "proxy"),
                 " (proxy_steering %s)" % c["steering"]
                 if c.get("steering") else "",
                 res.get("ferry"), res.get("commit", "?"), res["started"],
                 " ".join(res.get("loadavg_before") or []),
                 " ".join(res.get("loadavg_after") or [])), ""]
    if "failed" in st:
        lines += ["**ferry did not become ready**: %s." % st["failed"], ""]
        return "\n".join(lines)
    sim = res["sim"]
    tl = st.get("timeline_s", {})
    lines += ["| start-up | |", "|---|---|",
              "| start → first full table in force (/readyz 200) | %s s |"
              % _f(st["to_ready_s"], 2),
              "| ↳ from ferry's log: services listed / slices listed / "
              "table 1 published / first full sync / last listener | "
              "%s / %s / %s / %s / %s s |" % tuple(
                  _f(tl.get(k), 2) for k in (
                      "listed_services", "listed_endpointslices",
                      "table_1_published", "first_full_sync_logged",
                      "last_listener")),
              "| ferry CPU to first table | %s s |" % _f(st.get("cpu_s"), 2),
              "| peak RSS (VmHWM) at first table / at the end | %s / %s MiB |"
              % (_f(st["vmhwm_kb"] / 1024), _f(
                  (res.get("end", {}).get("vmhwm_kb") or 0) / 1024)),
              "| RSS (VmRSS) at first table / at the end | %s / %s MiB |"
              % (_f((st.get("vmrss_kb") or 0) / 1024), _f(
                  (res.get("end", {}).get("vmrss_kb") or 0) / 1024)),
              ] + ([
              "| full relist (410 Gone): RSS before / peak during / after "
              "| %s / %s / %s MiB (%s s, %s s of CPU) |" % (
                  _f((res["relist"].get("vmrss_kb_before") or 0) / 1024),
                  _f((res["relist"].get("vmhwm_kb_during") or 0) / 1024),
                  _f((res["relist"].get("vmrss_kb_after") or 0) / 1024),
                  _f(res["relist"].get("seconds"), 2),
                  _f(res["relist"].get("ferry_cpu_s"), 2))]
              if res.get("relist") else []) + ([
              "| restart, after the churn (%s): start → ready / CPU / peak "
              "RSS | %s s / %s s / %s MiB |" % (
                  "the table adopted" if res["restart"].get("adopted")
                  else "no table adopted",
                  _f(res["restart"].get("to_ready_s"), 2),
                  _f(res["restart"].get("cpu_s"), 2),
                  _f((res["restart"].get("vmhwm_kb") or 0) / 1024))]
              if res.get("restart") else []) + [
              "| open descriptors (limit %s) | %s |" % (
                  "{:,}".format(res["open_files_limit"]),
                  "{:,}".format(st["open_fds"] or 0)),
              "| kernel rules: `nft list table inet ferry` (lines / "
              "seconds) | %s / %s |" % (
                  "{:,}".format(st["nft_lines"]) if st.get("nft_lines")
                  else "–", _f(st.get("nft_list_s"), 2)),
              "| simulator alone: LIST services, then slices (pages of 500, "
              "gzip) / both at once, as ferry lists | %s + %s s (%.1f MB on "
              "the wire) / %s s |" % (
                  _f(sim["list"]["services"]["seconds"], 2),
                  _f(sim["list"]["endpointslices"]["seconds"], 2),
                  (sim["list"]["services"]["bytes"]
                   + sim["list"]["endpointslices"]["bytes"]) / 1e6,
                  _f(sim.get("list_together_s"), 2)),
              ""]
    ch = res.get("churn")
    if ch:
        a = ch["latency_ms_from_put_response"] or {}
        b = ch["latency_ms_from_put_sent"] or {}
        p = ch["put_round_trip_ms"] or {}
        lines += ["| churn: %s changes at %s/s asked (%s/s reached) | p50 | "
                  "p90 | p99 | max |" % (ch["changes_sent"], c["rate"],
                                          ch["rate_achieved"]),
                  "|---|---|---|---|---|",
                  "| PUT response → live (ms) | %s | %s | %s | %s |" % (
                      _f(a.get("p50")), _f(a.get("p90")), _f(a.get("p99")),
                      _f(a.get("max"))),
                  "| PUT sent → live (ms) | %s | %s | %s | %s |" % (
                      _f(b.get("p50")), _f(b.get("p90")), _f(b.get("p99")),
                      _f(b.get("max"))),
                  "| PUT round trip (simulator, ms) | %s | %s | %s | %s |" % (
                      _f(p.get("p50")), _f(p.get("p90")), _f(p.get("p99")),
                      _f(p.get("max"))), ""]
        own = res.get("ferry_own", {})
        npd = own.get("ferry_network_programming_duration_seconds")
        lines += ["%s of %s changes measured, %s lost (not seen within %.0f "
                  "s), %s PUT errors; ferry CPU %s ms per change (control "
                  "loop %s µs, which also answered %s health probes per "
                  "change; workers %s µs, which also relayed the "
                  "connection probes); %s tables "
                  "published during the churn (%s changes per table)." % (
                      ch["changes_measured"], ch["changes_sent"],
                      ch["changes_lost"], c["change_timeout"],
                      ch["put_errors"], _f(ch.get("ferry_cpu_ms_per_change")),
                      _f(ch.get("ferry_control_cpu_us_per_change")),
                      _f(ch.get("health_probes_per_change")),
                      _f(ch.get("ferry_workers_cpu_us_per_change")),
                      own.get("tables_published_during_churn"),
                      own.get("changes_per_table")), ""]
        cpc = own.get("cpu_us_per_change")
        if cpc:
            lines += ["ferry's own count of the CPU its API work took "
                      "(`ferry_control_cpu_seconds_total`), per change: "
                      "**%s µs**: %s µs receiving, decoding and caching, "
                      "%s µs building and applying tables on the control "
                      "loop, %s µs in the workers taking them." % (
                          _f(cpc["all"]), _f(cpc["api"]), _f(cpc["tables"]),
                          _f(cpc["workers"])), ""]
        if npd:
            lines.append("ferry's `ferry_network_programming_duration_"
                         "seconds`: %d observations, p50 ≤ %s s, p99 ≤ %s s "
                         "(bucket bounds; /metrics was %.1f MB)." % (
                             npd["count"] or 0, npd["p50_le"], npd["p99_le"],
                             own["metrics_bytes"] / 1e6))
        elif "metrics" in own:
            lines.append("ferry's /metrics: %s (after %s s)." % (
                own["metrics"], own["metrics_fetch_s"]))
        cp = ch.get("conn_probe") or {}
        if "ferry" in cp:
            lines += ["", "New connections during the churn "
                      "(bench/connprobe.py; slots taken in turn by the two "
                      "targets; scheduled start → first byte back, ms):", "",
                      "| target | made | failed | missed | p50 | p90 | p99 "
                      "| p99.9 | max | > 5 ms | > 50 ms |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
            via = ("ClusterIP, redirected by the kernel to the proxy"
                   if steered(c) else "NodePort")
            for name, what in (("ferry", "through ferry (Service "
                                "conn-probe, %s)" % via),
                               ("direct", "the same echo server, direct")):
                r = cp.get(name) or {}
                cl = r.get("latency_ms") or {}
                lines.append("| %s, %s/s | %s | %s | %s | %s | %s | %s | %s "
                             "| %s | %s | %s |" % (
                                 what, r.get("rate"), r.get("n"),
                                 r.get("failed"), r.get("missed"),
                                 _f(cl.get("p50"), 2), _f(cl.get("p90"), 2),
                                 _f(cl.get("p99"), 2),
                                 _f(cl.get("p99.9"), 2),
                                 _f(cl.get("max"), 2), r.get("over_5ms"),
                                 r.get("over_50ms")))
            lines.append("")
        elif cp:
            lines.append("Connection probe: %s." % cp.get("failed_to_run"))
        lg = own.get("log_change_latency_ms")
        if lg:
            lines.append("ferry's log, event arrival → table published: "
                         "p50 %s ms, p99 %s ms over the %d tables it names "
                         "(at most one patched table a second)." % (
                             _f(lg["p50"]), _f(lg["p99"]), lg["n"]))
        lines.append("")
    return "\n".join(lines)
