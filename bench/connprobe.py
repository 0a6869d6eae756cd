#!/usr/bin/python3
"""bench/connprobe.py - new connections at a fixed rate, each timed from
its scheduled start to the first byte back (it sends one byte to an echo
server), for `bench/run
control-plane`: how long a client waits for a proxy-served Service while
ferry's control side is busy with the API.

    connprobe.py --target [NAME=]HOST:PORT [--target ...] --rate R
                 --duration S --out FILE

A process of its own (not a thread of the bench, whose threads share one
interpreter lock with the churn). Connections are made one after another
on a fixed schedule; each is timed from the moment it was scheduled, not
sent, so a stall also counts against the connections that had to wait
for it (what wrk2 calls coordinated omission); a slot that passed while
an earlier connection waited is counted as missed. Bounded: at most
R x S connections, each with a 5 s deadline, and S <= 3600.

With several targets the slots go to each in turn, so that a target
reached directly (the same server without ferry) is measured under the
same conditions as the one through ferry: what the machine and the
client cost, beside what ferry adds.

Writes FILE: {NAME: {"n", "failed", "missed", "latency_ms": {p50, p90,
p99, p99.9, max}, "over_5ms", "over_50ms", "errors": [first few]}, ...}
(NAME defaults to HOST:PORT).
"""

import argparse
import json
import socket
import sys
import time

TIMEOUT = 5.0


def pct(v, p):
    if not v:
        return None
    v = sorted(v)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def summary(lat, failed, missed, errors, rate):
    res = {"n": len(lat), "failed": failed, "missed": missed, "rate": rate,
           "latency_ms": {k: (round(pct(lat, p), 3) if lat else None)
                          for k, p in (("p50", 50), ("p90", 90), ("p99", 99),
                                       ("p99.9", 99.9))},
           "over_5ms": sum(1 for v in lat if v > 5),
           "over_50ms": sum(1 for v in lat if v > 50),
           "errors": errors}
    res["latency_ms"]["max"] = round(max(lat), 3) if lat else None
    return res


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    targets = []
    for t in a.target:
        name, _, addr = t.rpartition("=")
        host, port = addr.rsplit(":", 1)
        targets.append((name or addr, host, int(port)))
    if not (0 < a.rate <= 2000 and 0 < a.duration <= 3600):
        print("connprobe: rate 0-2000/s, duration 0-3600 s", file=sys.stderr)
        return 2
    gap = 1.0 / a.rate
    total = int(a.rate * a.duration)
    st = {t[0]: {"lat": [], "errors": [], "failed": 0, "missed": 0}
          for t in targets}
    start = time.perf_counter()
    i = 0
    while i < total:
        slot = start + i * gap
        now = time.perf_counter()
        if now < slot:
            time.sleep(slot - now)
        elif now - slot > gap:
            # Slots that passed while the last connection waited: counted
            # against the target whose connection waited.
            skip = int((now - slot) / gap)
            st[targets[(i - 1) % len(targets)][0]]["missed"] += skip
            i += skip
            slot = start + i * gap
        name, host, port = targets[i % len(targets)]
        i += 1
        r = st[name]
        try:
            with socket.create_connection((host, port),
                                          timeout=TIMEOUT) as s:
                s.sendall(b"x")
                if not s.recv(1):
                    raise OSError("closed before the first byte")
            r["lat"].append((time.perf_counter() - slot) * 1e3)
        except OSError as e:
            r["failed"] += 1
            if len(r["errors"]) < 5:
                r["errors"].append(str(e))
    res = {n: summary(r["lat"], r["failed"], r["missed"], r["errors"],
                      a.rate / len(targets)) for n, r in st.items()}
    with open(a.out, "w") as f:
        json.dump(res, f, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
