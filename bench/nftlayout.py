#!/usr/bin/python3
"""What a kernel table whose chains do not grow with the Services
costs, measured by hand beside ferry's layout 3. This is how layout 4
(proxy/node/nftgen.h), now the engine's default for plain Services,
was chosen; the engine went on to a keyed map per count (a rule bound
to one shared map makes the kernel check every key of it), which
nftdrive times directly.

ferry's kernel dataplane's layout 3 gives each Service a chain and a
named endpoint map. Every change then pays two walks past all the
table's sets (the map is found by name) and the commit's walk past all
the chains of the namespace (bench/nftfloor.py). The layout measured
here has neither:

  map ep4-tcp  one hash map for every TCP Service's endpoints, keyed
               by the packet itself: "ip daddr . tcp dport . numgen
               random mod N" -> endpoint address . port
  pick4-N      a chain per endpoint count N in use, whose one rule is
               "dnat ip to ip daddr . tcp dport . numgen random mod N
               map @ep4-tcp": the map has a few bindings, not one a
               Service
  pick4        or one chain for all counts, with a rule per count N
               that first looks the Service up in set tcp4-N
  svc4         the dispatch verdict map: Service address . proto .
               port -> goto pick4-N (even Services) or pick4 (odd ones)

In a network namespace of its own it builds that for N Services of E
endpoints with one `nft -f`, then times, in the kernel (strace -T on
nft's batch, a sendmsg()), changes of one Service:

  same                       E endpoints replaced by E others (E
                             elements out, E in)
  resized, svc4 re-pointed   E -> E-1 and back, its svc4 element
                             re-pointed to the other pick4-N (a verdict
                             element: the kernel checks the table at
                             commit)
  resized, set membership    the same through pick4: the Service's key
                             moved from set tcp4-E to tcp4-(E-1)

and checks with real connections that the changed Service answers from
its new endpoints. With --nftdrive it also builds ferry's own table for
the same Services (tests/tools/nftdrive, the real engine) in another
namespace and times its updates, so that both come from one run.

--first-packet K prices the set lookups of pick4 for a connection's first
packet (later packets skip the nat hook): K more, empty, count sets and
their rules go ahead of the real ones, then refused connections to the
odd Services (through pick4) take turns with connections to the even
ones (straight to pick4-N).

--bindings K adds the trap that rules out a rule of its own per Service
into one shared map: K chains, each binding the map with an offset of
its own, then K x E elements added. The kernel checks each element
added against every binding of the map.

    bench/nftlayout.py --services 10000 --endpoints 25 --changes 20 \\
        --nftdrive build/tests/tools/nftdrive --bindings 2000 \\
        --first-packet 50

Run as root; needs nft and strace. Every address is in 198.18.0.0/15
and stays inside the namespaces, which are deleted at the end.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(64)
s.settimeout(60)
print("ready", flush=True)
end = time.monotonic() + 120
for _ in range(int(sys.argv[1])):
    if time.monotonic() > end:
        break
    try:
        c, _a = s.accept()
    except OSError:
        break
    c.sendall(c.getsockname()[0].encode())
    c.close()
"""


# Opens connections to the Services of one group, then the other, in
# rounds; each connect() sends a SYN through the nat output hook (a new
# flow: a new source port) and is refused by the endpoint's address,
# where nothing listens, all within the call. Prints each group's median
# time per connect over the rounds (wall time: the process CPU clock
# ticks at 4 ms here; the two groups take turns, so what else runs
# weighs on both).
SENDER = r"""
import socket, statistics, sys, time
groups = [sys.argv[1].split(","), sys.argv[2].split(",")]
n, rounds = int(sys.argv[3]), int(sys.argv[4])
per = [[], []]
for r in range(rounds):
    for g in (r % 2, 1 - r % 2):
        addrs = groups[g]
        t0 = time.perf_counter()
        for i in range(n):
            s = socket.socket()
            try:
                s.connect((addrs[i % len(addrs)], 80))
            except OSError:
                pass
            s.close()
        per[g].append((time.perf_counter() - t0) / n)
print("%.9f %.9f" % (statistics.median(per[0]), statistics.median(per[1])))
"""


