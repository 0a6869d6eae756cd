"""The container image, built from deploy/Dockerfile and run the way the
kubelet would run deploy/kubernetes/daemonset.yaml's pod.

The image is built with podman (daemonless; tests/lib/imagetest.py makes
the Dockerfile's base image locally, since no registry is reachable).
tests/run starts that build in the background at its start and names its
result file in $FERRY_IMAGE_RESULT; this file waits for it. Run alone, the
file builds the image itself.

The pod spec is read from the manifests, not written again here: the
command line and its $(VAR) references, the environment (NODE_NAME from
the downward API, FERRY_API_SERVER from the ConfigMap), the volumes and
their mounts, the service account's token, the security context (user,
group, capabilities, read-only root, no privilege escalation), the
resources' limits, the probes and the grace period. "hostNetwork" is a
network namespace of the test's own, which stands for the node: the
backends, the simulated API server and the container share it, with
addresses in 198.18.0.0/15.

Run: /usr/bin/python3 -m pytest tests/integration/test_image.py
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest as ft  # noqa: E402
import imagetest  # noqa: E402
import kubetest  # noqa: E402
from ferrytest import wait_for  # noqa: E402
from netns import InNs  # noqa: E402

REPO = ft.REPO_ROOT
K8S = REPO / "deploy" / "kubernetes"
SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
NODE_NAME = "node-img"
NODE_IP = "198.18.0.1"
BACKEND_IPS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
CLUSTER_IP = "198.18.128.10"
CAP_BITS = {"NET_BIND_SERVICE": 10, "NET_ADMIN": 12}
# What the runtime stage must not leave behind: a compiler, setcap, apt's
# caches; prints those it finds.
LEFTOVERS_SH = ("ls -d /usr/bin/gcc /usr/bin/cc /usr/sbin/setcap /sbin/setcap"
                " /var/cache/apt/*.bin /var/lib/apt/lists/*_Packages"
                " 2>/dev/null; true")
# Run in the container: PID 1's status, a write to the root, and the
# memory and CPU limits of its cgroup ("mem:BYTES", "cpu:QUOTA PERIOD").
CHECK_SH = r"""cat /proc/1/status; touch /x 2>&1
cg=/sys/fs/cgroup
if [ -f $cg/memory.max ]; then
    echo "mem:$(cat $cg/memory.max)"; echo "cpu:$(cat $cg/cpu.max)"
else
    echo "mem:$(cat $cg/memory/memory.limit_in_bytes)"
    echo "cpu:$(cat $cg/cpu/cpu.cfs_quota_us) $(cat $cg/cpu/cpu.cfs_period_us)"
