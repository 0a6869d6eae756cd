"""Helpers for the end-to-end tests of ferry's Kubernetes mode.

The real ferry binary follows the simulated API server (kapisim, over TLS
with bearer tokens, credentials in a kubelet-style service-account
directory) and routes to real backends: one `ferry-bench serve --mode
http` process per pod, each on its own loopback address (127.0.0.2, ...)
so that the EndpointSlice addresses are what tells the pods apart.

- Pod / start_pods: backend processes, stopped by PID.
- ask / Held / Load: clients. ask() makes one HTTP request and returns the
  name of the pod that answered; Held keeps a connection open half-way
  through its request; Load is a thread making connections one after
  another (bounded in count and time) and counting failures.
- svc_obj / slice_obj / ep: Kubernetes objects.
- ServiceAccount: token and ca.crt, rotated the way the kubelet does.
- Kubectl: kubectl against the sim (TLS + token).
- kube_config: ferry's config file for Kubernetes mode.
- Admin: /readyz, /status and /metrics of ferry's admin server.

Standard library only. Every wait is a poll with a deadline (dl() makes
deadlines longer for the sanitizer build).
"""

import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import ferrytest as ft

SANITIZED = os.environ.get("FERRY_SANITIZED", "0") == "1"
NODE = "n1"
HTTP_REQ = b"GET / HTTP/1.1\r\nHost: kube-e2e\r\n\r\n"


def dl(seconds):
    """A deadline: <seconds> on a normal build, more under sanitizers and
    FERRY_TEST_SLOWDOWN."""
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


def bench_bin():
    env = os.environ.get("FERRY_BENCH_BIN")
    if env:
        return os.path.abspath(env)
    return str(ft.REPO_ROOT / "build" / "bench" / "ferry-bench")


# ------------------------------------------------------------------ ports


