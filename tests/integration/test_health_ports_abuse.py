"""The admin server and the node health server (kube-proxy's port) under
abuse (issue 22, points 2 and 4).

- 2,000 idle connections from one address do not lock out /healthz and
  /readyz: at the cap, the oldest connection that has not sent a whole
  request gives way to the new one; one client address holds at most a
  quarter of the slots, so a flood from one address never pushes out
  another's request.
- The node health server closes a client that has not sent its request
  within 2 s.
- Out of descriptors, every listener pauses (no busy loop on accept) and
  serves again once descriptors are free: the admin server and the node
  health server (the data plane's own test is in test_proxy_limits.py).

Run: /usr/bin/python3 -m pytest tests/integration/test_health_ports_abuse.py
"""

import os
import re
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import wait_for  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"
FLOOD = 2000
# A probe must answer within the kubelet's default probe timeout, 1 s
# (without the caps it would wait for the 30 s request timeout). On an
# idle machine it takes a few ms; a CI machine running three test files
# and two builds at once has been seen at 166 ms. ASan/UBSan builds get
# more room.
PROBE_MAX_S = 1.0 * (5 if SANITIZED else 1) * ft.SLOWDOWN


def dl(seconds):
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


def timed_get(addr, path):
    """(status, seconds) of one GET on a fresh connection."""
    t0 = time.monotonic()
    status = at.http(addr, "GET", path, timeout=dl(5))[0]
    return status, time.monotonic() - t0


def flood(addr, n, src="127.0.0.1"):
    """Open <n> connections to <addr> from <src> that never send a byte;
    returns them (the caller closes them). Bounded: n connects, each with
    a deadline."""
    _, host, port = ft.parse_addr(addr)
    held = []
    try:
        for _ in range(n):
            s = socket.socket()
            held.append(s)
            s.settimeout(dl(5))
            s.bind((src, 0))
            s.connect((host, port))
    except BaseException:
        for s in held:
            s.close()
        raise
    return held


def assert_probes_answer(addr, paths):
    for path in paths:
        for _ in range(3):
            status, took = timed_get(addr, path)
            assert status in (200, 503), (path, status)
            assert took < PROBE_MAX_S, \
                f"{path} took {took * 1e3:.0f} ms under the flood"


def kube_ferry(start_ferry, tmp_path, healthz, admin=None,
               admin_timeout="5s", **kw):
    """ferry in Kubernetes mode against kapisim (plain HTTP), serving the
    node health port on <healthz>."""
    from kapisim_client import start_sim
    (tmp_path / "sim").mkdir()
    sim = start_sim(str(tmp_path / "sim"), bookmark_interval=0.5)
    kc = ft.write_kubeconfig(tmp_path / "kubeconfig", sim.url)
    conf = {
        "drain_timeout": "1s",
        "kubernetes": {"enabled": True, "kubeconfig": str(kc),
                       "node_name": "n1"},
        "node": {"vip_interface": "none", "healthz_listen": healthz,
                 "dataplane": "proxy", "proxy_steering": "listen"},
    }
    if admin is not None:
        conf["admin"] = {"enabled": True, "listen": admin,
                         "request_timeout": admin_timeout}
    f = start_ferry(ft.to_yaml(conf) + "\n", wait=False, **kw)
    return sim, f


@pytest.fixture
def sim_cleanup():
    sims = []
    yield sims
    for s in sims:
        s.stop()


def readyz(addr):
    try:
        return at.http(addr, "GET", "/readyz", timeout=dl(5))[0]
    except OSError:
        return None


# --------------------------------------------------------------- idle floods


def test_admin_idle_flood(start_ferry, backends):
    """2,000 silent connections from 127.0.0.1 (the admin server keeps at
    most 64, 16 per address): /healthz and /readyz still answer, each
    within a probe's timeout, from the same address."""
    b = backends("b")
    admin = ft.free_addr()
    f = start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin,
        request_timeout="30s"))
    wait_for(lambda: readyz(admin) == 200, dl(10), "admin server ready")
    held = flood(admin, FLOOD)
    try:
        assert_probes_answer(admin, ["/healthz", "/readyz"])
        f.wait_log(r"admin: per-client cap of 16 connections reached: "
                   r"closing the oldest idle one")
    finally:
        for s in held:
            s.close()
    assert f.alive()


