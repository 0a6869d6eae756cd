#!/usr/bin/python3
"""bench/cp_sim.py - the simulated API server (tests/kapisim) loaded with a
large synthetic cluster, for `bench/run control-plane`.

    cp_sim.py --services N --endpoints M [--probe-services K] \
              --port-file FILE [--node-name n1] [kapisim flags ...]

It runs kapisim's own store and HTTP server (the same code the tests use)
with two differences, both for speed at 10,000 x 25:

- The objects are created in-process through the store's create() -- the
  same validation, defaulting and ClusterIP allocation a POST gets -- and
  not over HTTP; their creation history is then compacted away, as if the
  server had been restarted with them (a watch from an older revision gets
  410, as in a real cluster after compaction).
- Every connection has TCP_NODELAY, as with the real API server (Go's
  default); kapisim itself leaves Nagle on.
- Replies over 128 KiB are gzipped at level 1, as kube-apiserver does
  (kapisim uses level 9).
- No state file is written: kapisim rewrites its whole state file 50 ms
  after every change, which at 250,000 endpoints is tens of MB of JSON per
  change and would eat a CPU during the churn.

The cluster: namespace `default`; Services `svc-00000` ... of type
ClusterIP with one TCP port `http` 17080 -> 8080 (not 80: other tests on
a shared machine bind ClusterIPs of the same range on port 80), ClusterIPs allocated by the
simulator from 198.18.128.0/17 in order; one EndpointSlice per Service
(`svc-00000-x`) with M ready endpoints. Endpoint addresses are unique
(address, port) pairs: 198.19.0.0/16 holds 65,536 addresses, so Services
are spread over slice ports 8080, 8081, ... (2,621 Services of 25 per
port) and every endpoint is a distinct backend, as pods are.

The first K Services (`--probe-services`) are the ones the churn changes.
They are LoadBalancer Services with externalTrafficPolicy Local,
allocateLoadBalancerNodePorts false (no NodePorts), one externalIP
(198.18.1.0/24 and up; ferry serves a healthCheckNodePort only for a
Service with an external frontend) and their endpoints on this node
(nodeName), so that ferry answers on each one's
healthCheckNodePort with the count of local ready endpoints: a per-Service
probe of what ferry has in force, read from outside.

With --conn-probe PORT, one more Service, `conn-probe` (NodePort), whose
one endpoint is 127.0.0.1:PORT: a server of the bench's, through which
it times new connections while the churn runs.

Prints one JSON line on stdout when listening: populate time, counts,
the probe Services with their healthCheckNodePort, and conn-probe's
NodePort.
"""

import argparse
import gzip
import json
import os
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(os.path.dirname(HERE), "tests", "kapisim")
sys.path.insert(0, SIM)

import kapisim  # noqa: E402
import sim_faults  # noqa: E402
import sim_http  # noqa: E402
import sim_objects as so  # noqa: E402
import sim_store  # noqa: E402

NS = "default"
PER_PORT = 65536  # addresses in 198.19.0.0/16
# The Services' port: not 80, which other tests on the same machine bind on
# ClusterIPs of the same 198.18.128.0/17 (a collision fails a bind on
# either side).
SVC_PORT = 17080


def svc_name(i):
    return "svc-%05d" % i


# Endpoints per EndpointSlice, as the EndpointSlice controller's default
# (--max-endpoints-per-slice 100): a Service with more has several.
SLICE_MAX = 100


def slice_name(i, k=0):
    return "svc-%05d-x" % i if k == 0 else "svc-%05d-x%d" % (i, k)


def nslices(m):
    return 1 if m <= SLICE_MAX else (m + SLICE_MAX - 1) // SLICE_MAX


def slice_of(j, m):
    """The slice of Service endpoint j (of m)."""
    return 0 if m <= SLICE_MAX else j // SLICE_MAX