def _bindable(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def common_port(hosts):
    """A port free on every one of <hosts> a moment ago (one slice port is
    shared by all the endpoints of a slice)."""
    for _ in range(50):
        port = ft.free_port(hosts[0])
        if all(_bindable(h, port) for h in hosts[1:]):
            return port
    raise RuntimeError("no port free on all of %s" % (hosts,))


def node_port(taken=()):
    """A NodePort (30000-32767) that 0.0.0.0 can bind right now, reserved
    for this test process (ft.claim_port). Chosen at random rather than
    letting the sim allocate from 30000, so that two runs on one host do
    not fight over the same port."""
    for _ in range(200):
        p = random.randrange(30000, 32768)
        if p not in taken and ft.claim_port(p, "0.0.0.0"):
            return p
    raise RuntimeError("no free NodePort")


def service_cidr():
    """A /24 of its own in 198.18.128.0/17 for each sim, for ClusterIPs."""
    return "198.18.%d.0/24" % random.randrange(150, 200)


# ------------------------------------------------------------------- pods


class Pod:
    """ferry-bench serving HTTP as <name> on <ip>:<port>."""

    def __init__(self, name, ip, port, workdir):
        self.name, self.ip, self.port = name, ip, port
        self.addr = ft.fmt_addr(ip, port)
        self.log_path = os.path.join(str(workdir), "%s.log" % name)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [bench_bin(), "serve", "--mode", "http", "--name", name,
                 "--listen", self.addr],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()

    def wait_listening(self):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("pod %s exited with %s: %s" % (
                    self.name, self.proc.returncode, self.log()))
            return ft._proc_listening(self.port, self.proc.pid)
        ft.wait_for(up, dl(10), "pod %s listening on %s" % (self.name,
                                                             self.addr))

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        p = self.proc
        if p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(dl(5))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def start_pods(names, workdir, first_ip=2, ips=None):
    """Pods named <names> on <ips>, by default 127.0.0.<first_ip>, ...,
    with one shared port. Returns {name: Pod} once all listen."""
    if ips is None:
        ips = ["127.0.0.%d" % (first_ip + i) for i in range(len(names))]
    port = common_port(ips)
    pods = collections.OrderedDict()
    for name, ip in zip(names, ips):
        pods[name] = Pod(name, ip, port, workdir)
    for p in pods.values():
        p.wait_listening()
    return pods


# ---------------------------------------------------------------- clients


def _answer_name(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200 "):
        raise ValueError("not an HTTP answer: %r" % raw[:120])
    name = body.decode(errors="replace").strip()
    if not name:
        raise ValueError("empty answer body: %r" % raw[:120])
    return name


def ask(addr, timeout=None):
    """One connection, one HTTP request; returns the name of the pod that
    answered. Raises OSError/EOFError/ValueError on any failure."""
    timeout = dl(5) if timeout is None else timeout
    with ft.connect(addr, timeout) as s:
        s.sendall(HTTP_REQ)
        return _answer_name(ft.read_until_eof(s, timeout))


def try_ask(addr, timeout=None):
    try:
        return ask(addr, timeout)
    except (OSError, EOFError, ValueError):
        return None


def ask_many(addr, n):
    """Names answering <n> connections made one after another."""
    return [ask(addr) for _ in range(n)]


class Held:
    """A connection kept open in the middle of its request (the request
    line is sent, the blank line is not): the pod answers only once
    finish() sends the rest."""

    def __init__(self, addr):
        self.sock = ft.connect(addr, dl(5))
        self.sock.sendall(HTTP_REQ[:16])
        self.local = self.sock.getsockname()

    def finish(self):
        """Send the rest of the request; return the pod's name."""
        try:
            self.sock.sendall(HTTP_REQ[16:])
            return _answer_name(ft.read_until_eof(self.sock, dl(5)))
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


class Load(threading.Thread):
    """Connections to <addr> one after another, each a full request and
    answer, until stop(), <max_count> connections or <max_seconds>.
    Records every answer's pod name and every failure."""

    def __init__(self, addr, max_count=20000, max_seconds=None, pause=0.005):
        super().__init__(daemon=True, name="load-%s" % addr)
        self.addr = addr
        self.max_count = max_count
        self.max_seconds = dl(60) if max_seconds is None else max_seconds
        self.pause = pause
        self.lock = threading.Lock()
        self.names = []          # answer names, in order
        self.failures = []       # (index, repr of the error)
        self.stopping = threading.Event()

    def run(self):
        end = time.monotonic() + self.max_seconds
        for i in range(self.max_count):
            if self.stopping.is_set() or time.monotonic() > end:
                return
            try:
                name = ask(self.addr, dl(5))
                with self.lock:
                    self.names.append(name)
            except (OSError, EOFError, ValueError) as e:
                with self.lock:
                    self.names.append(None)
                    self.failures.append((i, repr(e)))
            if self.pause and self.stopping.wait(self.pause):
                return  # pacing; stop() ends it at once

    def count(self):
        with self.lock:
            return len(self.names)

    def since(self, mark):
        """Answers after the first <mark> connections."""
        with self.lock:
            return list(self.names[mark:])

    def wait_more(self, n, what="load progress"):
        """Wait until <n> more connections than now have completed; returns
        the count it started from."""
        start = self.count()
        if not self.is_alive():
            raise AssertionError("the load loop has ended (%d connections)"
                                 % start)
        ft.wait_for(lambda: self.count() >= start + n, dl(15),
                    "%s: %d more connections" % (what, n))
        return start

    def stop(self):
        self.stopping.set()
        self.join(dl(15))
        assert not self.is_alive(), "load loop did not stop"
        return self

    def report(self):
        with self.lock:
            c = collections.Counter(self.names)
            return "%d connections, %d failed %s; answers %s" % (
                len(self.names), len(self.failures), self.failures[:5],
                dict(c))


# ---------------------------------------------------------------- objects


def svc_obj(name, ports, type="NodePort", **spec):
    """A Service. <ports>: [(name, port, nodePort or None)]."""
    ps = []
    for pname, port, np in ports:
        p = {"name": pname, "port": port, "protocol": "TCP",
             "targetPort": port}
        if np:
            p["nodePort"] = np
        ps.append(p)
    s = {"type": type, "ports": ps}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"app": name}},
            "spec": s}