def test_admin_flood_spares_other_clients(start_ferry, backends):
    """A request under way from 127.0.0.2 (headers half sent) survives a
    flood of idle connections from 127.0.0.1 and is answered; past the
    total cap, probes still answer."""
    b = backends("b")
    admin = ft.free_addr()
    f = start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin,
        request_timeout="30s"))
    wait_for(lambda: readyz(admin) == 200, dl(10), "admin server ready")
    _, host, port = ft.parse_addr(admin)
    other = socket.socket()
    held = []
    try:
        other.settimeout(dl(10))
        other.bind(("127.0.0.2", 0))
        other.connect((host, port))
        other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        held = flood(admin, FLOOD)
        # Still the flood's connections are what gave way, not this one.
        other.sendall(b"\r\n")
        reply = ft.read_until_eof(other, dl(10))
        assert at.status_code(reply) == 200, reply[:200]
        # Five addresses of 16: past the total of 64, the oldest idle
        # connection of any address gives way.
        for src in ("127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"):
            held += flood(admin, 16, src)
        f.wait_log(r"admin: cap of 64 connections reached: closing the "
                   r"oldest idle one")
        assert_probes_answer(admin, ["/healthz"])
    finally:
        other.close()
        for s in held:
            s.close()


def test_node_health_idle_flood(start_ferry, tmp_path, sim_cleanup):
    """The same against the node health server (kubelet probes, cloud load
    balancers; 0.0.0.0:10256 by default, here on loopback): 2,000 idle
    connections, /healthz and /readyz answer within a probe's timeout."""
    healthz = ft.free_addr()
    sim, f = kube_ferry(start_ferry, tmp_path, healthz)
    sim_cleanup.append(sim)
    wait_for(lambda: readyz(healthz) == 200, dl(20), "node health ready")
    held = flood(healthz, FLOOD)
    try:
        assert_probes_answer(healthz, ["/healthz", "/readyz", "/livez"])
        f.wait_log(r"healthz: per-client cap of 32 connections reached: "
                   r"closing the oldest idle one")
    finally:
        for s in held:
            s.close()
    assert f.alive()


def test_node_health_header_deadline(start_ferry, tmp_path, sim_cleanup):
    """A client of the node health port that sends nothing (or half a
    request) is closed after 2 s, not the admin server's 5 s."""
    healthz = ft.free_addr()
    sim, f = kube_ferry(start_ferry, tmp_path, healthz)
    sim_cleanup.append(sim)
    wait_for(lambda: readyz(healthz) == 200, dl(20), "node health ready")
    for first in (b"", b"GET /healthz HTTP/1.1\r\n"):
        s = ft.connect(healthz)
        try:
            if first:
                s.sendall(first)
            t0 = time.monotonic()
            s.settimeout(dl(10))
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            took = time.monotonic() - t0
        finally:
            s.close()
        assert data == b"", data
        assert 1.5 <= took < 2 + dl(1), took


# --------------------------------------------------------------- descriptors


def connect_from(addr, src):
    _, host, port = ft.parse_addr(addr)
    s = socket.socket()
    try:
        s.settimeout(dl(5))
        s.bind((src, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def hexaddr(sockname):
    ip, port = sockname[:2]
    return "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"),
                          port)


def accepted(s):
    """The server has accept()ed client socket <s>: its side of the
    connection has an inode in /proc/net/tcp (0 while it waits in the
    listener's queue)."""
    server, client = hexaddr(s.getpeername()), hexaddr(s.getsockname())
    with open("/proc/net/tcp") as fh:
        for ln in fh.readlines()[1:]:
            p = ln.split()
            if p[1] == server and p[2] == client:
                return p[9] != "0"
    return False


