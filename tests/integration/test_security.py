"""Security checks (issue 9, point 4).

- The admin server binds loopback unless told otherwise.
- An unknown admin path gets 404 and the reply never echoes the request.
- Tokens and private keys never reach the log, even at debug level.
- An API server whose certificate does not verify is never talked to
  (no request, no table) and ferry refuses to start (exit 1, the log says
  why) unless insecure-skip-tls-verify is set, which works and logs a
  warning. A certificate that stops verifying after the first sync only
  makes ferry retry: it keeps serving.

Run: /usr/bin/python3 -m pytest tests/integration/test_security.py
"""

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import wait_for  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"
TOKEN = "tok-Sekr1t-0d5c2b7e9a41"
ADMIN_TOKEN = "tok-admin-sec"


def dl(seconds):
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


def listening_on(pid, host, port):
    """True when process <pid> has a LISTEN socket on exactly host:port
    (IPv4), read from /proc/PID/net/tcp and its fds."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"),
                          port)
    inodes = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        for ln in f.readlines()[1:]:
            p = ln.split()
            if p[3] == "0A" and p[1] == want:
                inodes.add(p[9])
    return ft.holds_socket(pid, inodes)


def port_free(host, port):
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


# --------------------------------------------------------------- admin


def own_netns_prefix():
    """A command prefix that runs ferry (exec'd, same PID) in a network
    namespace of its own with loopback up, or None when not permitted."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    r = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"],
                       capture_output=True, timeout=10)
    if r.returncode != 0:
        return None
    return ["unshare", "-n", "sh", "-c",
            'ip link set lo up && exec "$0" "$@"']


def test_admin_binds_loopback_by_default(start_ferry, backends):
    """admin: {enabled: true} and nothing else: 127.0.0.1:9990, never a
    wildcard address. In a network namespace of ferry's own when
    possible, where port 9990 is surely free."""
    prefix = own_netns_prefix()
    if prefix is None and not port_free("0.0.0.0", 9990):
        pytest.skip("port 9990 (the admin default) is in use and no "
                    "network namespace can be made")
    text = ft.config([ft.service("web", ft.free_addr(),
                                 ["127.0.0.1:9"])]) + \
        "admin:\n  enabled: true\n"
    f = start_ferry(text, wait=False, prefix=prefix or [])
    wait_for(lambda: listening_on(f.pid, "127.0.0.1", 9990), dl(10),
             "admin server on 127.0.0.1:9990")
    assert not listening_on(f.pid, "0.0.0.0", 9990)
    # Logged right after the socket listens: wait for the line too.
    wait_for(lambda: "admin: listening on http://127.0.0.1:9990/"
             in f.log_text(), dl(10), "the admin server's log line")


def test_admin_binds_where_configured(start_ferry, backends):
    b = backends("b")
    admin = ft.free_addr("127.0.0.2")
    f = start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin))
    _, host, port = ft.parse_addr(admin)
    wait_for(lambda: listening_on(f.pid, host, port), dl(10),
             f"admin server on {admin}")
    assert at.http(admin, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("path", [
    "/no-such-page-7f3a",
    "/%3Cscript%3Ealert(7f3a)%3C/script%3E",
    "/backends/web/b/explode-7f3a",
    "/metrics/7f3a?x=<b>7f3a</b>",
])
def test_unknown_path_404_without_echo(start_ferry, backends, path):
    b = backends("b")
    admin = ft.free_addr()
    start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin))
    wait_for(lambda: at.http(admin, "GET", "/healthz")[0] == 200, dl(10),
             "admin server up")
    reply = at.raw(admin, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                   "X-Probe: 7f3a\r\n\r\n".encode())
    assert at.status_code(reply) == 404, reply[:200]
    assert b"7f3a" not in reply, reply
    assert b"script" not in reply.lower(), reply


# --------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI for certificates")
    from kapisim_client import make_ca_and_cert
    good = make_ca_and_cert(str(tmp_path_factory.mktemp("pki-good")))
    other = make_ca_and_cert(str(tmp_path_factory.mktemp("pki-other")),
                             name="stranger")
    return good, other


@pytest.fixture
def sim(tmp_path, pki):
    from kapisim_client import start_sim
    s = start_sim(str(tmp_path), tls=pki[0],
                  tokens={ADMIN_TOKEN: "admin",
                          TOKEN: "ferry get,list,watch:*"},
                  bookmark_interval=0.5)
    yield s
    s.stop()


def b64(path):
    return base64.b64encode(Path(path).read_bytes()).decode()


def kubeconfig(tmp_path, server, ca=None, insecure=False, client=None):
    cluster = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = b64(ca)
    if insecure:
        cluster["insecure-skip-tls-verify"] = True
    user = {"token": TOKEN}
    if client is not None:
        user["client-certificate-data"] = b64(client[0])
        user["client-key-data"] = b64(client[1])
    return ft.write_kubeconfig(tmp_path / "kubeconfig", cluster, user)


def kube_ferry(start_ferry, kc, admin, level="debug"):
    text = ft.to_yaml({
        "log": {"level": level},
        "drain_timeout": "1s",
        "kubernetes": {"enabled": True, "kubeconfig": str(kc),
                       "node_name": "n1"},
        "node": {"vip_interface": "none", "healthz_listen": ft.free_addr(),
                 "dataplane": "proxy", "proxy_steering": "listen"},
        "admin": {"enabled": True, "listen": admin},
    }) + "\n"
    return start_ferry(text, wait=False)


def readyz(admin):
    try:
        return at.http(admin, "GET", "/readyz", timeout=dl(5))[0]
    except OSError:
        return None


def ferry_requests(sim):
    return [r for r in sim.requests()
            if not str(r.get("path", "")).startswith("/_sim")]