fi
true"""


def _why_skip():
    if os.environ.get("FERRY_SANITIZED") == "1":
        return ("the image carries its own release build, not $FERRY_BIN: "
                "it is checked once, in the release phase")
    why = kubetest.netns_missing()
    if why or os.environ.get("FERRY_IMAGE_RESULT"):
        # tests/run installs the tools in the background: its result file
        # says whether they came (the image fixture skips then).
        return why
    return imagetest.missing()


SKIP = _why_skip()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


# ------------------------------------------------------------ the image


@pytest.fixture(scope="module")
def image():
    """The image's name, once it is built (by tests/run's background
    build, or here)."""
    result = os.environ.get("FERRY_IMAGE_RESULT")
    if result:
        path = Path(result)
        wait_for(path.exists, timeout=ft.scaled(1200),
                 what="the background image build (%s)" % path)
        out = json.loads(path.read_text())
    else:
        out = dict(imagetest.build(lambda s: None), ok=True)
    if out.get("skip"):
        pytest.skip(out["skip"])
    assert out.get("ok"), "image build failed: %s" % out.get("error")
    print("image build: %s" % out)
    return imagetest.image_name()


@pytest.fixture(scope="module")
def manifests():
    docs = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[d["kind"]] = d
    return docs


@pytest.fixture(scope="module")
def ds(manifests):
    return manifests["DaemonSet"]


@pytest.fixture(scope="module")
def cm(manifests):
    return manifests["ConfigMap"]


def podman(*args, **kw):
    return imagetest.podman(*args, **kw)


# ------------------------------------------------------------ the pod


class Pod:
    """podman run arguments for the DaemonSet's one container, derived from
    the manifest. <data> is the ConfigMap's data (as the cluster would hold
    it), <sa_dir> the service account's directory (token, ca.crt)."""

    def __init__(self, ds, cm, data, workdir, netns, sa_dir=None):
        self.ds, self.cm, self.data = ds, cm, data
        self.spec = ds["spec"]["template"]["spec"]
        cs = self.spec["containers"]
        assert len(cs) == 1, "the test knows one container"
        self.c = cs[0]
        self.workdir = Path(workdir)
        self.netns = netns
        self.sa_dir = sa_dir
        self.grace = self.spec.get("terminationGracePeriodSeconds", 30)

    def env(self):
        out = {}
        for e in self.c.get("env", []):
            if "value" in e:
                out[e["name"]] = e["value"]
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                assert path == "spec.nodeName", "unknown fieldRef " + path
                out[e["name"]] = NODE_NAME
            elif "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                assert ref["name"] == self.cm["metadata"]["name"]
                out[e["name"]] = self.data[ref["key"]]
            else:
                raise AssertionError("env %s: the test does not know %s"
                                     % (e["name"], list(src)))
        return out

    def args(self):
        """The container's args with $(VAR) expanded as the kubelet does."""
        env = self.env()
        return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a)
                for a in self.c.get("args", [])]

    def security(self):
        pod_sc = self.spec.get("securityContext", {})
        sc = dict(pod_sc, **self.c.get("securityContext", {}))
        out = []
        if "runAsUser" in sc:
            out += ["--user", "%s:%s" % (sc["runAsUser"],
                                         sc.get("runAsGroup", 0))]
        if sc.get("readOnlyRootFilesystem"):
            # The kubelet adds no tmpfs; podman would by default.
            out += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("allowPrivilegeEscalation") is False:
            out += ["--security-opt", "no-new-privileges"]
        caps = sc.get("capabilities", {})
        for c in caps.get("drop", []):
            out += ["--cap-drop", c]
        for c in caps.get("add", []):
            out += ["--cap-add", c]
        prof = sc.get("seccompProfile", {}).get("type", "RuntimeDefault")
        assert prof == "RuntimeDefault", "the test runs podman's default"
        return out

    def limits(self):
        """The resources' limits: (memory in MiB, CPUs), None where unset.
        (The requests only weigh in the scheduler's choice of node.)"""
        lim = self.c.get("resources", {}).get("limits", {})
        mib = cpus = None
        if "memory" in lim:
            m = re.fullmatch(r"(\d+)(Mi|Gi)", str(lim["memory"]))
            mib = int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)
        if "cpu" in lim:
            cpu = str(lim["cpu"])
            cpus = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
        return mib, cpus

    def resources(self):
        mib, cpus = self.limits()
        out = []
        if mib is not None:
            out += ["--memory", "%dm" % mib]
        if cpus is not None:
            out += ["--cpus", str(cpus)]
        return out

    def volumes(self):
        out = []
        vols = {v["name"]: v for v in self.spec.get("volumes", [])}
        for m in self.c.get("volumeMounts", []):
            v = vols[m["name"]]
            assert "configMap" in v, "the test knows configMap volumes"
            assert v["configMap"]["name"] == self.cm["metadata"]["name"]
            d = self.workdir / ("vol-" + m["name"])
            d.mkdir(exist_ok=True)
            items = v["configMap"].get("items") or [
                {"key": k, "path": k} for k in self.data]
            for it in items:
                (d / it["path"]).write_text(self.data[it["key"]])
            out += ["-v", "%s:%s:%s" % (d, m["mountPath"],
                                        "ro" if m.get("readOnly") else "rw")]
        if self.sa_dir and self.spec.get("serviceAccountName"):
            out += ["-v", "%s:%s:ro" % (self.sa_dir, SA_PATH)]
        return out

    def run_args(self, name, image, args=None, entrypoint=None):
        """podman run -d ... for the pod's container; <args> replace the
        manifest's (for one-off commands in the same container)."""
        assert self.spec.get("hostNetwork"), \
            "the node's namespace stands for hostNetwork"
        out = ["run", "-d", "--name", name,
               "--network", "ns:/run/netns/" + self.netns,
               "--stop-timeout", str(self.grace)]
        out += self.security() + self.resources() + self.volumes()
        for k, v in self.env().items():
            out += ["--env", "%s=%s" % (k, v)]
        if entrypoint or self.c.get("command"):
            cmd = entrypoint or self.c["command"]
            out += ["--entrypoint", json.dumps(cmd)]
        out.append(image)
        out += self.args() if args is None else args
        return out

    def oneshot(self, image, args, entrypoint=None):
        """Run a command in the pod's container to its end: (rc, output)."""
        name = "ferry-img-%d-%d" % (os.getpid(), time.monotonic_ns())
        p = podman(*self.run_args(name, image, args, entrypoint),
                   check=False)
        try:
            assert p.returncode == 0, p.stdout + p.stderr
            rc = int(podman("wait", name, timeout=ft.scaled(60)).stdout)
            logs = podman("logs", name).stdout + podman("logs", name).stderr
            return rc, logs
        finally:
            podman("rm", "-f", name, check=False)