def service_obj(i, probe):
    spec = {"type": "ClusterIP",
            "ports": [{"name": "http", "protocol": "TCP", "port": SVC_PORT,
                       "targetPort": 8080}],
            "selector": {"app": svc_name(i)}}
    if probe:
        # One externalIP (never sent to: ferry binds it with IP_FREEBIND):
        # ferry serves a healthCheckNodePort only for a Service with an
        # external frontend.
        spec.update({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "allocateLoadBalancerNodePorts": False,
                     "externalIPs": ["198.18.%d.%d" % (1 + i // 256,
                                                       i % 256)]})
    return {"metadata": {"name": svc_name(i), "labels": {"app": svc_name(i)}},
            "spec": spec}


# Services with several slices take one address per endpoint (a node's
# health check port counts pods by IP) from these blocks of 198.18.0.0/15,
# which leave out the node's and the probes' addresses (198.18.0-1.x) and
# the first ClusterIPs (198.18.128.0/18).
BIG_BLOCKS = ((0xC6130000, 65536),   # 198.19.0.0/16
              (0xC612C000, 16384),   # 198.18.192.0/18
              (0xC6124000, 16384),   # 198.18.64.0/18
              (0xC6122000, 8192),    # 198.18.32.0/19
              (0xC6121000, 4096))    # 198.18.16.0/20
BIG_MAX = sum(n for _, n in BIG_BLOCKS)


def big_ip(n):
    for base, size in BIG_BLOCKS:
        if n < size:
            a = base + n
            return "%d.%d.%d.%d" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255,
                                    a & 255)
        n -= size
    raise ValueError("more endpoints than BIG_MAX")


def endpoint_addr(i, j, m):
    """(address, port) of endpoint j of Service i; unique pairs, and one
    port for all the endpoints of a slice."""
    if m > SLICE_MAX:
        return big_ip(i * m + j), 8080
    per = PER_PORT // m
    n = (i % per) * m + j
    return "198.19.%d.%d" % (n >> 8, n & 255), 8080 + i // per


def slice_obj(i, m, node, ready=None, k=0):
    """EndpointSlice k of Service i; ready: set of endpoint indexes that
    are ready (None: all)."""
    eps = []
    port = 8080
    lo = k * SLICE_MAX if m > SLICE_MAX else 0
    for j in range(lo, min(m, lo + SLICE_MAX) if m > SLICE_MAX else m):
        addr, port = endpoint_addr(i, j, m)
        ok = ready is None or j in ready
        eps.append({"addresses": [addr],
                    "conditions": {"ready": ok, "serving": ok,
                                   "terminating": False},
                    "nodeName": node,
                    "targetRef": {"kind": "Pod", "namespace": NS,
                                  "name": "%s-%d" % (svc_name(i), j)}})
    return {"metadata": {"name": slice_name(i, k), "namespace": NS, "labels": {
        "kubernetes.io/service-name": svc_name(i),
        "endpointslice.kubernetes.io/managed-by": "bench"}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}]}


def conn_probe_objs(port, node, proxied=False):
    """Service `conn-probe` (NodePort) and its EndpointSlice: one ready
    endpoint, 127.0.0.1:<port>, a server the bench runs, so that a client
    can time new connections through ferry's proxy while the churn runs."""
    meta = {"name": "conn-probe"}
    if proxied:  # under the nftables dataplane: served by ferry's proxy
        meta["annotations"] = {"ferry.dev/dataplane": "proxy"}
    svc = {"metadata": meta,
           "spec": {"type": "NodePort", "selector": {"app": "conn-probe"},
                    "ports": [{"name": "tcp", "protocol": "TCP",
                               "port": SVC_PORT, "targetPort": port}]}}
    sl = {"metadata": {"name": "conn-probe-x", "namespace": NS, "labels": {
        "kubernetes.io/service-name": "conn-probe",
        "endpointslice.kubernetes.io/managed-by": "bench"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"],
                       "conditions": {"ready": True, "serving": True,
                                      "terminating": False},
                       "nodeName": node}],
        "ports": [{"name": "tcp", "protocol": "TCP", "port": port}]}
    return svc, sl


