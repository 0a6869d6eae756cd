"""ferry explain (README: ferry explain): the admin server's GET /explain
and the `ferry explain` command. Each backend's verdict (serving, drained,
weight 0, health check down, ejected), and the dry-run pick checked
against where the next real connection goes: round-robin, and maglev for
random clients over a random table."""

import json
import random
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
import kubetest as kt  # noqa: E402
from ferrytest import wait_for  # noqa: E402
from kapisim_client import make_ca_and_cert, start_sim  # noqa: E402

CHECK = {"type": "tcp", "interval": "100ms", "timeout": "1s", "rise": 1,
         "fall": 1}


def explain(admin, addr, frm=None, proto=None):
    q = "/explain?addr=" + quote(addr, safe="")
    if frm is not None:
        q += "&from=" + frm
    if proto is not None:
        q += "&proto=" + proto
    return at.get_json(admin, q)


def verdicts(ans):
    return {b["name"]: b.get("reason", b["verdict"])
            for b in ans["service"]["backends"]}


def hello_from(addr, src):
    """hello() from source IP <src> (any 127.0.0.0/8 address is local)."""
    _, host, port = ft.parse_addr(addr)
    with socket.create_connection((host, port), timeout=ft.DEADLINE,
                                  source_address=(src, 0)) as s:
        s.settimeout(ft.DEADLINE)
        return ft.read_line(s)


def cli(ferry_bin, *args):
    return subprocess.run([ferry_bin, "explain", *args], capture_output=True,
                          text=True, timeout=30)


def test_explain_verdicts_and_next_pick(start_ferry, backends, ferry_bin):
    rng = random.Random()
    a, b, z = backends("a"), backends("b"), backends("z")
    a2 = backends("a2")
    c = backends("c")
    bad, down = ft.RefusingPort(), ft.RefusingPort()
    hs = [backends(f"h{i}") for i in range(rng.randint(3, 6))]
    web, flaky, checked, hashed, least, rand = (ft.free_addr()
                                                for _ in range(6))
    admin = ft.free_addr()
    f = start_ferry(at.with_admin(ft.config([
        ft.service("web", web, [a, b, (z, 0)]),
        ft.service("flaky", flaky, [(bad.addr, 1, "bad"), a2], retries=1),
        ft.service("checked", checked, [c, (down.addr, 1, "down")],
                   health_check=CHECK),
        ft.service("hashed", hashed,
                   [(h, rng.randint(1, 4)) for h in hs], balance="maglev"),
        ft.service("least", least, [a, b], balance="leastconn"),
        ft.service("rand", rand, [a, b], balance="random"),
    ]), admin))
    try:
        assert at.http(admin, "POST", "/backends/web/b/drain")[0] == 200
        ans = explain(admin, web)
        assert ans["found"] is True
        s = ans["service"]
        assert (s["name"], s["origin"], s["dataplane"], s["frontend_kind"]) \
            == ("web", "file", "proxy", "file listener")
        assert verdicts(ans) == {"a": "serving",
                                 "b": "drained by the admin API",
                                 "z": "weight 0"}
        # Round-robin: the dry run names where the next connection goes,
        # and does not move the order itself.
        assert explain(admin, web)["service"]["next"]["backend"] == "a"
        assert at.http(admin, "POST", "/backends/web/b/enable")[0] == 200
        for _ in range(6):
            want = explain(admin, web)["service"]["next"]["backend"]
            assert explain(admin, web)["service"]["next"]["backend"] == want
            assert ft.hello(web) == want

        # A refused connect puts "bad" in back-off.
        def ejected():
            ft.hello(flaky)
            return re.fullmatch(
                r"ejected \(passive back-off after \d+ failed connects\) "
                r"for \d+\.\d s more; tried only if every backend is",
                verdicts(explain(admin, flaky))["bad"]) is not None
        wait_for(ejected, ft.scaled(10), "bad ejected")

        wait_for(lambda: verdicts(explain(admin, checked))["down"]
                 .startswith("health check down: "), ft.scaled(10),
                 "down's check failed")
        assert verdicts(explain(admin, checked))["c"] == "serving"

        # Maglev over a random table, a random backend drained: for
        # random clients, explain names the backend they reach.
        gone = rng.choice(hs)
        assert at.http(admin, "POST",
                       f"/backends/hashed/{gone.name}/drain")[0] == 200
        for _ in range(12):
            src = f"127.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            nx = explain(admin, hashed, frm=src)["service"]["next"]
            assert nx["backend"] != gone.name
            assert hello_from(hashed, src) == nx["backend"], src
        no_from = explain(admin, hashed)["service"]["next"]
        assert "give --from" in no_from["note"]

        # leastconn: the least loaded, with one connection held open.
        held = ft.connect(least)
        try:
            first = ft.read_line(held)
            nx = explain(admin, least)["service"]["next"]["backend"]
            assert nx != first and ft.hello(least) == nx
        finally:
            held.close()
        nx = explain(admin, rand)["service"]["next"]
        assert nx["backend"] is None and "draws at random" in nx["note"]
    finally:
        bad.close()
        down.close()