def probe(ns, p):
    """One kubelet HTTP probe: success is a status from 200 to 399 within
    timeoutSeconds."""
    g = p["httpGet"]

    def get():
        url = "http://%s:%d%s" % (NODE_IP, int(g["port"]), g["path"])
        try:
            with urllib.request.urlopen(url,
                                        timeout=p.get("timeoutSeconds", 1)) \
                    as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return None
    st = ns(get)
    return st is not None and 200 <= st < 400


@pytest.fixture(scope="module")
def node():
    """The node: a network namespace with the node's address on an
    interface of its own (eth0, one end of a veth pair, with the default
    route: a ClusterIP must be routable before table inet ferry rewrites
    it), the backends' addresses on lo, and threads that live in it."""
    n = kubetest.Netns()
    try:
        kubetest._ip("-n", n.name, "link", "add", "eth0", "type", "veth",
                     "peer", "name", "eth0peer")
        for dev in ("eth0", "eth0peer"):
            kubetest._ip("-n", n.name, "link", "set", dev, "up")
        n.add_addr(NODE_IP + "/24", dev="eth0")
        kubetest._ip("-n", n.name, "route", "add", "default", "dev", "eth0")
        for ip in BACKEND_IPS:
            n.add_addr(ip + "/32")
        n.ns = InNs(n.name, threads=4)
        yield n
        n.ns.close()
    finally:
        n.delete()


@pytest.fixture(scope="module")
def backends(node):
    """web-1..3 on the backends' addresses, port 9001."""
    def make(name, ip):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, 9001))
        return ft.Backend(name=name, sock=s)
    bs = [node.ns(make, "web-%d" % (i + 1), ip)
          for i, ip in enumerate(BACKEND_IPS)]
    yield bs
    for b in bs:
        b.stop()


def greet(addr):
    """Connect, read the backend's name line."""
    host, port = addr
    with socket.create_connection((host, port), timeout=5) as s:
        s.settimeout(5)
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < 100:
            b = s.recv(100)
            if not b:
                break
            buf += b
        return buf.decode().strip()


def stop_within_grace(name, grace):
    """podman stop: SIGTERM, then SIGKILL after the grace period. Returns
    (seconds, exit code)."""
    t = time.monotonic()
    podman("stop", "-t", str(grace), name, timeout=grace + 60)
    took = time.monotonic() - t
    rc = int(podman("inspect", "--format", "{{.State.ExitCode}}",
                    name).stdout)
    return took, rc


# ------------------------------------------------------------ tests


