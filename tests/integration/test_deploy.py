"""deploy/: the container image, the Kubernetes manifests and the systemd
unit, checked against the binary they deploy.

No Docker engine and no cluster run here, so the checks are about shape
and agreement: every manifest parses and fits the Kubernetes API schema
(python3-kubernetes models), RBAC is exactly what ferry reads, flags and
config keys in the manifests are ones `ferry --help` and `ferry
check-config` accept, probes hit the port of node.healthz_listen, the
DaemonSet's own command line runs against the simulated API server with a
token limited to the ClusterRole, `kubectl create --dry-run=client`
accepts the directory, the Dockerfile's runtime stage installs every
library the binary links, and the systemd unit verifies and allows every
system call ferry makes. Where root is available, the capability scheme
of the image (file capabilities, non-root, no_new_privs) is run for real;
the image itself is built and run in test_image.py.

Run: /usr/bin/python3 -m pytest tests/integration/test_deploy.py
Binary: $FERRY_BIN, else build/proxy/ferry.
"""

import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

# The sanitizer pass runs the tests of ferry's own code; this file
# checks the shipped files (image, manifests, unit): once, in the release pass.
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="checks deploy/, not ferry's code: once, in the release pass")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest  # noqa: E402
from ferrytest import wait_for  # noqa: E402

REPO = ferrytest.REPO_ROOT
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "ferry.service"

KINDS = {  # (apiVersion, kind) -> python3-kubernetes model
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"):
        "V1ClusterRoleBinding",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
}
CAPS = {"NET_ADMIN", "NET_BIND_SERVICE"}


# ------------------------------------------------------------ helpers