def ep(pod, ready=True, serving=None, terminating=False, node=NODE):
    """One endpoint for <pod> (a Pod)."""
    return {"addresses": [pod.ip], "nodeName": node,
            "conditions": {"ready": ready,
                           "serving": ready if serving is None else serving,
                           "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": "default",
                          "name": pod.name}}


def slice_obj(name, svc, endpoints, port, port_name="http"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc,
                                    "endpointslice.kubernetes.io/managed-by":
                                    "kube-e2e"}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "protocol": "TCP", "port": port}],
            "endpoints": endpoints}


def put_slice(sim, name, svc, endpoints, port):
    """Create or replace (unconditionally) an EndpointSlice."""
    obj = slice_obj(name, svc, endpoints, port)
    try:
        sim.get("endpointslices", name)
    except Exception:  # noqa: BLE001 - SimError 404: create it
        return sim.create("endpointslices", obj)
    return sim.replace("endpointslices", obj)


# --------------------------------------------------------- service account


class ServiceAccount:
    """A directory laid out as the kubelet does it: token and ca.crt are
    symlinks through ..data to a timestamped directory, and a rotation
    swaps ..data atomically."""

    def __init__(self, path, ca_file, token):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self.ca_file = ca_file
        self.n = 0
        self.current = None
        self.rotate(token)
        for f in ("token", "ca.crt"):
            os.symlink(os.path.join("..data", f), os.path.join(self.path, f))

    def rotate(self, token):
        self.n += 1
        d = "..%d_%d" % (self.n, time.time_ns())
        full = os.path.join(self.path, d)
        os.mkdir(full)
        with open(os.path.join(full, "token"), "w") as f:
            f.write(token)
        shutil.copyfile(self.ca_file, os.path.join(full, "ca.crt"))
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(d, tmp)
        os.replace(tmp, os.path.join(self.path, "..data"))
        if self.current is not None:
            shutil.rmtree(os.path.join(self.path, self.current))
        self.current = d


# ---------------------------------------------------------------- kubectl