def test_image_is_small_and_links_everything(image, ds, cm, tmp_path, node):
    """ldd in the runtime image finds every library ferry links; the image
    is the base plus ferry and its libraries."""
    pod = Pod(ds, cm, cm["data"], tmp_path, node.name)
    rc, out = pod.oneshot(image, ["/usr/local/bin/ferry"],
                          entrypoint=["/usr/bin/ldd"])
    assert rc == 0, out
    assert "=>" in out and "not found" not in out, out
    size = int(podman("image", "inspect", "--format", "{{.Size}}",
                      image).stdout)
    base = int(podman("image", "inspect", "--format", "{{.Size}}",
                      imagetest.base_name()).stdout)
    print("image %s: %.1f MB (base %.1f MB)" % (image, size / 1e6,
                                                 base / 1e6))
    # README: "the runtime stage adds about 15 MB to the base" (the
    # binary and its libraries only).
    assert 10e6 < size - base < 20e6, "runtime stage adds %.1f MB" % (
        (size - base) / 1e6)
    rc, out = pod.oneshot(image, ["-c", LEFTOVERS_SH],
                          entrypoint=["/bin/sh"])
    assert rc == 0 and out == "", out


def test_version_is_the_tag(image, ds, cm, tmp_path, node):
    """ferry --version, as the pod's user with the pod's capabilities only
    (the file capabilities need both added, or exec fails)."""
    pod = Pod(ds, cm, cm["data"], tmp_path, node.name)
    rc, out = pod.oneshot(image, ["--version"])
    assert rc == 0, out
    assert out.split()[-1] == image.rsplit(":", 1)[1], out
    # The image's user is the one the pod runs as (runAsNonRoot holds
    # without runAsUser too), and it exposes the probes' port.
    cfg = json.loads(podman("image", "inspect", "--format",
                            "{{json .Config}}", image).stdout)
    sc = pod.spec["securityContext"]
    assert cfg["User"] == "%s:%s" % (sc["runAsUser"], sc["runAsGroup"])
    ports = {int(p["containerPort"]) for p in pod.c["ports"]}
    assert {int(p.split("/")[0]) for p in cfg["ExposedPorts"]} == ports
    assert ports == {int(pod.c[p]["httpGet"]["port"])
                     for p in ("livenessProbe", "readinessProbe")}


def test_configmap_passes_check_config(image, ds, cm, tmp_path, node):
    """The ConfigMap's file, mounted where the DaemonSet mounts it, passes
    check-config in the image."""
    pod = Pod(ds, cm, cm["data"], tmp_path, node.name)
    args = pod.args()
    conf = args[args.index("--config") + 1]
    rc, out = pod.oneshot(image, ["check-config", conf])
    assert rc == 0, out


def test_demo_fleet_balanced_through_the_container(image, ds, cm, tmp_path,
                                                   node, backends):
    """The demo config (conf/examples/demo.yaml, the fleet moved into the
    node's namespace) in place of the ConfigMap's file, with the image's
    own command: round robin over web-1..3, then SIGTERM ends it within
    the grace period."""
    demo = (REPO / "conf" / "examples" / "demo.yaml").read_text()
    demo = demo.replace("127.0.0.1:8080", NODE_IP + ":8080")
    for i, ip in enumerate(BACKEND_IPS):
        demo = demo.replace("127.0.0.1:%d" % (9001 + i), ip + ":9001")
    assert not re.search(r"^[^#]*127\.0\.0\.1", demo, re.M), demo
    data = dict(cm["data"], **{"ferry.yaml": demo})
    pod = Pod(ds, cm, data, tmp_path, node.name)
    name = "ferry-img-demo-%d" % os.getpid()
    # No args: the image's CMD (--config /etc/ferry/ferry.yaml) runs.
    p = podman(*pod.run_args(name, image, args=[]), check=False)
    try:
        assert p.returncode == 0, p.stdout + p.stderr

        def up():
            try:
                return node.ns(greet, (NODE_IP, 8080)).startswith("web-")
            except OSError:
                return False
        wait_for(up, timeout=ft.scaled(20), what="the demo service")
        got = [node.ns(greet, (NODE_IP, 8080)) for _ in range(9)]
        assert sorted(got) == sorted(["web-1", "web-2", "web-3"] * 3), got
        took, rc = stop_within_grace(name, pod.grace)
        assert rc == 0 and took < pod.grace, (took, rc)
    finally:
        logs = podman("logs", name, check=False)
        podman("rm", "-f", name, check=False)
    print(logs.stdout + logs.stderr)


