"""bench/scaling.py - bench/run --scale: the same pass at 1, 2, ... proxy
CPUs (the first k of --proxy-cpus), and what each added core bought.

Each pass gives every proxy k threads (ferry's relay.workers, HAProxy's
nbthread, NGINX's worker_processes) on k CPUs; the load keeps
--load-cpus throughout. The table gives, per scenario and target, the
rate (or Mbit/s) at each k with its spread, the gain of each added core
over the pass before, and the efficiency rate(k) / (k * rate(1)): 1.0 is
linear scaling. A gain inside the spread of the two passes is marked as
such (benchstats.verdict).
"""

import benchstats


def figure(scenario):
    return "mbit" if scenario.startswith("stream") else "rate"


def table_md(meds, scenarios, targets, cpus):
    """meds: [med of pass k=1, k=2, ...] as bench/run's medians()."""
    n = len(meds)
    lines = ["# Scaling per added proxy core", "",
             "Proxy CPUs per pass: %s. Each pass: every proxy with as many "
             "threads as CPUs; the same load CPUs. *gain* is the change from "
             "the pass with one core fewer; *eff.* is rate(k) / (k x "
             "rate(1)), 1.00 being linear." % ", ".join(
                 "%d: %s" % (k + 1, ",".join(map(str, cpus[:k + 1])))
                 for k in range(n)), ""]
    head = ["scenario", "target"]
    for k in range(1, n + 1):
        head += ["%d core%s" % (k, "s" if k > 1 else "")]
        if k > 1:
            head += ["gain", "eff."]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        key = figure(sc)
        for t in targets:
            if t == "direct":
                continue
            row, first, prev = [sc, t], None, None
            for k, med in enumerate(meds, start=1):
                m = med.get((sc, t), {})
                v, st = m.get(key), m.get(key + "_stats")
                row.append(benchstats.fmt_stats(st) if st else benchstats.fmt(v))
                if k > 1:
                    if v is None or prev is None:
                        row += ["-", "-"]
                    else:
                        same = benchstats.verdict(prev[1] or prev[0], st or v,
                                                  True)
                        row.append("%+.0f%s" % (v - prev[0],
                                                " (within spread)"
                                                if same == "same within spread"
                                                else ""))
                        row.append("%.2f" % (v / (k * first)) if first else "-")
                if k == 1:
                    first = v
                prev = (v, st) if v is not None else None
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
