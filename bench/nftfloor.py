#!/usr/bin/python3
"""What the kernel charges for one endpoint change, whatever ferry does:
the floor under the kernel dataplane's cost per change.

In a network namespace of its own, tests/tools/nftdrive (ferry's kernel
dataplane engine, proxy/node/nft.c) builds table inet ferry for N
Services of E endpoints. Then, in rounds, it adopts the table and
changes one Service's endpoints back and forth, timing each update (its
endpoint map flushed and refilled through netlink, one transaction),
in three variants:

  base     the table alone;
  +chains  with another table holding X empty chains;
  +sets    with another table holding X empty sets instead.

Where +chains costs more than base, the kernel's commit walks every
chain of every table (nf_tables_commit), so a chain per Service puts a
floor under any transaction that grows with the Services, whatever the
transaction touches. Where +sets costs the same as base, looking a set
up by name walks only its own table's sets.

    bench/nftfloor.py --services 10000 --endpoints 25 --extra 20000

Run as root, from a built tree (build/tests/tools/nftdrive); needs nft.
Every address is in 198.18.0.0/15 and stays inside the namespace, which
is deleted at the end.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def services(n, eps):
    out = []
    for i in range(n):
        e = [{"ip": "198.19.%d.%d" % ((i * eps + j) // 250 % 250,
                                      (i * eps + j) % 250 + 1),
              "port": 8080, "weight": 1} for j in range(eps)]
        out.append({"id": "default/s%d:p" % i, "protocol": "tcp",
                    "port": 80,
                    "cluster_ips": ["198.18.%d.%d" % (100 + i // 250,
                                                      i % 250 + 1)],
                    "cluster_endpoints": e})
    return out


def write_docs(d, n, eps):
    conf = {"cluster_cidrs": ["198.18.0.0/16"]}
    a = services(n, eps)
    # One Service loses an endpoint, then gets it back.
    b = list(a)
    b[n // 2] = dict(a[n // 2],
                     cluster_endpoints=a[n // 2]["cluster_endpoints"][:-1])
    pa, pb = os.path.join(d, "a.json"), os.path.join(d, "b.json")
    with open(pa, "w") as f:
        json.dump({"config": conf, "services": a}, f)
    with open(pb, "w") as f:
        json.dump({"config": conf, "services": b}, f)
    return pa, pb


def sh(ns, *cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", ns] + list(cmd),
                          check=True, capture_output=True, text=True, **kw)


def extra_table(ns, d, kind, x):
    path = os.path.join(d, "extra.nft")
    with open(path, "w") as f:
        f.write("add table inet floorx\n")
        for i in range(x):
            if kind == "chains":
                f.write("add chain inet floorx c%d\n" % i)
            else:
                f.write("add set inet floorx s%d { type ipv4_addr; }\n" % i)
    sh(ns, "nft", "-f", path)


def updates(ns, drive, pa, pb, changes):
    args = [drive, "time", pa] + [pb, pa] * (changes // 2)
    r = sh(ns, *args, timeout=1800)
    ms = [float(m) for m in re.findall(r"^update ([\d.]+) ms", r.stdout,
                                       re.M)]
    if len(ms) != changes - changes % 2:
        raise SystemExit("nftdrive printed %d updates:\n%s%s" % (
            len(ms), r.stdout, r.stderr))
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=25)
    ap.add_argument("--extra", type=int, default=20000,
                    help="chains, then sets, in the other table")
    ap.add_argument("--changes", type=int, default=20,
                    help="updates a variant in each round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nftdrive",
                    default=os.path.join(ROOT, "build", "tests", "tools",
                                         "nftdrive"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces, nftables)")
    if not os.access(a.nftdrive, os.X_OK):
        raise SystemExit(f"{a.nftdrive}: not built (meson compile -C build)")
    ns = "ferry-floor-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    kinds = ("base", "chains", "sets")
    got = {k: [] for k in kinds}
    try:
        with tempfile.TemporaryDirectory() as d:
            pa, pb = write_docs(d, a.services, a.endpoints)
            # Rounds in turn, each variant once a round: this machine's
            # speed moves by up to twice within minutes, so variants are
            # compared round by round, never a run of one against a later
            # run of another.
            # ferry's table is built once; each variant adds the other
            # table, adopts ferry's (as a restart does) and times the
            # updates. Destroying 10,000 Services' objects between
            # variants kept the kernel's workers busy for seconds.
            sh(ns, a.nftdrive, "apply", pa, timeout=1800)
            for r in range(a.rounds):
                for what in kinds[r % 3:] + kinds[:r % 3]:
                    subprocess.run(["ip", "netns", "exec", ns, "nft",
                                    "delete", "table", "inet", "floorx"],
                                   capture_output=True)  # absent: fine
                    if what != "base":
                        extra_table(ns, d, what, a.extra)
                    ms = updates(ns, a.nftdrive, pa, pb, a.changes)
                    got[what].append(statistics.median(ms))
                    print(f"round {r + 1} {what:>6}: update median "
                          f"{got[what][-1]:.2f} ms (min {min(ms):.2f}, max "
                          f"{max(ms):.2f}) over {len(ms)} changes",
                          flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    med = {k: statistics.median(v) for k, v in got.items()}
    dc = statistics.median(c - b for c, b in zip(got["chains"], got["base"]))
    ds = statistics.median(s - b for s, b in zip(got["sets"], got["base"]))
    print(f"{a.services} Services x {a.endpoints} endpoints, median of "
          f"{a.rounds} rounds: one change {med['base']:.2f} ms; with "
          f"{a.extra} chains elsewhere {med['chains']:.2f} ms ({dc:+.2f} a "
          f"round, {dc / a.extra * 1e6:+.0f} ns a chain); with {a.extra} "
          f"sets elsewhere {med['sets']:.2f} ms ({ds:+.2f}, "
          f"{ds / a.extra * 1e6:+.0f} ns a set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