class Kubectl:
    """kubectl (from PATH) against the sim over TLS with an admin token."""

    def __init__(self, sim, workdir, token):
        self.binary = shutil.which("kubectl")
        self.dir = os.path.join(str(workdir), "kubectl")
        os.makedirs(self.dir, exist_ok=True)
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write("apiVersion: v1\nkind: Config\ncurrent-context: sim\n"
                    "clusters:\n- name: sim\n  cluster:\n"
                    "    server: %s\n    certificate-authority: %s\n"
                    "contexts:\n- name: sim\n  context: {cluster: sim, "
                    "user: admin, namespace: default}\n"
                    "users:\n- name: admin\n  user: {token: %s}\n"
                    % (sim.url, sim.ca_file, token))
        self.env = dict(os.environ, HOME=self.dir)
        self.env.pop("KUBECONFIG", None)

    def run(self, *args, stdin=None):
        argv = [self.binary, "--kubeconfig", self.kubeconfig, "--cache-dir",
                os.path.join(self.dir, "cache"), "--request-timeout", "20s"]
        p = subprocess.run(argv + list(args), capture_output=True, text=True,
                           input=stdin, env=self.env, timeout=dl(60))
        if p.returncode != 0:
            raise AssertionError("kubectl %s failed (%d): %s%s" % (
                " ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def apply_obj(self, verb, obj):
        """create or replace from a JSON document on stdin."""
        return self.run(verb, "--validate=false", "-f", "-",
                        stdin=json.dumps(obj))


# ------------------------------------------------------------------ ferry


def kube_config(api_server, sa_dir, admin_addr, grace="60s",
                vip_interface="none"):
    """ferry's config for Kubernetes mode on node n1 (by default without
    VIP management), an admin server, a short drain."""
    return ft.to_yaml({
        "log": {"level": "info", "format": "text"},
        "drain_timeout": "2s",
        "kubernetes": {"enabled": True, "api_server": api_server,
                       "node_name": NODE,
                       "serviceaccount_dir": str(sa_dir)},
        # healthz on a port of its own: the default 0.0.0.0:10256 is one
        # per host; listeners on the Service addresses, not the host's
        # nftables (redirect steering runs in namespaces of its own)
        "node": {"vip_interface": vip_interface, "dataplane": "proxy",
                 "proxy_steering": "listen",
                 "healthz_listen": ft.free_addr()},
        "defaults": {"connect_timeout": "1s", "retries": 3,
                     "idle_timeout": "1h"},
        "admin": {"enabled": True, "listen": admin_addr,
                  "api_failure_grace": grace},
    }) + "\n"


class Admin:
    def __init__(self, addr):
        self.addr = addr

    def get(self, path):
        """(status, body text); a refused connection raises OSError."""
        _, host, port = ft.parse_addr(self.addr)
        req = urllib.request.Request("http://%s:%d%s" % (host, port, path))
        try:
            with urllib.request.urlopen(req, timeout=dl(5)) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def readyz(self):
        return self.get("/readyz")

    def wait_ready(self, ferry):
        def ready():
            if not ferry.alive():
                raise AssertionError("ferry exited with %s:\n%s" % (
                    ferry.proc.returncode, ferry.log_text()))
            return self.readyz()[0] == 200
        ft.wait_for(ready, dl(20), "ferry /readyz 200 (first full sync)")

    def status(self):
        st, body = self.get("/status")
        assert st == 200, (st, body)
        return json.loads(body)

    def service(self, name):
        """The /status entry of service <name>, or None."""
        for s in self.status()["services"]:
            if s["name"] == name:
                return s
        return None

    def backend_names(self, name):
        """Names of the backends of service <name> in the table in force,
        or None when the service is not in it."""
        s = self.service(name)
        if s is None:
            return None
        return sorted(b["name"] for b in s["backends"])

    def wait_backends(self, name, names, what=None):
        """Wait until the table in force gives service <name> exactly the
        backends <names> (None: the service is gone)."""
        want = None if names is None else sorted(names)
        ft.wait_for(lambda: self.backend_names(name) == want, dl(20),
                    what or "%s backends %s" % (name, want))

    def metric(self, name):
        """The value of an unlabelled metric, or None."""
        st, body = self.get("/metrics")
        assert st == 200, (st, body)
        for ln in body.splitlines():
            parts = ln.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
        return None


def wait_answers(addr, names, rounds=3):
    """Wait until connections to <addr> are answered by exactly the pods
    <names>: a run of rounds*len(names) connections in which every answer
    is one of them and each of them answers (round robin)."""
    want = set(names)

    def check():
        got = [try_ask(addr) for _ in range(rounds * len(want))]
        return set(got) == want
    ft.wait_for(check, dl(20), "answers from exactly %s" % sorted(want),
                interval=0.05)


# --------------------------------------------------- network namespaces


CLONE_NEWNET = 0x40000000


def netns_missing():
    """Why a network namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for a namespace"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    return None


def _ip(*args):
    r = subprocess.run(("ip",) + args, capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


class Netns:
    """A network namespace of our own, with lo up. run() executes a
    function on a thread that has entered it: sockets that thread opens,
    and processes and threads it starts, live in the namespace."""

    def __init__(self):
        self.name = "ke2e%d%04x" % (os.getpid() % 10000,
                                    random.randrange(1 << 16))
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def add_addr(self, cidr, dev="lo"):
        _ip("-n", self.name, "addr", "add", cidr, "dev", dev)

    def addrs(self, dev="lo"):
        """IPv4 addresses on <dev>, without prefix lengths."""
        out = _ip("-n", self.name, "-o", "-4", "addr", "show", "dev", dev)
        return [ln.split()[3].split("/")[0] for ln in out.splitlines()]

    def run(self, fn, timeout):
        import ctypes

        box = {}

        def body():
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            try:
                box["result"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                box["error"] = e

        t = threading.Thread(target=body, daemon=True,
                             name="netns-" + self.name)
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise AssertionError("the namespace body is still running "
                                 "after %.0fs" % timeout)
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name],
                       capture_output=True, timeout=30)