@pytest.fixture(scope="module")
def sim(node, manifests, tmp_path_factory):
    """The simulated API server on the node's loopback, over TLS, with the
    service account's token allowed exactly the ClusterRole."""
    from kapisim_client import Sim
    if shutil.which("openssl") is None:
        pytest.skip("openssl is missing (kapisim's TLS certificates)")
    tmp = tmp_path_factory.mktemp("sim")
    rules = " ".join("%s:%s" % (",".join(r["verbs"]),
                                ",".join(r["resources"]))
                     for r in manifests["ClusterRole"]["rules"])
    s = Sim(str(tmp), True, {
        "admin-token": "admin",
        "sa-token": "system:serviceaccount:kube-system:ferry " + rules},
        {"listen": "127.0.0.1:0"})
    base_argv = s._argv
    s._argv = lambda listen: ["ip", "netns", "exec", node.name] + \
        base_argv(listen)
    s.start()
    yield s
    s.stop()


def test_node_mode_probes_nftables_and_restart(image, ds, cm, tmp_path, node,
                                               backends, sim):
    """The DaemonSet's pod as the kubelet runs it, against the simulated API
    server: ferry runs as the pod's user with the pod's capabilities and
    limits, the probes answer as the manifest asks, table inet ferry is
    programmed from inside the container and carries a ClusterIP to the
    backends, SIGTERM ends it within the grace period, and the table stays
    in place while the container is down and after it starts again."""
    node.ns(sim.create, "services", {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": CLUSTER_IP,
                 "ports": [{"name": "http", "port": 80,
                            "targetPort": 9001, "protocol": "TCP"}]}})
    node.ns(sim.create, "endpointslices", {
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9001, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "nodeName": NODE_NAME,
                       "conditions": {"ready": True}}
                      for ip in BACKEND_IPS]})
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_bytes(Path(sim.ca_file).read_bytes())
    (sa / "namespace").write_text("kube-system")
    for f in sa.iterdir():
        f.chmod(0o644)
    sa.chmod(0o755)
    # The README's step 3: the ConfigMap's api-server is the real one.
    data = dict(cm["data"], **{"api-server": sim.url})
    pod = Pod(ds, cm, data, tmp_path, node.name, sa_dir=sa)
    c = pod.c
    live, ready = c["livenessProbe"], c["readinessProbe"]
    name = "ferry-img-node-%d" % os.getpid()

    def table():
        p = subprocess.run(["ip", "netns", "exec", node.name, "nft", "list",
                            "table", "inet", "ferry"],
                           capture_output=True, text=True, timeout=30)
        return p.stdout if p.returncode == 0 else None

    def logs():
        p = podman("logs", name, check=False)
        return p.stdout + p.stderr

    def start(run):
        t = time.monotonic()
        if run:
            p = podman(*pod.run_args(name, image), check=False)
        else:
            p = podman("start", name, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        # Liveness from its first probe: initialDelaySeconds is the
        # latest it may start answering.
        wait_for(lambda: probe(node.ns, live),
                 timeout=live.get("initialDelaySeconds", 0)
                 + live.get("periodSeconds", 10),
                 what="liveness %s" % live["httpGet"]["path"])
        wait_for(lambda: probe(node.ns, ready), timeout=ft.scaled(30),
                 what="readiness %s" % ready["httpGet"]["path"])
        return time.monotonic() - t

    try:
        assert table() is None, "a table before ferry ran"
        took = start(True)
        print("ready %.1f s after podman run" % took)
        # kube-proxy's own health path on the same port, for tools that
        # ask it (the ConfigMap's comment names all three).
        hz = dict(ready, httpGet=dict(ready["httpGet"], path="/healthz"))
        assert probe(node.ns, hz)
        t = table()
        assert t and CLUSTER_IP in t, t
        # The kernel picks an endpoint at random for each connection: ask
        # until all three answered (missing one in 100 tries has a chance
        # of 1e-17; in 12, of 2 %).
        got = set()
        for _ in range(100):
            got.add(node.ns(greet, (CLUSTER_IP, 80)))
            if len(got) == 3:
                break
        assert got == {"web-1", "web-2", "web-3"}, got
        # ferry, PID 1, as the pod's user with exactly the two added
        # capabilities in effect, no_new_privs, and a root it cannot write.
        st = podman("exec", name, "/bin/sh", "-c", CHECK_SH).stdout
        f = dict(ln.split(":", 1) for ln in st.splitlines() if ":" in ln)
        sc = dict(pod.spec["securityContext"], **c["securityContext"])
        assert f["Uid"].split()[1] == str(sc["runAsUser"]), st
        assert f["Gid"].split()[1] == str(sc["runAsGroup"]), st
        want = sum(1 << CAP_BITS[x] for x in sc["capabilities"]["add"])
        assert int(f["CapEff"], 16) == want, st
        assert f["NoNewPrivs"].strip() == "1", st
        assert "Read-only file system" in st, st
        # The limits, as the kernel holds them (cgroup v2 or v1 files).
        mib, cpus = pod.limits()
        assert int(f["mem"]) == mib << 20, st
        quota, period = f["cpu"].split()
        assert int(quota) / int(period) == cpus, st
        text = logs()
        assert NODE_NAME in text, "NODE_NAME reached ferry"
        assert not re.search(r"\b403\b", text), text

        took, rc = stop_within_grace(name, pod.grace)
        assert rc == 0 and took < pod.grace, (took, rc, logs())
        t = table()
        assert t and CLUSTER_IP in t, "table gone with the container"
        # The kernel keeps serving while the container is down.
        assert node.ns(greet, (CLUSTER_IP, 80)).startswith("web-")

        start(False)
        t = table()
        assert t and CLUSTER_IP in t, t
        assert node.ns(greet, (CLUSTER_IP, 80)).startswith("web-")
        took, rc = stop_within_grace(name, pod.grace)
        assert rc == 0 and took < pod.grace, (took, rc, logs())
    except BaseException:
        print(logs())
        raise
    finally:
        podman("rm", "-f", name, check=False)
        subprocess.run(["ip", "netns", "exec", node.name, "nft", "delete",
                        "table", "inet", "ferry"], capture_output=True,
                       timeout=30)


def readme_section(title):
    text = (REPO / "README.md").read_text()
    m = re.search(r"^## %s\n(.*?)(?=^## )" % re.escape(title), text,
                  re.S | re.M)
    return m.group(1)


def test_readme_build_and_load_commands_are_the_tests(image, ds, tmp_path):
    """README, "Run as a DaemonSet", step 1: the build command is the one
    the image was built with here (but for --pull=never: the base is
    local), and the load step's `podman save` writes a docker-archive
    (what `ctr images import` reads) whose tag is the name the kubelet
    looks for."""
    text = readme_section("Run as a DaemonSet")
    assert "IMAGE=" + image + "\n" in text
    cmd = [a for a in imagetest.build_cmd() if a != "--pull=never"]
    assert " ".join('"$IMAGE"' if a == image else a for a in cmd) in text
    save = 'podman save --format docker-archive "$IMAGE" | '
    assert save + "ssh root@NODE ctr -n k8s.io images import -" in text
    out = tmp_path / "ferry.tar"
    with open(out, "wb") as f:
        args = save.split("|")[0].replace('"$IMAGE"', image).split()[1:]
        podman(*args, stdout=f, capture_output=False, text=False)
    import tarfile
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
    tags = [t for m in manifest for t in m.get("RepoTags") or []]
    assert tags == [image], tags
    c = ds["spec"]["template"]["spec"]["containers"][0]
    assert "localhost/" + c["image"] == image
    assert c["imagePullPolicy"] == "IfNotPresent"