def cip(k):
    return "198.19.%d.%d" % (k // 250, k % 250 + 1)


def ep(n, gen=0):
    """Endpoint n of generation gen: gen 0 in 198.18.0-199, the changed
    lists in 198.18.200+ (E at most 50 in those)."""
    if gen == 0:
        return "198.18.%d.%d" % (n // 250 % 200, n % 250 + 1)
    return "198.18.%d.%d" % (199 + gen, n % 250 + 1)


def skeleton(services, eps):
    """Even Services pick their chain through svc4 (goto pick4-N), odd
    ones go to pick4, which tries one rule per count N with a set of the
    Services that have N endpoints."""
    counts = sorted({eps, max(eps - 1, 1)})
    out = ["table inet lay {",
           # Per protocol: nft 1.0.6 reads "th dport" back from the
           # kernel and then refuses any rule naming the map ("conflicting
           # protocols specified: tcp vs. th").
           " map ep4-tcp { typeof ip daddr . tcp dport . numgen random mod "
           "1 : ip daddr . tcp dport; size %d; }" % max(65536,
                                                       2 * services * eps),
           " map svc4 { type ipv4_addr . inet_proto . inet_service : "
           "verdict; }"]
    for n in counts:
        out.append(" set tcp4-%d { typeof ip daddr . tcp dport; }" % n)
        out.append(" chain pick4-%d { meta l4proto tcp dnat ip to ip daddr "
                   ". tcp dport . numgen random mod %d map @ep4-tcp; }"
                   % (n, n))
    out.append(" chain pick4 {")
    for n in counts:
        out.append("  ip daddr . tcp dport @tcp4-%d dnat ip to ip daddr . "
                   "tcp dport . numgen random mod %d map @ep4-tcp" % (n, n))
    out += [" }",
            " chain services { ip daddr . meta l4proto . th dport vmap "
            "@svc4; }",
            " chain nat-output { type nat hook output priority -100; "
            "policy accept; jump services; }",
            " chain nat-prerouting { type nat hook prerouting priority "
            "dstnat; policy accept; jump services; }",
            "}"]
    out.append("add element inet lay svc4 { " + ", ".join(
        "%s . tcp . 80 : goto pick4%s" % (cip(k), "" if k % 2 else
                                          "-%d" % eps)
        for k in range(services)) + " }")
    out.append("add element inet lay tcp4-%d { %s }" % (eps, ", ".join(
        "%s . 80" % cip(k) for k in range(1, services, 2))))
    # In parts: one command of 250,000 elements is one netlink message
    # that nft refuses past its buffer.
    part = 20000
    els = ["%s . 80 . %d : %s . 8080" % (cip(k), j, ep(k * eps + j))
           for k in range(services) for j in range(eps)]
    for at in range(0, len(els), part):
        out.append("add element inet lay ep4-tcp { " +
                   ", ".join(els[at:at + part]) + " }")
    return "\n".join(out) + "\n"


def change(k, old_n, new_n, gen):
    """Service k's endpoints, old_n of them, replaced by new_n of
    generation gen: in one transaction, its way to pick4-<new_n>
    re-pointed (even k) or its key moved to set tcp4-<new_n> (odd k)
    when the count changes, and its elements deleted and added."""
    a = cip(k)
    text = ""
    if old_n != new_n and k % 2 == 0:
        text += ("delete element inet lay svc4 { %s . tcp . 80 }\n"
                 "add element inet lay svc4 { %s . tcp . 80 : goto "
                 "pick4-%d }\n" % (a, a, new_n))
    elif old_n != new_n:
        text += ("delete element inet lay tcp4-%d { %s . 80 }\n"
                 "add element inet lay tcp4-%d { %s . 80 }\n"
                 % (old_n, a, new_n, a))
    text += "delete element inet lay ep4-tcp { %s }\n" % ", ".join(
        "%s . 80 . %d" % (a, j) for j in range(old_n))
    text += "add element inet lay ep4-tcp { %s }\n" % ", ".join(
        "%s . 80 . %d : %s . 8080" % (a, j, ep(j, gen)) for j in range(new_n))
    return text


def kernel_ms(ns, path):
    """Milliseconds nft's batches spent in the kernel running file <path>
    (nfnetlink runs a batch within the sendmsg() that carries it; nft
    asks for its caches with sendto(), left out), and the wall time of
    the whole nft run."""
    t0 = time.monotonic()
    p = subprocess.run(["ip", "netns", "exec", ns, "strace", "-f", "-T",
                        "-e", "trace=sendmsg", "nft", "-f", path],
                       capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("nft -f %s: %s" % (path, p.stderr[-600:]))
    return 1000 * sum(float(x) for x in re.findall(r"<([0-9.]+)>\s*$",
                                                    p.stderr, re.M)), wall


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def answers(ns, addr, tries):
    got = set()
    for _ in range(tries):
        p = subprocess.run(
            ["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
             "import socket,sys\nc=socket.create_connection((sys.argv[1],"
             "80),timeout=3)\nprint(c.recv(64).decode())", addr],
            capture_output=True, text=True, timeout=20)
        if p.returncode != 0:
            sys.exit("no answer from %s:80: %s" % (addr, p.stderr[-300:]))
        got.add(p.stdout.strip())
    return got


def shared(a, d):
    ns = "ferry-layout-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    srv = None
    try:
        for c in (["ip", "link", "set", "lo", "up"],
                  ["ip", "route", "add", "local", "198.18.0.0/15", "dev",
                   "lo"]):
            subprocess.run(["ip", "netns", "exec", ns] + c, check=True)
        k_ms, wall = kernel_ms(ns, write(d, "made.nft",
                                         skeleton(a.services, a.endpoints)))
        print("shared: %d Services x %d endpoints made in %.1f s, %.0f ms "
              "of it in the kernel" % (a.services, a.endpoints, wall, k_ms),
              flush=True)
        e = a.endpoints
        # Two Services in the middle: an even one (its way through svc4)
        # and an odd one (its way through the sets).
        kv = a.services // 2 - a.services // 2 % 2
        ks = kv + 1 if kv + 1 < a.services else kv
        final = {}
        for kind, k, g0 in (("same", kv, 1), ("resized, svc4 re-pointed",
                                              kv, 1),
                            ("resized, set membership", ks, 3)):
            ms = []
            n = final.get(k, (e, 0))[0]
            for c in range(a.changes):
                m = n if kind == "same" else (e - 1 if n == e else e)
                gen = g0 + c % 2
                ms.append(kernel_ms(ns, write(d, "c.nft",
                                              change(k, n, m, gen)))[0])
                n = m
                final[k] = (n, gen)
            print("shared, %s: one change %.3f ms in the kernel (median; "
                  "min %.3f, max %.3f) over %d changes" % (
                      kind, statistics.median(ms), min(ms), max(ms), len(ms)),
                  flush=True)
        srv = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3",
                                "-c", SERVER, str(2 * a.probes + 4)],
                               stdout=subprocess.PIPE, text=True)
        if srv.stdout.readline().strip() != "ready":
            sys.exit("the test server did not start")
        for k, (n, gen) in sorted(final.items()):
            want = {ep(j, gen) for j in range(n)}
            got = answers(ns, cip(k), a.probes)
            if not got or not got <= want:
                sys.exit("Service %d answered from %s, not its endpoints %s"
                         % (k, sorted(got), sorted(want)))
            print("shared: changed Service %d answered %d connections from "
                  "%d of its %d new endpoints" % (k, a.probes, len(got), n),
                  flush=True)
        if a.first_packet:
            first_packet(ns, a, d, srv)
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        subprocess.run(["ip", "netns", "del", ns])


def first_packet(ns, a, d, srv):
    """What a connection's first packet pays for the sets of pick4: K
    empty count sets, each with its rule, put ahead of the real ones;
    then connections to the odd Services (through pick4, K + 1 or K + 2
    lookups before their own) against the even ones (straight to
    pick4-N), in turn."""
    k = a.first_packet
    text = "".join(
        "add set inet lay tcp4-x%d { typeof ip daddr . tcp dport; }\n"
        "insert rule inet lay pick4 ip daddr . tcp dport @tcp4-x%d dnat ip "
        "to ip daddr . tcp dport . numgen random mod 1 map @ep4-tcp\n"
        % (i, i) for i in range(k))
    kernel_ms(ns, write(d, "k.nft", text))
    # Both ways still translate (a refused connect would not tell), then
    # nothing listens, so that every timed connect() is refused at once.
    for svc in (0, 1):
        if svc < a.services:
            want = {ep(svc * a.endpoints + j) for j in range(a.endpoints)}
            got = answers(ns, cip(svc), 2)
            if not got <= want:
                sys.exit("Service %d answered from %s behind the count sets"
                         % (svc, sorted(got)))
    srv.kill()
    srv.wait()
    even = [cip(i) for i in range(0, min(a.services, 2000), 2)]
    odd = [cip(i) for i in range(1, min(a.services, 2000), 2)]
    p = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c",
                        SENDER, ",".join(even), ",".join(odd),
                        str(a.connects), "10"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit("sender: " + p.stderr[-400:])
    direct, through = (float(x) * 1e6 for x in p.stdout.split())
    print("shared, first packet: a refused connect() %.2f us straight to "
          "pick4-N, %.2f us through pick4 behind %d more count sets "
          "(%+.1f ns a set; medians of 10 rounds), %d connects each" % (
              direct, through, k, 1000 * (through - direct) / k,
              10 * a.connects), flush=True)


def services_json(n, eps):
    out = []
    for k in range(n):
        out.append({"id": "default/s%d:p" % k, "protocol": "tcp", "port": 80,
                    "cluster_ips": [cip(k)],
                    "cluster_endpoints": [
                        {"ip": ep(k * eps + j), "port": 8080, "weight": 1}
                        for j in range(eps)]})
    return out


def engine(a, d):
    """ferry's layout 3, through its engine: creation's CPU and updates.
    The engine's default is now layout 4 (what this tool measured by
    hand as "shared"); own_chains keeps a chain and a map per Service."""
    ns = "ferry-layout3-%d" % os.getpid()
    conf = {"cluster_cidrs": ["198.18.0.0/16"], "own_chains": True}
    s = services_json(a.services, a.endpoints)
    b = list(s)
    k = a.services // 2
    b[k] = dict(s[k], cluster_endpoints=s[k]["cluster_endpoints"][:-1])
    pa = write(d, "a.json", json.dumps({"config": conf, "services": s}))
    pb = write(d, "b.json", json.dumps({"config": conf, "services": b}))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        subprocess.run(["ip", "netns", "exec", ns, a.nftdrive, "apply", pa],
                       check=True, capture_output=True, timeout=1800)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        print("layout 3: made in %.1f s, %.1f s CPU (%.1f s of it system)"
              % (wall, after.ru_utime + after.ru_stime - before.ru_utime
                 - before.ru_stime, after.ru_stime - before.ru_stime),
              flush=True)
        n = a.changes + a.changes % 2
        args = ["ip", "netns", "exec", ns, a.nftdrive, "time", pa] + \
            [pb, pa] * (n // 2)
        r = subprocess.run(args, capture_output=True, text=True,
                           timeout=1800)
        ms = [float(x) for x in re.findall(r"^update ([\d.]+) ms", r.stdout,
                                           re.M)]
        if r.returncode != 0 or len(ms) != n:
            sys.exit("nftdrive: %s%s" % (r.stdout[-400:], r.stderr[-400:]))
        # Again under strace, for the kernel's part measured as the shared
        # layout's is: the engine sends each update as one batch. (A
        # sanitized build's leak check cannot run under ptrace.)
        asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""),
                                    "detect_leaks=0") if x)
        r = subprocess.run(args[:4] + ["strace", "-f", "-T", "-e",
                                       "trace=sendto,sendmsg"] + args[4:],
                           capture_output=True, text=True, timeout=1800,
                           env=dict(os.environ, ASAN_OPTIONS=asan))
        kms = [1000 * float(x) for x in re.findall(
            r"NFNL_MSG_BATCH_BEGIN.*<([0-9.]+)>\s*$", r.stderr, re.M)]
        if r.returncode != 0 or len(kms) < n:
            sys.exit("nftdrive under strace: %d batches\n%s" % (
                len(kms), r.stderr[-400:]))
        kms = kms[-n:]
        print("layout 3 resized: one change %.3f ms in the kernel (median; "
              "min %.3f, max %.3f); %.3f ms with ferry's part, without "
              "strace (median; min %.3f, max %.3f) over %d changes" % (
                  statistics.median(kms), min(kms), max(kms),
                  statistics.median(ms), min(ms), max(ms), n), flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def bindings(a, d):
    ns = "ferry-bind-%d" % os.getpid()
    e = a.endpoints
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        text = ["table inet bind {",
                " map eps { typeof numgen random mod 1 : ip daddr . th dport;"
                " size %d; }" % max(65536, 2 * a.bindings * e)]
        for k in range(a.bindings):
            text.append(" chain s%d { meta l4proto tcp dnat ip to numgen "
                        "random mod %d offset %d map @eps; }" % (k, e, k * e))
        text.append("}")
        k_chains, _ = kernel_ms(ns, write(d, "b1.nft", "\n".join(text) + "\n"))
        els = ["%d : %s . 8080" % (i, ep(i)) for i in range(a.bindings * e)]
        k_elems, _ = kernel_ms(ns, write(d, "b2.nft", "".join(
            "add element inet bind eps { %s }\n" % ", ".join(els[x:x + 20000])
            for x in range(0, len(els), 20000))))
        print("bindings: %d chains binding one map: %.0f ms in the kernel; "
              "then %d elements: %.0f ms (%.1f us an element, %.1f ns an "
              "element and binding)" % (
                  a.bindings, k_chains, len(els), k_elems,
                  1000 * k_elems / len(els),
                  1e6 * k_elems / len(els) / a.bindings), flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=25)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--probes", type=int, default=10,
                    help="connections to the changed Service at the end")
    ap.add_argument("--nftdrive", help="also time ferry's layout 3 with "
                    "this build of tests/tools/nftdrive")
    ap.add_argument("--first-packet", type=int, default=0, metavar="K",
                    help="time connections through pick4 with K more "
                    "count sets ahead (0: skip it)")
    ap.add_argument("--connects", type=int, default=5000,
                    help="connects per group and round for --first-packet")
    ap.add_argument("--bindings", type=int, default=0,
                    help="chains in the bindings trap (0: skip it)")
    a = ap.parse_args()
    if not (4 <= a.services <= 50000 and 2 <= a.endpoints <= 50
            and 2 <= a.changes <= 1000 and 1 <= a.probes <= 100
            and 0 <= a.bindings <= 20000 and 0 <= a.first_packet <= 1000
            and 1 <= a.connects <= 100000):
        ap.error("--services 4-50000, --endpoints 2-50, --changes 2-1000, "
                 "--probes 1-100, --bindings 0-20000, --first-packet "
                 "0-1000, --connects 1-100000")
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces, nftables)")
    if a.nftdrive and not os.access(a.nftdrive, os.X_OK):
        sys.exit("%s: not built (meson compile -C build)" % a.nftdrive)
    with tempfile.TemporaryDirectory() as d:
        shared(a, d)
        if a.nftdrive:
            engine(a, d)
        if a.bindings:
            bindings(a, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