def test_secrets_never_logged(tmp_path, pki, sim, start_ferry):
    """A debug-level run with a bearer token and a client key: neither
    the token nor any piece of the key (PEM lines, base64 of the file)
    appears in ferry's log."""
    good, other = pki
    kc = kubeconfig(tmp_path, sim.url, ca=good[0],
                    client=(other[1], other[2]))
    admin = ft.free_addr()
    f = kube_ferry(start_ferry, kc, admin)
    wait_for(lambda: readyz(admin) == 200, dl(20), "ferry ready")
    sim.create("services", {"metadata": {"name": "web"},
                            "spec": {"ports": [{"name": "http",
                                                "port": 80}]}})
    wait_for(lambda: "default/web:http" in str(at.get_json(admin)),
             dl(20), "the new service in the table")
    f.stop()
    log = f.log_text()
    assert "kubeconfig credentials" in log
    assert TOKEN not in log
    assert TOKEN[4:14] not in log
    key = Path(other[2]).read_text()
    pieces = [ln for ln in key.splitlines()
              if len(ln) >= 16 and not ln.startswith("-----")]
    assert pieces
    for p in pieces:
        assert p[:24] not in log, "a line of the client key is in the log"
    assert b64(other[2])[:40] not in log
    assert "PRIVATE KEY" not in log


def test_unverified_api_certificate_refused(tmp_path, pki, sim,
                                            start_ferry):
    """The kubeconfig trusts another CA: ferry never completes a request
    (so the token is never sent), and refuses to start: one error line
    saying that the certificate does not verify and what to do, exit
    status 1 (a DaemonSet shows CrashLoopBackOff with that line)."""
    good, other = pki
    kc = kubeconfig(tmp_path, sim.url, ca=other[0])
    admin = ft.free_addr()
    f = kube_ferry(start_ferry, kc, admin, level="info")
    assert f.wait_exit(dl(20)) == 1
    log = f.log_text()
    refusals = [ln for ln in log.splitlines() if "refusing to start" in ln]
    assert len(refusals) == 1, log
    assert "certificate" in refusals[0] and "does not verify" in refusals[0]
    assert "insecure-skip-tls-verify" in refusals[0]
    assert refusals[0].startswith("error") or " error " in refusals[0] \
        or '"error"' in refusals[0], refusals[0]
    assert ferry_requests(sim) == [], ferry_requests(sim)[:3]
    assert TOKEN not in log


def test_certificate_change_after_sync_keeps_serving(tmp_path, pki, sim,
                                                     start_ferry):
    """Trusted at start, then the API server comes back with a certificate
    from a CA ferry does not trust: ferry does not exit and does not drop
    what it serves; it says why it cannot talk to the server, retries with
    back-off, and recovers once the right certificate is back."""
    good, other = pki
    sim.create("Service", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP",
                 "ports": [{"name": "http", "port": 8080,
                            "protocol": "TCP"}]}})
    kc = kubeconfig(tmp_path, sim.url, ca=good[0])
    admin = ft.free_addr()
    f = kube_ferry(start_ferry, kc, admin, level="info")
    wait_for(lambda: readyz(admin) == 200, dl(20), "ferry ready")

    def names():
        return [s.get("name") for s in
                at.get_json(admin).get("services") or []]

    wait_for(lambda: "default/web:http" in names(), dl(10),
             "the service in ferry's table")
    off = f.log_size()
    sim.cert_file, sim.key_file = other[1], other[2]
    sim.restart()
    f.wait_log(r"(?i)certificate", off, dl(20))
    f.wait_log(r"retrying (list|watch)", off, dl(20))
    assert f.alive()
    assert "refusing to start" not in f.log_text(off)
    assert "default/web:http" in names()
    # The right certificate again: ferry converges by itself.
    sim.cert_file, sim.key_file = good[1], good[2]
    sim.restart()
    f.wait_log(r"API server reachable again", off, dl(60))
    wait_for(lambda: readyz(admin) == 200, dl(10), "ferry ready again")
    assert "default/web:http" in names()


def test_untrusted_certificate_after_an_outage_is_logged(tmp_path, pki, sim,
                                                         start_ferry):
    """The API server is unreachable for a while, then comes back with a
    certificate from a CA ferry does not trust: ferry says so, though it
    has already said, in the same run of failures, that it could not
    connect (a second failure of the same kind is only logged at debug;
    this one is of another kind)."""
    good, other = pki
    kc = kubeconfig(tmp_path, sim.url, ca=good[0])
    admin = ft.free_addr()
    f = kube_ferry(start_ferry, kc, admin, level="info")
    wait_for(lambda: readyz(admin) == 200, dl(20), "ferry ready")
    off = f.log_size()
    sim.stop()
    # Both lists have said they cannot connect: a failure streak each.
    for res in ("services", "endpointslices"):
        f.wait_log(r"list %s: .*(Couldn't connect|Failed to connect)" % res,
                   off, dl(20))
    assert not re.search(r"(?i)certificate", f.log_text(off))
    sim.cert_file, sim.key_file = other[1], other[2]
    sim.start()
    f.wait_log(r"list (services|endpointslices): .*(?i:certificate)", off,
               dl(30))
    assert f.alive()


def test_insecure_skip_tls_verify_works_and_warns(tmp_path, sim,
                                                  start_ferry):
    kc = kubeconfig(tmp_path, sim.url, insecure=True)
    admin = ft.free_addr()
    f = kube_ferry(start_ferry, kc, admin, level="info")
    wait_for(lambda: readyz(admin) == 200, dl(20), "ferry ready")
    f.wait_log(r"warn .*insecure-skip-tls-verify", 0, dl(5))
    assert TOKEN not in f.log_text()