def test_explain_unowned_bad_input_and_cli(start_ferry, backends, ferry_bin):
    a = backends("a")
    web, dns, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    start_ferry(at.with_admin(ft.config([
        ft.service("web", web, [a]),
        ft.service("dns", dns, ["127.0.0.1:53"], protocol="udp")]), admin),
        wait=False)
    wait_for(lambda: ft.try_hello(web) == "a", ft.scaled(10), "web served")
    wait_for(lambda: at.answers(admin), ft.scaled(10), "the admin server")
    ans = explain(admin, dns, proto="udp")
    assert (ans["protocol"], ans["service"]["name"]) == ("udp", "dns")
    assert {"service": "dns", "frontend": dns, "protocol": "udp",
            "match": "other protocol"} in explain(admin, dns)["nearest"]
    _, host, port = ft.parse_addr(web)
    other_port = ft.free_addr().rsplit(":", 1)[1]
    ans = explain(admin, f"{host}:{other_port}")
    assert ans["found"] is False and "service" not in ans
    assert ans["nearest"] == [{"service": "web", "frontend": web,
                               "protocol": "tcp",
                               "match": "same address, other port"}]
    ans = explain(admin, f"127.0.0.3:{port}")
    assert [m["match"] for m in ans["nearest"]] == [
        "same port, other address"]
    for q, why in [("addr=nope", 'addr "nope"'),
                   ("", "addr is missing"),
                   (f"addr={web}&proto=sctp", 'proto "sctp": tcp or udp'),
                   (f"addr={web}&from=1.2.3", 'from "1.2.3"')]:
        st, _, body = at.http(admin, "GET", "/explain?" + q)
        assert st == 400 and b"bad question: " + why.encode() in body, body
    st, _, body = at.http(admin, "GET", f"/explain?addr={web}&x=1")
    assert st == 400 and b"unknown or repeated" in body

    r = cli(ferry_bin, web, "--admin", admin)
    assert r.returncode == 0, r.stderr
    assert "service:   web (config file)" in r.stdout
    assert f"  serving   a                {a.addr}" in r.stdout
    assert f"next:      a {a.addr}" in r.stdout
    r = cli(ferry_bin, web, "--admin", admin, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["found"] is True
    r = cli(ferry_bin, f"{host}:{other_port}", "--admin", admin)
    assert r.returncode == 1
    assert "no service owns this address" in r.stdout
    assert "nearest: web" in r.stdout
    r = cli(ferry_bin, "nope", "--admin", admin)
    assert r.returncode == 2 and 'addr "nope"' in r.stderr
    r = cli(ferry_bin, web, "--proto")
    assert r.returncode == 2 and "--proto: unknown option" in r.stderr
    r = cli(ferry_bin, web, "--admin", ft.RefusingPort().addr)
    assert r.returncode == 2 and "Connection refused" in r.stderr


# ------------------------------------------------------------ Kubernetes

def ask_from(addr, src):
    """kubetest.ask() from source IP <src>."""
    _, host, port = ft.parse_addr(addr)
    with socket.create_connection((host, port), timeout=kt.dl(5),
                                  source_address=(src, 0)) as s:
        s.settimeout(kt.dl(5))
        s.sendall(kt.HTTP_REQ)
        return kt._answer_name(ft.read_until_eof(s, kt.dl(5)))


def test_explain_kubernetes_service(tmp_path, start_ferry, ferry_bin):
    """A NodePort Service with externalTrafficPolicy Local and ClientIP
    affinity: the endpoints left out (not ready, terminating while ready
    ones exist, another node's) are named with the reason, and the pin a
    client gets is what explain says next."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI for the sim's TLS certificate")
    pki = make_ca_and_cert(str(tmp_path / "pki"))
    token = "tok-ferry-explain"
    sim = start_sim(str(tmp_path), tls=pki,
                    tokens={"tok-admin-explain": "admin",
                            token: "ferry get,list,watch:*"},
                    bookmark_interval=0.5, service_cidr=kt.service_cidr())
    pods = {}
    try:
        sa = kt.ServiceAccount(tmp_path / "sa", sim.ca_file, token)
        admin = kt.Admin(ft.free_addr())
        pods = kt.start_pods(["a", "b", "c", "d", "e"], tmp_path)
        np = kt.node_port()
        sim.create("services", kt.svc_obj(
            "web", [("http", 80, np)], externalTrafficPolicy="Local",
            sessionAffinity="ClientIP", externalIPs=["198.18.77.7"]))
        kt.put_slice(sim, "web-1", "web", [
            kt.ep(pods["a"]), kt.ep(pods["b"]),
            kt.ep(pods["c"], ready=False, serving=False),
            kt.ep(pods["d"], ready=False, serving=True, terminating=True),
            kt.ep(pods["e"], node="n2")], pods["a"].port)
        f = start_ferry(kt.kube_config(sim.url, sa.path, admin.addr),
                        wait=False)
        admin.wait_ready(f)
        addr = "127.0.0.1:%d" % np

        def answer(frm=None):
            return explain(admin.addr, addr, frm=frm)

        def answer_at(a):
            return explain(admin.addr, a)
        wait_for(lambda: answer()["found"], kt.dl(10), "web in the table")
        s = answer()["service"]
        assert (s["namespace"], s["service"], s["port_name"]) \
            == ("default", "web", "http")
        assert s["origin"] == "api" and s["dataplane"] == "proxy"
        assert s["frontend_kind"] == "NodePort"
        assert s["affinity_seconds"] > 0
        v = {b["name"]: b.get("reason", b["verdict"]) for b in s["backends"]}
        assert v == {
            "a": "serving", "b": "serving",
            "c": "not ready",
            "d": "terminating while ready endpoints exist",
            "e": "on another node, under a Local traffic policy"}, v
        # Affinity: the pin a client gets is what explain names next,
        # from then on marked as the pin.
        for src in ("127.0.0.1", "127.0.9.9"):
            before = answer(src)["service"]["next"]
            assert before["pinned"] is False
            got = ask_from(addr, src)
            assert got == before["backend"]
            after = answer(src)["service"]["next"]
            assert (after["backend"], after["pinned"]) == (got, True)
            assert ask_from(addr, src) == got
        s = answer_at("198.18.77.7:80")["service"]
        assert s["frontend_kind"] == "externalIP or LoadBalancer IP"
        assert s["name"] == "default/web:http/external"
        # The ClusterIP: the cluster set (another node's endpoint serves).
        cip = sim.get("services", "web")["spec"]["clusterIP"]
        s = answer_at(f"{cip}:80")["service"]
        assert s["frontend_kind"].startswith("ClusterIP")
        v = {b["name"]: b.get("reason", b["verdict"]) for b in s["backends"]}
        assert v == {"a": "serving", "b": "serving", "e": "serving",
                     "c": "not ready",
                     "d": "terminating while ready endpoints exist"}, v
        r = cli(ferry_bin, addr, "--from", "127.0.0.1", "--admin",
                admin.addr)
        assert r.returncode == 0, r.stderr
        assert "Service default/web, port http" in r.stdout
        assert "(the client's affinity pin)" in r.stdout
        assert "excluded  d" in r.stdout
    finally:
        for p in pods.values():
            p.stop()
        sim.stop()
