"""A two-node "cluster" built from network namespaces, for end-to-end tests.

Everything is numbered from 198.18.0.0/15 (RFC 2544's benchmarking range):

    lan   198.18.0.0/24   a bridge in namespace <p>-lan joining:
            198.18.0.1     the API server's address (in <p>-lan itself)
            198.18.0.11    node1's eth0
            198.18.0.12    node2's eth0
            198.18.0.100   the outside client (<p>-out)
            198.18.0.50    the edge balancer host (<p>-edge)
    pods  198.18.1.0/24 on node1, 198.18.2.0/24 on node2: a bridge cbr0 in
          each node (.1) with one namespace per pod on it.

Nodes forward and route to each other's pod range; pods and the outside
client reach service addresses through a node. Service IPs are up to the
test (198.18.128.0/17 for ClusterIPs, 198.18.200.0/24 for LoadBalancer IPs
routed to node1 from outside and the edge host).

Needs root, iproute2, and the veth and bridge link types; `missing()` says
what is absent so tests can skip with the reason.
"""
import os
import shutil
import subprocess
import uuid

LB_RANGE = "198.18.200.0/24"


def missing():
    """A reason string when the mini-cluster cannot be built here, else
    None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    name = "mcprobe%d" % os.getpid()
    for kind in ("veth", "bridge"):
        args = ["ip", "link", "add", name, "type", kind]
        if kind == "veth":
            args += ["peer", "name", name + "p"]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            return f"kernel lacks the {kind} link type: {r.stderr.strip()}"
        subprocess.run(["ip", "link", "del", name], capture_output=True)
    return None


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


class Cluster:
    def __init__(self):
        self.p = "mc%s" % uuid.uuid4().hex[:6]
        self.namespaces = []
        self.pods = {}  # name -> (netns, ip, node)
        self.lan = self.p + "-lan"
        self.nodes = {"node1": ("198.18.0.11", "198.18.1"),
                      "node2": ("198.18.0.12", "198.18.2")}
        self.api_ip = "198.18.0.1"
        self.out_ip = "198.18.0.100"
        self.edge_ip = "198.18.0.50"
        self._veth = 0
        try:
            self._build()
        except Exception:
            self.destroy()
            raise

    # -- helpers ---------------------------------------------------------
    def ns(self, name):
        return f"{self.p}-{name}"

    def ip(self, netns, *args):
        return sh("ip", "-n", netns, *args)

    def exec_args(self, name):
        """Command prefix that runs a program inside namespace <name>
        (a node, a pod, 'lan', 'out' or 'edge')."""
        return ["ip", "netns", "exec", self.ns(name)]

    def _add_ns(self, name):
        full = self.ns(name)
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        self.ip(full, "link", "set", "lo", "up")
        return full

    def _veth_pair(self, ns_a, ns_b, name_b):
        """A veth with one end in ns_a (returned name) and the other in ns_b
        named name_b."""
        self._veth += 1
        a = f"{self.p}v{self._veth}"
        b = f"{self.p}w{self._veth}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", ns_a)
        sh("ip", "link", "set", b, "netns", ns_b)
        self.ip(ns_b, "link", "set", b, "name", name_b)
        return a

    def _on_bridge(self, bridge_ns, bridge, other_ns, ifname, cidr,
                   gateway=None):
        a = self._veth_pair(bridge_ns, other_ns, ifname)
        self.ip(bridge_ns, "link", "set", a, "master", bridge)
        self.ip(bridge_ns, "link", "set", a, "up")
        self.ip(other_ns, "addr", "add", cidr, "dev", ifname)
        self.ip(other_ns, "link", "set", ifname, "up")
        if gateway:
            self.ip(other_ns, "route", "add", "default", "via", gateway)
        return a

    def _build(self):
        lan = self._add_ns("lan")
        # Bridges get fixed MAC addresses: by default a bridge takes the
        # lowest MAC of its ports, so adding a pod would change the
        # gateway's MAC under the other pods' ARP caches and blackhole
        # their traffic until the caches expire.
        self.ip(lan, "link", "add", "br0", "address", "02:00:c6:12:00:01",
                "type", "bridge")
        self.ip(lan, "addr", "add", self.api_ip + "/24", "dev", "br0")
        self.ip(lan, "link", "set", "br0", "up")
        for node, (addr, pods) in self.nodes.items():
            n = self._add_ns(node)
            sh("ip", "netns", "exec", n, "sysctl", "-qw",
               "net.ipv4.ip_forward=1")
            self._on_bridge(lan, "br0", n, "eth0", addr + "/24")
            self.ip(n, "link", "add", "cbr0", "address",
                    "02:00:c6:12:%02x:01" % int(pods.split(".")[2]),
                    "type", "bridge")
            self.ip(n, "addr", "add", pods + ".1/24", "dev", "cbr0")
            self.ip(n, "link", "set", "cbr0", "up")
        # Nodes have a default route, as real ones do (the lan namespace
        # stands for the rest of the network): a packet for an address no
        # route names is forwarded, not refused by the routing table.
        for node in self.nodes:
            self.ip(self.ns(node), "route", "add", "default", "via",
                    self.api_ip)
        self.ip(self.ns("node1"), "route", "add", "198.18.2.0/24", "via",
                "198.18.0.12")
        self.ip(self.ns("node2"), "route", "add", "198.18.1.0/24", "via",
                "198.18.0.11")
        # The API server's host routes back to the pods through the nodes.
        self.ip(lan, "route", "add", "198.18.1.0/24", "via", "198.18.0.11")
        self.ip(lan, "route", "add", "198.18.2.0/24", "via", "198.18.0.12")
        for name, addr in (("out", self.out_ip), ("edge", self.edge_ip)):
            n = self._add_ns(name)
            self._on_bridge(lan, "br0", n, "eth0", addr + "/24")
        # LoadBalancer IPs are announced by node1 to the outside world.
        self.ip(self.ns("out"), "route", "add", LB_RANGE, "via", "198.18.0.11")
        # The edge host reaches pods through the nodes.
        self.ip(self.ns("edge"), "route", "add", "198.18.1.0/24", "via",
                "198.18.0.11")
        self.ip(self.ns("edge"), "route", "add", "198.18.2.0/24", "via",
                "198.18.0.12")

    def add_pod(self, name, node, index):
        """Create pod <name> on <node> with address <pods>.<index>;
        returns its IP."""
        pods = self.nodes[node][1]
        ip = f"{pods}.{index}"
        pns = self._add_ns("pod-" + name)
        port = self._on_bridge(self.ns(node), "cbr0", pns, "eth0",
                               ip + "/24", gateway=pods + ".1")
        # Hairpin, as the bridge CNI plugin sets it for kube-proxy: a pod
        # sent to itself through its Service gets its packets back out of
        # the port they came in by when the bridge's traffic is filtered.
        self.ip(self.ns(node), "link", "set", port, "type", "bridge_slave",
                "hairpin", "on")
        self.pods[name] = (pns, ip, node)
        return ip

    def del_pod(self, name):
        pns, _, _ = self.pods.pop(name)
        sh("ip", "netns", "del", pns, check=False)
        self.namespaces.remove(pns)

    def addrs(self, name):
        """`ip -o addr` of a namespace, one line per address, for before /
        after comparisons."""
        return sorted(self.ip(self.ns(name), "-o", "addr").splitlines())

    def links(self, name):
        return sorted(line.split(":")[1].strip() for line in
                      self.ip(self.ns(name), "-o", "link").splitlines())

    def destroy(self):
        for n in reversed(self.namespaces):
            sh("ip", "netns", "del", n, check=False)
        self.namespaces = []
