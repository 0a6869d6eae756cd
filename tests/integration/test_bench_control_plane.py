"""`bench/run control-plane` works (issue 6, point 3): a tiny run (50
Services x 3 endpoints, 20 changes) gives a well-formed control-plane.json
with every change measured, new connections timed through a proxied
Service and directly while the churn runs, a full relist after it (410
Gone on both watches) with ferry's memory around it, and a control-plane
section in summary.md.
No figure is asserted beyond "more than zero": this checks the tool, not
ferry's speed.

ferry comes from FERRY_BIN, else build/proxy/ferry (ferry-bench, the echo
server, from FERRY_BENCH_BIN, else build/bench/ferry-bench). The run uses
the fixed ports of the bench (18090, 18091, 29000-29005); the test is
skipped when one is taken.
"""

import json
import os
import shutil
import socket
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FERRY = os.environ.get("FERRY_BIN", os.path.join(ROOT, "build", "proxy", "ferry"))
BENCH = os.environ.get("FERRY_BENCH_BIN",
                       os.path.join(ROOT, "build", "bench", "ferry-bench"))
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"

# The sanitizer pass runs the tests of ferry's own code; this file
# checks the control-plane bench's harness: once, in the release pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="the bench harness, not ferry's code: once, in the release pass")


def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ports_or_skip(nodeports):
    """Skips unless the bench's fixed ports are free: its admin and
    healthz ports and the first <nodeports> of its NodePort range."""
    ports = [18090, 18091] + list(range(29000, 29000 + nodeports))
    if not all(port_free(p) for p in ports):
        pytest.skip("a port of the control-plane bench is in use")


