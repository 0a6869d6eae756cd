#!/usr/bin/python3
"""What one Service's change costs the kernel, with the Services in one
nftables table or spread over several.

In a network namespace of its own, makes N Service chains shaped as the
kernel dataplane makes them (a masquerade jump, a dnat through an
anonymous map of 25 endpoints, the fallback dnat; a goto from a verdict
map), spread round-robin over K tables of family inet, each with its own
nat base chains and map. Then it rewrites one Service's chain, as an
endpoint change does, a few times, and reports the time nft's sendmsg()
calls spent in the kernel (strace -T), where the commit and its check of
the table happen.

    bench/nftshards.py --services 10000 --tables 1 16 64

Run as root; needs nft and strace. Every address is in 198.18.0.0/15 and
stays inside the namespace, which is deleted at the end.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

EPS = 25


def table(k):
    return "fx%02d" % k


def skeleton(k):
    t = table(k)
    return (
        f"add table inet {t}\n"
        f"add map inet {t} svc4 {{ type ipv4_addr . inet_proto . "
        f"inet_service : verdict; }}\n"
        f"add chain inet {t} mark-for-masq\n"
        f"add rule inet {t} mark-for-masq meta mark set meta mark or 0x4000\n"
        f"add chain inet {t} services\n"
        f"add rule inet {t} services ip daddr . meta l4proto . th dport "
        f"vmap @svc4\n"
        f"add chain inet {t} pre {{ type nat hook prerouting priority -100; }}\n"
        f"add rule inet {t} pre jump services\n"
        f"add chain inet {t} out {{ type nat hook output priority -100; }}\n"
        f"add rule inet {t} out jump services\n")


def chain(i, k, n, base):
    eps = ", ".join("%d : 198.18.%d.%d . 8080" % (
        j, (base + j) // 250 % 250, (base + j) % 250 + 1) for j in range(n))
    return (f"add chain inet {table(k)} svc4-s{i} {{\n"
            f" jump mark-for-masq\n"
            f" meta l4proto tcp dnat ip to numgen random mod {n} map "
            f"{{ {eps} }}\n"
            f" meta l4proto tcp dnat ip to 198.18.0.1:8080\n}}\n")


def element(i, k):
    ip = "198.19.%d.%d" % (i // 250, i % 250 + 1)
    return (f"add map inet {table(k)} svc4 {{ type ipv4_addr . inet_proto . "
            f"inet_service : verdict; elements = {{ {ip} . tcp . 80 : "
            f"goto svc4-s{i} }} }}\n")


def nft(ns, text):
    p = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"],
                       input=text.encode(), capture_output=True)
    if p.returncode != 0:
        sys.exit("nft: " + p.stderr.decode()[:400])


def kernel_ms(ns, text, tmp):
    """Milliseconds nft's send calls spent in the kernel running <text>."""
    path = os.path.join(tmp, "change.nft")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run(["ip", "netns", "exec", ns, "strace", "-f", "-T",
                        "-e", "trace=sendmsg,sendto", "nft", "-f", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("nft: " + p.stderr[-400:])
    return 1000 * sum(float(x) for x in re.findall(r"<([0-9.]+)>\s*$",
                                                    p.stderr, re.M))


def run(services, tables, changes, part):
    ns = "ferry-shards-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            nft(ns, "".join(skeleton(k) for k in range(tables)))
            order = sorted(range(services), key=lambda i: (i % tables, i))
            for at in range(0, services, part):
                ids = order[at:at + part]
                nft(ns, "".join(chain(i, i % tables, EPS, i * EPS)
                                for i in ids)
                    + "".join(element(i, i % tables) for i in ids))
            made = time.monotonic() - t0
            ms = []
            for c in range(changes):
                i = (c * 37 + 7) % services
                k = i % tables
                ms.append(kernel_ms(ns, f"flush chain inet {table(k)} "
                                        f"svc4-s{i}\n"
                                    + chain(i, k, EPS - 1 - c % 3, 60000),
                                    tmp))
            ms.sort()
            print("%d services in %d table(s): created in %.1f s (nft -f "
                  "per part); one Service's change, kernel time in ms: "
                  "min %.2f, median %.2f, max %.2f (%d changes)"
                  % (services, tables, made, ms[0], ms[len(ms) // 2], ms[-1],
                     len(ms)))
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--tables", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--changes", type=int, default=9)
    ap.add_argument("--part", type=int, default=40,
                    help="Services created per nft transaction")
    a = ap.parse_args()
    if a.services < 1 or a.services > 60000 or a.changes < 1 \
            or a.changes > 100 or a.part < 1 \
            or any(t < 1 or t > 100 for t in a.tables):
        ap.error("--services 1-60000, --tables 1-100, --changes 1-100")
    for t in a.tables:
        run(a.services, t, a.changes, a.part)


if __name__ == "__main__":
    main()