def run(args, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(args, **kw)


@pytest.fixture(scope="module")
def objects():
    """Every object of every manifest, as (file name, dict)."""
    out = []
    files = sorted(K8S.glob("*.yaml"))
    assert files, "no manifests in deploy/kubernetes"
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is not None:
                out.append((f.name, doc))
    return out


def one(objects, kind):
    found = [o for _, o in objects if o.get("kind") == kind]
    assert len(found) == 1, f"want exactly one {kind}, have {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def ds(objects):
    return one(objects, "DaemonSet")


@pytest.fixture(scope="module")
def container(ds):
    cs = ds["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, "one container: ferry"
    return cs[0]


@pytest.fixture(scope="module")
def cm(objects):
    return one(objects, "ConfigMap")


def config_key(container, ds):
    """The ConfigMap key ferry reads: the file named by --config, through
    the volume mounted over its directory."""
    args = container["args"]
    i = args.index("--config") if "--config" in args else args.index("-c")
    path = args[i + 1]
    pod = ds["spec"]["template"]["spec"]
    for m in container["volumeMounts"]:
        if os.path.dirname(path) == m["mountPath"].rstrip("/"):
            vol = [v for v in pod["volumes"] if v["name"] == m["name"]][0]
            items = vol["configMap"].get("items")
            name = os.path.basename(path)
            if items:
                return [it["key"] for it in items if it["path"] == name][0]
            return name
    raise AssertionError(f"--config {path} is not on a mounted volume")


@pytest.fixture(scope="module")
def conf_text(cm, container, ds):
    return cm["data"][config_key(container, ds)]


@pytest.fixture(scope="module")
def conf(conf_text):
    return yaml.safe_load(conf_text)


@pytest.fixture(scope="module")
def help_text(ferry_bin):
    p = run([ferry_bin, "--help"])
    assert p.returncode == 0, p.stderr
    return p.stdout + p.stderr


def help_flags(help_text):
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", help_text))


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def free_port():
    """A port for ferry to listen on, reserved for this test process."""
    return ferrytest.free_port()


def http_get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def is_sanitized(ferry_bin):
    p = run(["ldd", ferry_bin])
    return re.search(r"lib(a|ub|t)san", p.stdout) is not None


# ------------------------------------------------------------ schema


def check_schema(value, typ, where, errors):
    """Walk <value> against a python3-kubernetes type name; unknown keys
    and wrong types go to <errors>. Returns a model instance (so that the
    models' own required-field checks run) or the plain value."""
    import kubernetes.client as kc
    if typ == "object":  # IntOrString and friends
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{where}: want int or string, have {value!r}")
        return value
    if typ in ("str", "int", "bool", "float"):
        want = {"str": str, "int": int, "bool": bool,
                "float": (int, float)}[typ]
        if not isinstance(value, want) or (typ == "int" and
                                           isinstance(value, bool)):
            errors.append(f"{where}: want {typ}, have {value!r}")
        return value
    m = re.fullmatch(r"list\[(.+)\]", typ)
    if m:
        if not isinstance(value, list):
            errors.append(f"{where}: want a list, have {value!r}")
            return value
        return [check_schema(v, m.group(1), f"{where}[{i}]", errors)
                for i, v in enumerate(value)]
    m = re.fullmatch(r"dict\(str, (.+)\)", typ)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{where}: want a map, have {value!r}")
            return value
        return {k: check_schema(v, m.group(1), f"{where}.{k}", errors)
                for k, v in value.items()}
    cls = getattr(kc, typ)
    if not isinstance(value, dict):
        errors.append(f"{where}: want a {typ} object, have {value!r}")
        return value
    by_json = {j: py for py, j in cls.attribute_map.items()}
    kwargs = {}
    for k, v in value.items():
        if k not in by_json:
            errors.append(f"{where}: unknown field {k!r} in {typ}")
            continue
        py = by_json[k]
        kwargs[py] = check_schema(v, cls.openapi_types[py], f"{where}.{k}",
                                  errors)
    try:
        return cls(**kwargs)
    except ValueError as e:
        errors.append(f"{where}: {e}")
        return value


def test_manifests_fit_the_api_schema(objects):
    pytest.importorskip("kubernetes", reason="python3-kubernetes is missing")
    errors = []
    for fname, o in objects:
        key = (o.get("apiVersion"), o.get("kind"))
        assert key in KINDS, f"{fname}: unexpected object {key}"
        check_schema(o, KINDS[key], f"{fname}:{o['kind']}", errors)
        assert o["metadata"].get("name"), f"{fname}: unnamed {o['kind']}"
    assert not errors, "\n".join(errors)
    kinds = sorted(k for _, k in (key for key in
                                  ((o["apiVersion"], o["kind"])
                                   for _, o in objects)))
    assert kinds == sorted(k for _, k in KINDS), kinds


# ------------------------------------------------------------ RBAC


def test_rbac_is_exactly_read_services_endpointslices_nodes(objects, ds):
    role = one(objects, "ClusterRole")
    granted = set()
    for r in role["rules"]:
        assert set(r) <= {"apiGroups", "resources", "verbs"}, \
            f"unexpected rule fields (resourceNames, nonResourceURLs?): {r}"
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    granted.add((g, res, v))
    want = {(g, res, v) for g, res in (("", "services"), ("", "nodes"),
                                       ("discovery.k8s.io", "endpointslices"))
            for v in ("get", "list", "watch")}
    assert granted == want, f"extra: {granted - want}, missing: {want - granted}"

    sa = one(objects, "ServiceAccount")
    bind = one(objects, "ClusterRoleBinding")
    assert bind["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                               "kind": "ClusterRole",
                               "name": role["metadata"]["name"]}
    assert bind["subjects"] == [{"kind": "ServiceAccount",
                                 "name": sa["metadata"]["name"],
                                 "namespace": sa["metadata"]["namespace"]}]
    pod = ds["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert ds["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert pod.get("automountServiceAccountToken", True) is True


# ------------------------------------------------------------ DaemonSet


def test_daemonset_runs_like_a_node_proxy(ds, container, cm, conf):
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    assert pod["hostNetwork"] is True
    # With hostNetwork, ClusterFirst would send DNS to a ClusterIP that
    # this very proxy serves.
    assert pod.get("dnsPolicy") == "Default"
    assert pod.get("priorityClassName") == "system-node-critical"
    # Every node: one toleration without a key tolerates every taint.
    assert any(t.get("operator") == "Exists" and "key" not in t
               and "effect" not in t for t in pod["tolerations"])
    us = spec["updateStrategy"]
    assert us["type"] == "RollingUpdate"
    assert us["rollingUpdate"]["maxUnavailable"] in (1, "1")
    # Host port 10256 cannot be held by two pods on one node.
    assert us["rollingUpdate"].get("maxSurge", 0) in (0, "0", "0%")

    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == \
        {"fieldRef": {"fieldPath": "spec.nodeName"}}

    res = container["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[part]), f"resources.{part}"
    # README says what the DaemonSet asks for and is limited to.
    readme = " ".join((REPO / "README.md").read_text().split())
    m = re.search(r"The DaemonSet asks for (\d+) (Mi|Gi) and is limited to "
                  r"(\d+) (Mi|Gi)", readme)
    assert m, "README: the DaemonSet's memory request and limit"
    assert res["requests"]["memory"] == m.group(1) + m.group(2)
    assert res["limits"]["memory"] == m.group(3) + m.group(4)

    # SIGTERM drains for drain_timeout; the kubelet must wait longer.
    drain = conf.get("drain_timeout", "30s")
    secs = float(re.fullmatch(r"(\d+)s", drain).group(1))
    assert pod.get("terminationGracePeriodSeconds", 30) > secs

    assert conf["kubernetes"]["enabled"] is True
    assert conf["kubernetes"]["mode"] == "node"


def test_api_server_comes_from_the_configmap(container, cm, help_text):
    """Not the kubernetes Service's ClusterIP (no proxy serves it before
    ferry does): --api-server from a ConfigMap key, as kube-proxy reads
    its server from its own kubeconfig ConfigMap."""
    args = container["args"]
    i = args.index("--api-server")
    m = re.fullmatch(r"\$\((\w+)\)", args[i + 1])
    assert m, "--api-server takes an env var: " + args[i + 1]
    env = {e["name"]: e for e in container["env"]}
    ref = env[m.group(1)]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == cm["metadata"]["name"]
    assert ref.get("optional", False) is False, \
        "a missing address must stop the pod, not fall back to the ClusterIP"
    url = cm["data"][ref["key"]]
    assert re.fullmatch(r"https://[^/\s]+:\d+", url), url


def test_every_flag_and_env_reference_is_known(container, help_text):
    flags = help_flags(help_text)
    env = {e["name"] for e in container.get("env", [])}
    for a in container.get("command", []) + container["args"]:
        for ref in re.findall(r"\$\((\w+)\)", a):
            assert ref in env, f"{a}: ${ref} is not in env"
        if a.startswith("-"):
            assert a.split("=", 1)[0] in flags, \
                f"{a} is not in ferry --help"
    assert "command" not in container, "the image's ENTRYPOINT is ferry"


def test_configmap_config_passes_check_config(ferry_bin, conf_text,
                                              tmp_path):
    f = tmp_path / "ferry.yaml"
    f.write_text(conf_text)
    p = run([ferry_bin, "check-config", str(f)])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK" in p.stdout


def test_workers_match_the_cpu_limit(container, conf):
    """relay.workers is set to the container's CPU limit: the default (one
    per CPU) would count the node's CPUs, which a cgroup quota does not
    hide from sched_getaffinity."""
    limit = str(container["resources"]["limits"]["cpu"])
    cpus = int(limit[:-1]) / 1000 if limit.endswith("m") else float(limit)
    workers = conf["relay"]["workers"]
    assert workers >= 1 and workers == max(1, int(cpus)), (workers, limit)


def test_engine_is_epoll_under_runtime_default_seccomp(ds, conf):
    """The pod's RuntimeDefault seccomp profile refuses io_uring
    (containerd 2.0 and later), so the ConfigMap names epoll rather than
    let every start find that out and log it."""
    sc = ds["spec"]["template"]["spec"]["securityContext"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert conf["relay"]["engine"] == "epoll"


def test_probes_hit_healthz_listen(container, conf):
    healthz = conf["node"]["healthz_listen"]
    port = port_of(healthz)
    host = healthz.rsplit(":", 1)[0]
    # The kubelet probes the pod IP, which is the node's: not loopback.
    assert host in ("0.0.0.0", "[::]"), healthz
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    assert (live["path"], live["port"]) == ("/livez", port)
    assert (ready["path"], ready["port"]) == ("/readyz", port)
    assert live.get("scheme", "HTTP") == ready.get("scheme", "HTTP") == "HTTP"
    assert {p["containerPort"] for p in container["ports"]} == {port}
    # The admin server (control endpoints) stays on loopback.
    admin = conf.get("admin", {})
    if admin.get("enabled"):
        assert admin["listen"].startswith("127."), admin["listen"]


def test_security_context(ds, container):
    pod = ds["spec"]["template"]["spec"]
    sc = dict(pod.get("securityContext", {}))
    sc.update(container["securityContext"])
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == CAPS
    df = parse_dockerfile()
    uid, gid = df.user()
    assert (sc["runAsUser"], sc.get("runAsGroup", gid)) == (uid, gid), \
        "the manifest's user is the image's"
    assert df.file_caps() == {"cap_" + c.lower() for c in CAPS}


def test_image_tag_is_the_binary_version(container, ferry_bin):
    v = run([ferry_bin, "--version"]).stdout.split()[-1]
    assert container["image"].rsplit(":", 1)[-1] == v


# ------------------------------------------------------------ live run


@pytest.fixture
def sim_for_role(tmp_path, objects):
    """kapisim with TLS and one token allowed exactly the ClusterRole."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing (kapisim's TLS certificates)")
    from kapisim_client import start_sim
    rules = []
    for r in one(objects, "ClusterRole")["rules"]:
        rules.append("%s:%s" % (",".join(r["verbs"]),
                                ",".join(r["resources"])))
    token = "ferry-sa-token"
    # The first token (no rules: everything) is the test's own.
    sim = start_sim(tmp_path / "sim", tls=True, tokens={
        "test-admin-token": "admin",
        token: "system:serviceaccount:kube-system:ferry " + " ".join(rules)})
    try:
        yield sim, token
    finally:
        sim.stop()


def run_as_daemonset(tmp_path, ferry_bin, container, ds, conf, sim, token):
    """Start ferry with the DaemonSet's args and env (the ConfigMap's
    config with loopback ports and no address changes on this host)."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    shutil.copy(sim.ca_file, sa / "ca.crt")
    (sa / "namespace").write_text("kube-system")
    c = json.loads(json.dumps(conf))
    c["kubernetes"]["serviceaccount_dir"] = str(sa)
    c["node"]["vip_interface"] = "none"
    c["node"]["dataplane"] = "proxy"
    c["node"]["proxy_steering"] = "listen"  # not the host's nftables
    healthz = "127.0.0.1:%d" % free_port()
    admin = "127.0.0.1:%d" % free_port()
    c["node"]["healthz_listen"] = healthz
    c["admin"] = dict(c.get("admin", {}), enabled=True, listen=admin)
    cfile = tmp_path / "ferry.yaml"
    cfile.write_text(yaml.safe_dump(c))
    env = dict(os.environ, NODE_NAME="node-1", FERRY_API_SERVER=sim.url)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    args = []
    for a in container["args"]:
        a = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
        args.append(str(cfile) if a.endswith("/" + cfile.name) and
                    a.startswith("/") else a)
    log = open(tmp_path / "ferry.log", "wb")
    proc = subprocess.Popen([ferry_bin] + args, env=env, stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    return proc, healthz, admin


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def test_daemonset_command_line_syncs_with_role_limited_token(
        tmp_path, ferry_bin, container, ds, conf, sim_for_role):
    sim, token = sim_for_role
    sim.create("services", {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": "198.18.128.10",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    proc, healthz, admin = run_as_daemonset(tmp_path, ferry_bin, container,
                                            ds, conf, sim, token)
    log = tmp_path / "ferry.log"
    try:
        def ready():
            assert proc.poll() is None, log.read_text()
            try:
                return http_get(f"http://{admin}/readyz")[0] == 200
            except OSError:
                return False
        wait_for(ready, timeout=20, what="admin /readyz 200")
        text = log.read_text()
        assert "node-1" in text, "NODE_NAME reached ferry"
        # (a whole word: a port number such as 40333 is not a status)
        assert not re.search(r"\b403\b", text) \
            and "forbidden" not in text.lower(), text
    finally:
        rc = stop(proc)
    assert rc == 0, log.read_text()


def test_probe_paths_are_served_on_healthz_listen(
        tmp_path, ferry_bin, container, ds, conf, sim_for_role):
    """The kubelet's probes, as the DaemonSet states them, answer 200 on
    node.healthz_listen (proxy/nodehealth) once the first sync is in."""
    sim, token = sim_for_role
    proc, healthz, admin = run_as_daemonset(tmp_path, ferry_bin, container,
                                            ds, conf, sim, token)
    log = tmp_path / "ferry.log"
    live = container["livenessProbe"]["httpGet"]["path"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    try:
        def answers(path):
            assert proc.poll() is None, log.read_text()
            try:
                return http_get(f"http://{healthz}{path}")[0] == 200
            except OSError:
                return False
        wait_for(lambda: answers(live), timeout=20, what=live)
        wait_for(lambda: answers(ready), timeout=20, what=ready)
    finally:
        rc = stop(proc)
    assert rc == 0, log.read_text()


# ------------------------------------------------------------ kubectl


DISCOVERY = {  # group/version -> [(plural, kind, namespaced)]
    "v1": [("configmaps", "ConfigMap", True),
           ("serviceaccounts", "ServiceAccount", True),
           ("services", "Service", True), ("nodes", "Node", False),
           ("namespaces", "Namespace", False)],
    "apps/v1": [("daemonsets", "DaemonSet", True),
                ("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "discovery.k8s.io/v1": [("endpointslices", "EndpointSlice", True)],
}


class Discovery(http.server.BaseHTTPRequestHandler):
    """Just enough of an API server's discovery documents for kubectl to
    map kinds to resources; kapisim serves only the kinds ferry reads.
    Every other request is refused, so a dry run that tried to write
    would fail."""

    def log_message(self, *a):
        pass

    def send_json(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        groups = {gv.split("/")[0]: gv for gv in DISCOVERY if "/" in gv}
        if path == "/version":
            return self.send_json({"major": "1", "minor": "28",
                                   "gitVersion": "v1.28.0"})
        if path == "/api":
            return self.send_json({"kind": "APIVersions", "versions": ["v1"],
                                   "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return self.send_json({
                "kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{"name": g, "versions": [
                    {"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv,
                                         "version": gv.split("/")[1]}}
                    for g, gv in groups.items()]})
        gv = path[len("/api/"):] if path.startswith("/api/") else \
            path[len("/apis/"):] if path.startswith("/apis/") else None
        if gv in DISCOVERY:
            return self.send_json({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": gv,
                "resources": [{"name": p, "singularName": "", "kind": k,
                               "namespaced": ns,
                               "verbs": ["create", "get", "list"]}
                              for p, k, ns in DISCOVERY[gv]]})
        self.send_json({"kind": "Status", "status": "Failure",
                        "code": 404}, 404)

    def do_POST(self):
        self.send_json({"kind": "Status", "status": "Failure",
                        "reason": "MethodNotAllowed", "code": 405}, 405)

    do_PUT = do_PATCH = do_DELETE = do_POST


def test_kubectl_dry_run_accepts_the_directory(tmp_path, objects):
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH (set KUBECTL to one)")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        kc = tmp_path / "kubeconfig"
        kc.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            "clusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:%d'}\n"
            "contexts:\n- name: c\n  context: {cluster: c, user: u}\n"
            "users:\n- name: u\n  user: {}\n" % srv.server_address[1])
        env = dict(os.environ, HOME=str(tmp_path), KUBECONFIG=str(kc))
        p = run([kubectl, "--cache-dir", str(tmp_path / "cache"),
                 "create", "--dry-run=client", "--validate=false",
                 "-f", str(K8S)], env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        created = [l for l in p.stdout.splitlines()
                   if l.endswith("created (dry run)")]
        assert len(created) == len(objects), p.stdout
    finally:
        srv.shutdown()
        srv.server_close()


# ------------------------------------------------------------ Dockerfile


class Dockerfile:
    def __init__(self, text):
        self.stages = []  # [{"from": ..., "name": ..., "ins": [(op, arg)]}]
        logical, cur = [], ""
        for line in text.splitlines():
            s = line.strip()
            if not cur and (not s or s.startswith("#")):
                continue
            if cur and s.startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            logical.append(cur + s)
            cur = ""
        assert not cur, "Dockerfile ends inside a continued line"
        for l in logical:
            op, _, arg = l.partition(" ")
            op = op.upper()
            if op == "FROM":
                parts = arg.split()
                name = parts[2] if len(parts) == 3 and \
                    parts[1].upper() == "AS" else None
                self.stages.append({"from": parts[0], "name": name,
                                    "ins": []})
            else:
                assert self.stages or op == "ARG", f"{op} before FROM"
                if self.stages:
                    self.stages[-1]["ins"].append((op, arg.strip()))

    @property
    def runtime(self):
        return self.stages[-1]

    def ins(self, stage, op):
        return [a for o, a in stage["ins"] if o == op]

    @staticmethod
    def apt(run_arg, verb):
        """Packages on the `apt-get <verb>` commands of one RUN."""
        pkgs = []
        for cmd in re.split(r"&&|;|\|\|", run_arg):
            w = shlex.split(cmd)
            w = [x for x in w if "=" not in x or x.startswith("-")]
            if "apt-get" in w and verb in w:
                rest = w[w.index(verb) + 1:]
                pkgs += [x for x in rest if not x.startswith("-")]
        return pkgs

    def installed(self, stage):
        out = []
        for r in self.ins(stage, "RUN"):
            kept = set(self.apt(r, "install")) - set(self.apt(r, "purge")) \
                - set(self.apt(r, "remove"))
            out += sorted(kept)
        return out

    def user(self):
        users = self.ins(self.runtime, "USER")
        assert users, "the runtime stage sets USER"
        m = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
        assert m, "USER must be numeric so runAsNonRoot can check it"
        return int(m.group(1)), int(m.group(2) or m.group(1))

    def file_caps(self):
        caps = set()
        for r in self.ins(self.runtime, "RUN"):
            for m in re.finditer(r"setcap\s+(\S+)=ep\s+(\S+)", r):
                assert m.group(2) == self.entrypoint()[0]
                caps |= set(m.group(1).split(","))
        return caps

    def entrypoint(self):
        eps = self.ins(self.runtime, "ENTRYPOINT")
        assert len(eps) == 1, "one ENTRYPOINT"
        ep = json.loads(eps[0])  # exec form: a JSON array, no shell
        assert isinstance(ep, list)
        return ep


def parse_dockerfile():
    return Dockerfile(DOCKERFILE.read_text())


def owner_candidates(path):
    """<path> and the names dpkg may list it under (resolved, with and
    without /usr: a merged /usr)."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        if p.startswith("/usr/"):
            cands.append(p[4:])
        else:
            cands.append("/usr" + p)
    return cands


def dpkg_owners(paths):
    """path -> the Debian package that owns it, for every path in <paths>,
    from one dpkg-query (each call reads dpkg's whole file list)."""
    cands = {p: owner_candidates(p) for p in paths}
    r = run(["dpkg-query", "-S",
             *sorted({c for cs in cands.values() for c in cs})])
    found = {}
    for line in r.stdout.splitlines():
        pkgs, sep, owned = line.rpartition(": ")
        if sep and not line.startswith("diversion "):
            found.setdefault(owned.strip(),
                             pkgs.split(":", 1)[0].split(",")[0].strip())
    out = {}
    for p, cs in cands.items():
        owner = next((found[c] for c in cs if c in found), None)
        if owner is None:
            raise AssertionError(f"no Debian package owns {p}")
        out[p] = owner
    return out


def ldd(path):
    out = {}
    for line in run(["ldd", path]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m and m.group(2).startswith("/"):
            out[m.group(1)] = m.group(2)
        m = re.match(r"\s*(/\S+ld-linux\S*) ", line)
        if m:
            out[os.path.basename(m.group(1))] = m.group(1)
    return out


def needed(path):
    p = run(["readelf", "-d", path])
    assert p.returncode == 0, p.stderr
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", p.stdout)


def runtime_libraries(ferry_bin):
    """name -> path of every library the binary needs at run time: its
    NEEDED entries and theirs (ldd). A sanitizer runtime and what only it
    pulls in are left out: the image carries a release build."""
    all_libs = ldd(ferry_bin)
    out = {}
    for n in needed(ferry_bin):
        if re.match(r"lib(a|ub|t|l)san", n):
            continue
        path = all_libs[n]
        out[n] = path
        out.update(ldd(path))
    return out


def dpkg_depends_closure(roots):
    """Installed packages that <roots> bring in through Depends and
    Pre-Depends (what apt installs along with them)."""
    p = run(["dpkg-query", "-W", "-f",
             "${Package}\t${Provides}\t${Pre-Depends}, ${Depends}\n"])
    deps, provides = {}, {}
    for line in p.stdout.splitlines():
        name, prov, dep = (line.split("\t") + ["", ""])[:3]
        deps[name] = dep
        for v in prov.split(","):
            v = v.split("(")[0].strip()
            if v:
                provides.setdefault(v, set()).add(name)
    seen, todo = set(), list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for clause in deps.get(pkg, "").split(","):
            for alt in clause.split("|"):
                n = alt.split("(")[0].strip().split(":")[0]
                if not n:
                    continue
                for cand in [n] + sorted(provides.get(n, ())):
                    if cand in deps:
                        todo.append(cand)
    return seen


def test_dockerfile_stages():
    df = parse_dockerfile()
    assert len(df.stages) >= 2, "multi-stage"
    build, rt = df.stages[0], df.runtime
    assert build["name"], "the build stage is named for COPY --from"
    for s in df.stages:
        # Package names below are Debian 12's.
        assert re.search(r"debian:(bookworm|12)", s["from"]), s["from"]
    # The build stage installs what deploy/install-deps calls "build".
    src = (DEPLOY / "install-deps").read_text()
    m = re.search(r"build_pkgs=\(([^)]*)\)", src)
    want = set(m.group(1).split())
    have = set(df.installed(build))
    assert want <= have, f"build stage lacks {want - have}"
    # Nothing of the build stage's toolchain reaches the runtime stage.
    rt_pkgs = set(df.installed(rt))
    assert not any(p.endswith("-dev") for p in rt_pkgs), rt_pkgs
    assert not rt_pkgs & {"gcc", "meson", "ninja-build", "libcap2-bin"}
    copies = df.ins(rt, "COPY")
    assert copies and all(c.startswith("--from=" + build["name"])
                          for c in copies), copies
    assert df.entrypoint() == ["/usr/local/bin/ferry"]
    assert any(c.split()[-1] == "/usr/local/bin/ferry" for c in copies)
    cmd = df.ins(rt, "CMD")
    if cmd:
        json.loads(cmd[-1])  # exec form too
    assert (DEPLOY / "Dockerfile.dockerignore").exists()


def test_dockerfile_user_is_not_root():
    df = parse_dockerfile()
    uid, gid = df.user()
    assert uid != 0 and gid != 0
    runs = " ".join(df.ins(df.runtime, "RUN"))
    assert re.search(r"useradd\b.*--uid %d\b" % uid, runs)
    assert re.search(r"groupadd\b.*--gid %d\b" % gid, runs)


def test_dockerfile_runtime_installs_every_linked_library(ferry_bin):
    df = parse_dockerfile()
    pkgs = set(df.installed(df.runtime))
    libs = runtime_libraries(ferry_bin)
    base = {"libc6"}  # in every Debian image
    owner = dpkg_owners(libs.values())
    owners = {name: owner[path] for name, path in libs.items()}
    direct = {owners[n] for n in needed(ferry_bin) if n in owners}
    missing = direct - pkgs - base
    assert not missing, \
        f"libraries ferry links directly need {sorted(missing)} in the " \
        f"runtime stage's apt-get install"
    closure = dpkg_depends_closure(pkgs | base)
    uncovered = {f"{n} ({o})" for n, o in owners.items() if o not in closure}
    assert not uncovered, f"not brought in by the runtime stage: {uncovered}"
    # And nothing installed there that ferry does not need.
    extra = pkgs - set(owners.values())
    assert not extra, f"runtime stage installs more than ferry links: {extra}"


# ------------------------------------------------------------ capabilities


RUNTIME_LIKE = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
caps = [int(c) for c in sys.argv[1].split(",") if c]
for c in range(64):
    if c not in caps and libc.prctl(24, c, 0, 0, 0) != 0:   # CAPBSET_DROP
        break
libc.prctl(8, 1, 0, 0, 0)                                  # KEEPCAPS
os.setgroups([]); os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
mask = sum(1 << c for c in caps)
hdr = struct.pack("II", 0x20080522, 0)                     # v3
data = struct.pack("6I", mask, mask, 0, 0, 0, 0)           # eff, prm, inh
if libc.capset(hdr, data) != 0:
    sys.exit("capset: errno %d" % ctypes.get_errno())
libc.prctl(38, 1, 0, 0, 0)                                 # NO_NEW_PRIVS
os.execv(sys.argv[2], sys.argv[2:])
"""
CAP_NUM = {"NET_BIND_SERVICE": 10, "NET_ADMIN": 12}


def set_file_caps(path, names):
    """What `setcap cap_...=ep` writes: vfs_cap_data revision 2 with the
    effective flag."""
    mask = sum(1 << CAP_NUM[n] for n in names)
    os.setxattr(path, "security.capability",
                struct.pack("<5I", 0x02000001, mask, 0, 0, 0))


def test_file_caps_work_for_non_root_under_no_new_privs(ferry_bin, ds,
                                                        container):
    """As a container runtime starts the DaemonSet's container (uid
    10001-like non-root user, the added capabilities in the bounding and
    permitted sets, none ambient, no_new_privs from
    allowPrivilegeEscalation: false), the image's file capabilities let
    ferry bind a port below 1024; the plain binary cannot."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change users and capability sets")
    if is_sanitized(ferry_bin):
        pytest.skip("sanitizer builds run with extra runtime setup")
    work = Path(tempfile.mkdtemp(prefix="ferry-caps-"))
    os.chmod(work, 0o755)
    if os.statvfs(work).f_flag & os.ST_NOSUID:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip("the temporary directory is on a nosuid mount, where "
                    "file capabilities do not apply")
    procs = []
    try:
        capped = work / "ferry-capped"
        plain = work / "ferry-plain"
        for p in (capped, plain):
            shutil.copy(ferry_bin, p)
            os.chmod(p, 0o755)
        try:
            set_file_caps(capped, container["securityContext"]
                          ["capabilities"]["add"])
        except OSError as e:
            pytest.skip(f"cannot set file capabilities here: {e}")
        port = next((cand for cand in range(700, 1000)
                     if ferrytest.claim_port(cand)), None)
        assert port, "no free port below 1024"
        cfg = work / "low.yaml"
        cfg.write_text(
            "drain_timeout: 1s\nservices:\n  - name: low\n"
            "    listen: 127.0.0.1:%d\n    backends:\n"
            "      - address: 127.0.0.1:9\n" % port)
        os.chmod(cfg, 0o644)
        caps = ",".join(str(CAP_NUM[c]) for c in
                        container["securityContext"]["capabilities"]["add"])

        def start(binary, caps):
            log = open(work / (binary.name + ".log"), "wb")
            p = subprocess.Popen(
                ["/usr/bin/python3", "-c", RUNTIME_LIKE, caps, str(binary),
                 "-c", str(cfg)], stdout=log, stderr=log, cwd=str(work))
            log.close()
            procs.append(p)
            return p

        p = start(plain, caps)
        assert p.wait(10) != 0
        assert "Permission denied" in (work / "ferry-plain.log").read_text()

        p = start(capped, caps)

        def listening():
            assert p.poll() is None, (work / "ferry-capped.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False
        wait_for(listening, timeout=10, what=f"ferry on port {port}")
        st = open(f"/proc/{p.pid}/status").read()
        assert re.search(r"^Uid:\s+65534\s", st, re.M)
        assert re.search(r"^NoNewPrivs:\s+1", st, re.M)
        assert stop(p) == 0

        # Without the capabilities in the pod's set, exec itself fails
        # (the binary's effective bit asks for more than it may have).
        p = start(capped, "")
        assert p.wait(10) != 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------ systemd


def unit_keys():
    keys = {}
    section = None
    for line in UNIT.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", s)
        if m:
            section = m.group(1)
            continue
        k, _, v = s.partition("=")
        assert section, f"{k} outside a section"
        keys.setdefault((section, k.strip()), []).append(v.strip())
    return keys


def test_unit_keys(help_text):
    k = unit_keys()

    def val(key, section="Service"):
        assert (section, key) in k, f"[{section}] {key}= missing"
        return k[(section, key)][-1]

    assert val("User") not in ("root", "0")
    amb = set(val("AmbientCapabilities").split())
    bound = set(val("CapabilityBoundingSet").split())
    assert "CAP_NET_BIND_SERVICE" in amb and amb <= bound
    assert bound <= {"CAP_" + c for c in CAPS}
    reload_ = k[("Service", "ExecReload")]
    assert re.fullmatch(r"\S*/kill -HUP \$MAINPID", reload_[-1]), reload_
    assert val("NoNewPrivileges") == "yes"
    assert val("ProtectSystem") == "strict"
    assert val("PrivateTmp") == "yes"
    assert val("ProtectHome") == "yes"
    assert val("Restart") == "on-failure"
    assert val("WantedBy", "Install") == "multi-user.target"
    # SIGTERM drains for drain_timeout (30s unless configured).
    stop_s = float(re.fullmatch(r"(\d+)s?", val("TimeoutStopSec")).group(1))
    assert stop_s > 30
    flags = help_flags(help_text)
    for key in ("ExecStart", "ExecStartPre", "ExecReload"):
        for cmd in k.get(("Service", key), []):
            w = cmd.split()
            if w[0].endswith("/ferry"):
                for a in w[1:]:
                    if a.startswith("-"):
                        assert a in flags, f"{key}: {a} not in ferry --help"
    assert re.fullmatch(r"\S+/ferry --config \S+ --takeover-socket "
                        r"/run/ferry/\S+", val("ExecStart"))
    # sd_notify, also from the process that took over (test_takeover.py).
    assert val("Type") == "notify" and val("NotifyAccess") == "all"
    assert val("RuntimeDirectory") == "ferry"


def local_unit(tmp_path, ferry_bin):
    """The unit with this tree's binary in place of the installed path."""
    text = UNIT.read_text().replace("/usr/local/bin/ferry",
                                    str(Path(ferry_bin).resolve()))
    u = tmp_path / "ferry.service"
    u.write_text(text)
    return u


def test_systemd_analyze_verify(tmp_path, ferry_bin):
    sa = shutil.which("systemd-analyze")
    if sa is None:
        pytest.skip("systemd-analyze is missing (package systemd); the "
                    "unit's keys are checked by test_unit_keys")
    p = run([sa, "verify", str(local_unit(tmp_path, ferry_bin))])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ferry.service" not in p.stderr, p.stderr


def syscall_groups(sa):
    groups, cur = {}, None
    for line in run([sa, "syscall-filter"]).stdout.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            cur = s
            groups[cur] = set()
        elif cur:
            groups[cur].add(s)
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        if n.startswith("@"):
            out |= expand(groups.get(n, ()), groups)
        else:
            out.add(n)
    return out


def test_systemd_syscall_filter_allows_what_ferry_calls(tmp_path, ferry_bin):
    """A call outside SystemCallFilter= kills the service (SIGSYS), so
    trace ferry through start, a proxied connection, the admin server, a
    reload and a drain, and check every call against the filter."""
    sa, strace = shutil.which("systemd-analyze"), shutil.which("strace")
    if sa is None or strace is None:
        pytest.skip("needs systemd-analyze and strace")
    if is_sanitized(ferry_bin):
        pytest.skip("a sanitizer runtime makes calls a release build "
                    "does not")
    k = unit_keys()
    groups = syscall_groups(sa)
    allowed, denied = expand({"@default"}, groups), set()
    for f in k[("Service", "SystemCallFilter")]:
        if f.startswith("~"):
            denied |= expand(f[1:].split(), groups)
        else:
            allowed |= expand(f.split(), groups)
    allowed -= denied

    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(8)
    bport = backend.getsockname()[1]

    def echo(c):
        with c:
            data = c.recv(100)
            if data:
                c.sendall(data)

    accepted = []

    def serve():  # health checks connect too: echo on every connection
        while True:
            try:
                c, _ = backend.accept()
            except OSError:
                return
            accepted.append(c)
            threading.Thread(target=echo, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()

    port, aport = free_port(), free_port()
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        "drain_timeout: 2s\nadmin: {enabled: true, listen: 127.0.0.1:%d}\n"
        "defaults: {health_check: {type: tcp, interval: 100ms}}\n"
        "services:\n  - name: web\n    listen: 127.0.0.1:%d\n"
        "    backends:\n      - address: 127.0.0.1:%d\n"
        % (aport, port, bport))
    trace = tmp_path / "trace"
    log = open(tmp_path / "ferry.log", "wb")
    p = subprocess.Popen([strace, "-f", "-qq", "-o", str(trace), ferry_bin,
                          "--config", str(cfg)], stdout=log, stderr=log)
    log.close()
    ferry_pid = None
    try:
        def up():
            nonlocal ferry_pid
            assert p.poll() is None, (tmp_path / "ferry.log").read_text()
            if ferry_pid is None:  # signals go to ferry, not to strace
                kids = Path(f"/proc/{p.pid}/task/{p.pid}/children")
                for pid in kids.read_text().split():
                    try:
                        exe = os.readlink(f"/proc/{pid}/exe")
                    except OSError:
                        continue
                    if os.path.samefile(exe, ferry_bin):
                        ferry_pid = int(pid)
                if ferry_pid is None:
                    return False
            try:
                return http_get(f"http://127.0.0.1:{aport}/readyz")[0] == 200
            except OSError:
                return False
        wait_for(up, timeout=20, what="ferry under strace")
        c = socket.create_connection(("127.0.0.1", port), 5)
        c.sendall(b"ping")
        assert c.recv(10) == b"ping"
        c.close()
        http_get(f"http://127.0.0.1:{aport}/metrics")
        http_get(f"http://127.0.0.1:{aport}/status")
        # Health checks (every 100 ms) after the client's connection.
        n = len(accepted)
        wait_for(lambda: len(accepted) >= n + 2, timeout=20,
                 what="two health checks traced")
        os.kill(ferry_pid, signal.SIGHUP)
        wait_for(lambda: "reload: applied" in
                 (tmp_path / "ferry.log").read_text(errors="replace"),
                 timeout=20, what="the reload traced")
        os.kill(ferry_pid, signal.SIGTERM)
        rc = p.wait(30)  # strace exits with its tracee's status
    finally:
        if ferry_pid is not None and p.poll() is None:
            os.kill(ferry_pid, signal.SIGKILL)
        stop(p)
        backend.close()
    assert rc == 0, (tmp_path / "ferry.log").read_text()
    calls = set()
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
        if m and m.group(1) not in ("exited", "killed"):
            calls.add(m.group(1))
    assert "accept4" in calls or "accept" in calls, sorted(calls)
    calls.discard("execve")  # strace's own exec of ferry: allowed anyway
    blocked = sorted(c for c in calls if c not in allowed)
    assert not blocked, f"SystemCallFilter= would kill ferry on {blocked}"


# ------------------------------------------------------------ README


def readme_section(title):
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## %s\n(.*?)(?=^## )" % re.escape(title), text,
                  re.M | re.S)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def test_readme_deploy_sections_match_the_files(ferry_bin, tmp_path, cm,
                                                container, help_text):
    ds_text = readme_section("Run as a DaemonSet")
    vm_text = readme_section("Run in front of a VM fleet")
    ha_text = readme_section("Run two edge balancers for high availability")
    # Every file the sections name exists.
    for text in (ds_text, vm_text, ha_text):
        for path in re.findall(r"deploy/[\w./-]+\w", text):
            assert (REPO / path).exists(), path
    # The sed lines replace what the manifests hold.
    ref = [e for e in container["env"] if e["name"] == "FERRY_API_SERVER"]
    placeholder = cm["data"][ref[0]["valueFrom"]["configMapKeyRef"]["key"]]
    assert f's#{placeholder}#$API#' in ds_text
    assert f's#image: {container["image"]}#image: $IMAGE#' in ds_text
    # Going back removes the very node selector step 4 adds.
    sel = re.search(r'"nodeSelector":\{"([^"]+)":', ds_text).group(1)
    assert f"/spec/template/spec/nodeSelector/{sel}" in ds_text
    for path in ("/livez", "/readyz", "10256"):
        assert path in ds_text
    assert "cleanup" in help_text and "ferry cleanup" in ds_text
    # The fleet example is a valid config, and its admin /readyz is what
    # keepalived checks.
    block = re.search(r"```yaml\n(.*?)```", vm_text, re.S).group(1)
    f = tmp_path / "fleet.yaml"
    f.write_text(block)
    p = run([ferry_bin, "check-config", str(f)])
    assert p.returncode == 0, p.stdout + p.stderr
    admin = yaml.safe_load(block)["admin"]["listen"]
    assert f"http://{admin}/readyz" in ha_text
    listen = yaml.safe_load(block)["services"][0]["listen"]
    assert listen.rsplit(":", 1)[0] + "/" in ha_text, \
        "keepalived moves the address the fleet example listens on"
    assert "ip_nonlocal_bind = 1" in ha_text