def populate(store, n, m, probes, node, conn_probe=0, proxied=False):
    with store.lock:
        for i in range(n):
            store.create(so.SERVICES, NS, service_obj(i, i < probes))
            for k in range(nslices(m)):
                store.create(so.ENDPOINTSLICES, NS, slice_obj(i, m, node,
                                                              None, k))
        if conn_probe:
            svc, sl = conn_probe_objs(conn_probe, node, proxied)
            store.create(so.SERVICES, NS, svc)
            store.create(so.ENDPOINTSLICES, NS, sl)
        store.compact()
        hc = {}
        for i in range(probes):
            svc = store.objects["services"][(NS, svc_name(i))]
            hc[svc_name(i)] = svc["spec"].get("healthCheckNodePort")
        ips = [store.objects["services"][(NS, svc_name(i))]["spec"]
               ["clusterIP"] for i in (0, n - 1)]
        if conn_probe:
            spec = store.objects["services"][(NS, "conn-probe")]["spec"]
            hc["conn-probe"] = (spec["ports"][0]["nodePort"],
                                spec["clusterIP"])
    return hc, ips


class _Gzip:
    """gzip for sim_http at level 1, the level kube-apiserver uses for
    responses over 128 KiB (kapisim calls gzip.compress at its default,
    9, several times slower: most of a 250,000-endpoint LIST)."""
    compress = staticmethod(lambda data: gzip.compress(data, compresslevel=1))


sim_http.gzip = _Gzip


class Server(sim_http.SimServer):
    """kapisim's server with TCP_NODELAY on every connection, as Go's
    net/http (the real API server) has by default. Without it a watch
    event written right after another waits for the client's delayed ACK
    (Nagle), up to 40 ms on Linux, and so does the body of a reply,
    written after its headers."""

    def get_request(self):
        sock, addr = super().get_request()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return sock, addr


def main(argv):
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--services", type=int, required=True)
    ap.add_argument("--endpoints", type=int, required=True)
    ap.add_argument("--probe-services", type=int, default=0)
    ap.add_argument("--node-name", default="n1")
    ap.add_argument("--conn-probe", type=int, default=0,
                    help="port of a local server: add Service conn-probe")
    ap.add_argument("--conn-probe-proxied", action="store_true",
                    help="annotate it ferry.dev/dataplane: proxy")
    mine, rest = ap.parse_known_args(argv)
    opts = kapisim.parse_args(rest)
    store = sim_store.Store(
        service_cidrs=[c.strip() for c in opts.service_cidr.split(",")],
        node_port_range=opts.node_ports, history_size=opts.history_size,
        endpoints_null_when_empty=opts.endpoints_null_when_empty,
        state_file=None)
    server = Server((opts.host, opts.port), opts, store,
                                sim_faults.Faults(), None, None)
    port = server.server_address[1]
    opts.advertise_host = opts.advertise_address or opts.host
    store.seed(opts.advertise_host, port)
    t0 = time.monotonic()
    hc, ips = populate(store, mine.services, mine.endpoints,
                       mine.probe_services, mine.node_name, mine.conn_probe,
                       mine.conn_probe_proxied)
    conn_np, conn_ip = hc.pop("conn-probe", (None, None))
    took = time.monotonic() - t0
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: done.set())
    signal.signal(signal.SIGINT, lambda s, f: done.set())
    threading.Thread(target=server.serve_forever, kwargs={
        "poll_interval": 0.2}, daemon=True).start()
    print(json.dumps({"event": "listening", "port": port,
                      "populate_s": round(took, 3),
                      "revision": store.rev,
                      "services": len(store.objects["services"]),
                      "endpointslices": len(store.objects["endpointslices"]),
                      "first_cluster_ip": ips[0], "last_cluster_ip": ips[1],
                      "probes": hc, "conn_probe_node_port": conn_np,
                      "conn_probe_cluster_ip": conn_ip}),
          flush=True)
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, opts.port_file)
    while not done.wait(1.0):
        pass
    store.close()
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