def fill_descriptors(f, limit, addr, name):
    """Hold idle connections to <addr> (the HTTP port <name> of ferry's,
    with a long request timeout), spread over four source addresses so
    that no per-address cap closes them, until ferry's descriptor table is
    full: it says so in its log. Returns them. Bounded: 200 connections."""
    off = f.log_size()
    full = re.compile(name + r": accept: Too many open files")
    held = []
    try:
        for i in range(200):
            s = connect_from(addr, f"127.0.0.{1 + i % 4}")
            held.append(s)
            if wait_for(lambda: "full" if full.search(f.log_text(off))
                        else accepted(s), dl(5),
                        "ferry accepting, or out of descriptors") == "full":
                return held
        pytest.fail(f"200 connections did not fill {limit} descriptors")
    except BaseException:
        for s in held:
            s.close()
        raise


def runnable_seconds(pid):
    """Seconds the threads of <pid> have run or waited to run, from
    /proc/PID/task/*/schedstat; None where the kernel does not keep it.
    Unlike CPU time, this does not shrink when other processes load the
    machine: a thread that spins is runnable all the time."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                run_ns, wait_ns = fh.read().split()[:2]
            total += int(run_ns) + int(wait_ns)
    except (OSError, ValueError):
        return None
    return total / 1e9


def cpu_share(f, window=1.0):
    """The share of <window> seconds ferry spent running or wanting to
    run (CPU time where schedstat is missing): ~1 when a thread spins."""
    def now():
        r = runnable_seconds(f.pid)
        return f.cpu_seconds() if r is None else r
    wall0, busy0 = time.monotonic(), now()
    time.sleep(window)  # the measurement window, not a wait
    return (now() - busy0) / (time.monotonic() - wall0)


def probe_ok(addr, path):
    try:
        return at.http(addr, "GET", path, timeout=dl(2))[0] == 200
    except OSError:
        return False


def check_pauses(f, limit, fill_addr, fill_name, addr, name):
    """Fill ferry's descriptors through <fill_addr>, queue connections on
    <addr>: ferry must not spin on them (a busy accept loop burns a whole
    CPU); once descriptors are free again, <addr> serves."""
    off = f.log_size()
    held = fill_descriptors(f, limit, fill_addr, fill_name)
    try:
        for _ in range(3):  # left in the accept queue
            held.append(ft.connect(addr))
        f.wait_log(name + r": accept: Too many open files", off, dl(10))
        share = cpu_share(f)
        assert share < 0.3, \
            f"ferry was runnable {share:.0%} of the time out of descriptors"
        assert f.alive()
        f.wait_log(name + r": accept: Too many open files: accepting "
                   r"paused for 100 ms", off, dl(10))
    finally:
        for s in held:
            s.close()
    wait_for(lambda: probe_ok(addr, "/healthz"), dl(10),
             "serving again once descriptors were freed")
    assert f.alive()


def test_admin_pauses_out_of_descriptors(start_ferry, backends):
    """RLIMIT_NOFILE 48: idle admin connections take every descriptor;
    more wait in the admin listener's queue. ferry pauses accepting
    (counted in ferry_accept_paused_total), then serves again."""
    b = backends("b")
    admin = ft.free_addr()
    f = start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin,
        request_timeout="60s"), rlimit_nofile=48)
    wait_for(lambda: readyz(admin) == 200, dl(10), "admin server ready")
    check_pauses(f, 48, admin, "admin", admin, "admin")
    m = at.scrape(admin)
    assert at.sample(m, "ferry_accept_paused_total") >= 1


def test_node_health_pauses_out_of_descriptors(start_ferry, tmp_path,
                                               sim_cleanup):
    """Kubernetes mode, RLIMIT_NOFILE 64: idle admin connections take
    every descriptor, connections wait on the node health port."""
    healthz, admin = ft.free_addr(), ft.free_addr()
    sim, f = kube_ferry(start_ferry, tmp_path, healthz, admin=admin,
                        admin_timeout="60s", rlimit_nofile=64)
    sim_cleanup.append(sim)
    wait_for(lambda: readyz(healthz) == 200, dl(20), "node health ready")
    wait_for(lambda: readyz(admin) == 200, dl(20), "admin ready")
    check_pauses(f, 64, admin, "admin", healthz, "healthz")
    m = at.scrape(admin)
    assert at.sample(m, "ferry_accept_paused_total") >= 1
