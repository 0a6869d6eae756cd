#!/usr/bin/python3
"""kapisim: a simulated Kubernetes API server for ferry's tests.

Serves Services, EndpointSlices and Namespaces over the real list/watch
protocol, with static bearer tokens, optional TLS,
discovery documents for kubectl, fault injection under /_sim/ and an optional
state file so a "restarted" server keeps its objects and revision.

    kapisim.py --listen 127.0.0.1:0 --port-file FILE [--tls-cert C --tls-key K]
               [--tokens FILE] [--bookmark-interval S] [--watch-max-seconds N]
               [--state-file F] [--endpoints-null-when-empty true|false]
               [--log FILE]

Python 3 standard library only.  SIGTERM/SIGINT end open watches cleanly,
save the state file and exit 0.
"""

import argparse
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sim_auth  # noqa: E402
import sim_faults  # noqa: E402
import sim_http  # noqa: E402
import sim_store  # noqa: E402


def tristate(v):
    v = v.lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, got %r" % v)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0",
                   help="HOST:PORT to listen on (port 0 = any free port)")
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--tls-cert", help="PEM server certificate (enables TLS)")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    p.add_argument("--tokens", help="bearer token file (see sim_auth.py); "
                   "without it no authentication is done")
    p.add_argument("--anonymous-auth", type=tristate, default=False,
                   help="requests without a token act as system:anonymous "
                   "(403) instead of getting 401")
    p.add_argument("--bookmark-interval", type=float, default=60.0,
                   help="seconds between watch BOOKMARKs (default 60)")
    p.add_argument("--watch-max-seconds", type=float, default=3600.0,
                   help="a watch without timeoutSeconds ends at a random "
                   "time in [N/2, N] seconds (default 3600)")
    p.add_argument("--continue-ttl", type=float, default=300.0,
                   help="seconds a continue token stays valid (default 300)")
    p.add_argument("--too-large-wait", type=float, default=3.0,
                   help="seconds a too-large resourceVersion waits before "
                   "504 (default 3)")
    p.add_argument("--history-size", type=int, default=10000,
                   help="events kept for watches and old snapshots")
    p.add_argument("--watch-list", type=tristate, default=True,
                   help="WatchList gate: accept sendInitialEvents (default "
                   "true)")
    p.add_argument("--service-cidr", default="198.18.128.0/17",
                   help="comma list of Service CIDRs (one per family)")
    p.add_argument("--node-port-range", default="30000-32767")
    p.add_argument("--advertise-address",
                   help="address in the default/kubernetes EndpointSlice "
                   "(default: the listen host)")
    p.add_argument("--state-file", help="load objects and revision from "
                   "this JSON file and keep it up to date")
    p.add_argument("--endpoints-null-when-empty", type=tristate,
                   default=True, help="store empty EndpointSlice endpoints "
                   "as null like the real server (default true)")
    p.add_argument("--log", help="append one JSON line per request here")
    opts = p.parse_args(argv)
    if bool(opts.tls_cert) != bool(opts.tls_key):
        p.error("--tls-cert and --tls-key go together")
    host, _, port = opts.listen.rpartition(":")
    opts.host = host.strip("[]") or "127.0.0.1"
    opts.port = int(port)
    lo, _, hi = opts.node_port_range.partition("-")
    opts.node_ports = (int(lo), int(hi))
    return opts


def flusher(store, stop):
    """Write the state file shortly after each change."""
    while not stop.wait(0.05):
        if store.dirty:
            try:
                store.save()
            except OSError as e:
                sys.stderr.write("kapisim: cannot save state: %s\n" % e)


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    store = sim_store.Store(
        service_cidrs=[c.strip() for c in opts.service_cidr.split(",")],
        node_port_range=opts.node_ports, history_size=opts.history_size,
        endpoints_null_when_empty=opts.endpoints_null_when_empty,
        state_file=opts.state_file)
    store.load()
    auth = sim_auth.TokenAuth(opts.tokens, opts.anonymous_auth) \
        if opts.tokens else None
    logf = open(opts.log, "a") if opts.log else None
    server = sim_http.SimServer((opts.host, opts.port), opts, store,
                                sim_faults.Faults(), auth, logf)
    port = server.server_address[1]
    opts.advertise_host = opts.advertise_address or opts.host
    store.seed(opts.advertise_host, port)
    store.save()

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop_flush = threading.Event()
    threading.Thread(target=flusher, args=(store, stop_flush),
                     daemon=True).start()
    threading.Thread(target=server.serve_forever, kwargs={
        "poll_interval": 0.2}, daemon=True).start()
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, opts.port_file)
    sys.stderr.write("kapisim: listening on %s:%d (%s)\n" % (
        opts.host, port, "https" if opts.tls_cert else "http"))
    sys.stderr.flush()
    while not done.wait(1.0):
        pass
    store.close()           # open watches end with a clean close
    server.shutdown()
    server.server_close()
    stop_flush.set()
    try:
        store.save()
    except OSError:
        pass
    if logf:
        logf.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