def run_bench(args, timeout):
    """bench/run control-plane <args>: (its process id, exit code,
    stderr). Past <timeout> it is stopped with SIGTERM, as a user's ^C
    would, so that it removes its network namespace (SIGKILL, which
    subprocess.run() sends, leaves the namespace behind)."""
    p = subprocess.Popen([PY, os.path.join(ROOT, "bench", "run"),
                          "control-plane"] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        _, err = p.communicate(timeout=150)
        err += "\n(stopped after %d s)" % timeout
    return p.pid, p.returncode, err


def own_netns_gone(pid):
    """The namespace of the bench run <pid> (its outer process) is gone;
    others' are not this test's business (a run of another checkout, or
    one killed outright, may have left one)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                           text=True).stdout.split()
    return "ferrycp%d" % pid not in names


@pytest.mark.parametrize("dataplane", ["proxy", "nftables"])
def test_control_plane_tiny(tmp_path, dataplane):
    """proxy: node.proxy_steering redirect, the bench's default (the
    kernel steers every Service to one port of the proxy)."""
    if not os.access(FERRY, os.X_OK):
        pytest.skip("ferry not built at %s (set FERRY_BIN)" % FERRY)
    ports_or_skip(6)
    out = tmp_path / "res"
    pid, rc, err = run_bench(
        ["--services", "50", "--endpoints", "3", "--changes", "20",
         "--rate", "20", "--probe-services", "5", "--ferry", FERRY,
         "--bench", BENCH, "--dataplane", dataplane, "--relist",
         "--restart", "--out", str(out)], 240)
    assert rc == 0, err[-2000:]
    res = json.loads((out / "control-plane.json").read_text())
    # The commit named is the one of the tree the binary was built in.
    rev = shutil.which("git") and subprocess.run(
        ["git", "-C", os.path.dirname(os.path.abspath(FERRY)), "rev-parse",
         "--short", "HEAD"], capture_output=True, text=True)
    if rev and rev.returncode == 0:
        assert res["commit"].split()[0] == rev.stdout.strip(), res["commit"]
    st, ch = res["start"], res["churn"]
    assert st["to_ready_s"] > 0 and st["vmhwm_kb"] > 0
    # Descriptors do not grow with Services: under nftables the kernel
    # carries them, under the proxy it redirects them to one listener
    # per worker and family.
    assert 0 < st["open_fds"] < 50
    # + default/kubernetes, + conn-probe
    assert res["sim"]["objects"]["services"] == 52
    assert ch["changes_sent"] == 20
    assert ch["changes_measured"] == 20, ch
    assert ch["changes_lost"] == 0 and ch["put_errors"] == 0
    lat = ch["latency_ms_from_put_response"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    lines = (out / "raw" / "control-plane" / "changes.jsonl").read_text().splitlines()
    assert len(lines) == 20 and all("t_live" in json.loads(x) for x in lines)
    rl = res["relist"]
    assert "failed" not in rl and rl["relists"] >= 2, rl
    assert rl["peak_reset"] is True, rl
    # (Not ordered: the kernel keeps the high-water mark lazily, and RSS
    # may fall between the reading before and the reset.)
    assert rl["vmrss_kb_before"] > 0 and rl["vmhwm_kb_during"] > 0, rl
    assert rl["vmrss_kb_after"] > 0 and rl["seconds"] > 0, rl
    summary = (out / "summary.md").read_text()
    assert "## control-plane" in summary and "PUT response → live" in summary
    assert "full relist (410 Gone)" in summary
    # 20 changes at 20/s: a second of connections at 100/s to each target.
    cp = ch["conn_probe"]
    for name in ("ferry", "direct"):
        assert cp[name]["failed"] == 0 and cp[name]["n"] > 20, cp
        v = cp[name]["latency_ms"]
        assert 0 < v["p50"] <= v["p99"] <= v["max"], cp
    assert "New connections during the churn" in summary
    # ferry's own view was read: its log's tables and its histograms.
    own = res["ferry_own"]
    assert own["tables_published_during_churn"] > 0, own
    # A change translates its own Service, not the 52 (the memo).
    assert 0 < own["services_translated_per_table"] < 5, own
    assert own["ferry_sync_proxy_rules_duration_seconds"]["count"] > 0, own
    # Each change carries its trigger time, as the controller's do.
    assert own["ferry_network_programming_duration_seconds"]["count"] > 0, own
    # The restart: a second ferry, which adopts the first one's table
    # (the Services' rules, or the proxy's redirects).
    rs = res["restart"]
    assert "failed" not in rs and rs["exit"] == 0, rs
    assert rs["to_ready_s"] > 0 and rs["vmhwm_kb"] > 0, rs
    assert rs["adopted"] is True, rs
    assert "| restart, after the churn" in summary
    if dataplane == "nftables":
        assert st["nft_lines"] > 100
    # Both ran in a namespace of their own (the kernel's rules were
    # there), gone with it.
    assert own_netns_gone(pid)


def test_control_plane_probe_services_fit_the_node_port_range(tmp_path):
    """Each probe Service takes one port of the bench's NodePort range
    (its healthCheckNodePort) and conn-probe one: asked for as many probe
    Services as the range has ports, the bench runs with one fewer (the
    simulator refused the last: "range is full"). With one endpoint a
    Service there is nothing for the churn to flip: refused at once."""
    if not os.access(FERRY, os.X_OK):
        pytest.skip("ferry not built at %s (set FERRY_BIN)" % FERRY)
    pid, rc, err = run_bench(
        ["--services", "10", "--endpoints", "1", "--changes", "5",
         "--ferry", FERRY, "--bench", BENCH, "--out", str(tmp_path / "one")],
        60)
    assert rc == 2 and "endpoints: at least 2" in err, err
    assert own_netns_gone(pid)
    ports_or_skip(1000)
    out = tmp_path / "res"
    pid, rc, err = run_bench(
        ["--services", "1200", "--endpoints", "2", "--changes", "10",
         "--rate", "50", "--probe-services", "1000", "--ferry", FERRY,
         "--bench", BENCH, "--out", str(out)], 240)
    assert rc == 0, err[-2000:]
    assert own_netns_gone(pid)
    res = json.loads((out / "control-plane.json").read_text())
    assert res["config"]["probes"] == 999, res["config"]
    assert res["churn"]["changes_measured"] == 10, res["churn"]


def test_sim_splits_a_large_service_into_slices():
    """bench/run control-plane --endpoints 100000 (kube-proxy's scale
    model of one large Service): the simulator serves it as slices of at
    most 100 endpoints, as the EndpointSlice controller does, every
    endpoint with an address of its own (a node's health check port counts
    pods by IP) inside 198.18.0.0/15 and outside the node's, the probes'
    and the first ClusterIPs' addresses."""
    import ipaddress
    import sys
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import cp_sim
    m = 100000
    assert cp_sim.nslices(m) == 1000 and cp_sim.nslices(25) == 1
    names, ips = set(), set()
    net = ipaddress.ip_network("198.18.0.0/15")
    keep_out = [ipaddress.ip_network(n)
                for n in ("198.18.0.0/23", "198.18.128.0/18")]
    for k in range(cp_sim.nslices(m)):
        o = cp_sim.slice_obj(0, m, "n1", None, k)
        names.add(o["metadata"]["name"])
        assert len(o["endpoints"]) == 100
        for e in o["endpoints"]:
            ips.add(e["addresses"][0])
    assert len(names) == 1000 and len(ips) == m
    for a in map(ipaddress.ip_address, ips):
        assert a in net and not any(a in n for n in keep_out), a
    # The slice a change goes to holds the endpoint changed.
    j = 4321
    o = cp_sim.slice_obj(0, m, "n1", set(range(m)) - {j},
                         cp_sim.slice_of(j, m))
    flags = [e["conditions"]["ready"] for e in o["endpoints"]]
    assert flags.count(False) == 1
    # A small Service keeps its one slice.
    assert len(cp_sim.slice_obj(3, 25, "n1")["endpoints"]) == 25
