"""bench/sweep.py - latency against offered rate, for bench/run --sweep.

Each step runs ferry-bench open loop (--rate R) through every target that
has not yet saturated; a target saturates at the first step where, in the
median of the step's rounds, it achieved less than 95 % of the offered
rate, more than 1 % of the units missed their slot, or any unit failed.
The steps go on until every target has saturated or the list ends.

The results: a Markdown table per scenario and an SVG plot of p99 (and
p50) latency against the achieved rate, written with nothing but Python.
"""

import statistics

import benchstats

SAT_ACHIEVED = 0.95
SAT_MISSED = 0.01
QUANTILES = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"),
             ("p999_us", "p99.9"), ("p9999_us", "p99.99"), ("max_us", "max")]


def rates(start, steps, factor=2.0):
    """The default ladder: start, start*2, ... (steps values)."""
    return [round(start * factor ** i) for i in range(steps)]


def parse_rates(spec):
    out = []
    for part in spec.split(","):
        v = float(part)
        if not 0 < v <= 1e6:
            raise ValueError("rate %s out of (0, 1,000,000]" % part)
        out.append(v)
    if not out or out != sorted(out):
        raise ValueError("rates must rise")
    return out


def saturated(results):
    """True when the step's runs (ferry-bench JSON results) show the
    target at or past its limit."""
    if not results:
        return True
    ach = statistics.median(r["rate"] / r["offered_rate"] for r in results)
    miss = statistics.median(r["missed"] / max(r["scheduled"], 1)
                             for r in results)
    errs = sum(r["errors_total"] for r in results)
    return ach < SAT_ACHIEVED or miss > SAT_MISSED or errs > 0


def step_medians(runs):
    """{(scenario, target, offered): {metric: stats}} of sweep records."""
    groups = {}
    for rec in runs:
        if "result" in rec and "offered" in rec:
            key = (rec["scenario"], rec["target"], rec["offered"])
            groups.setdefault(key, []).append(rec["result"])
    out = {}
    for key, rs in groups.items():
        m = {"rounds": len(rs), "errors": sum(r["errors_total"] for r in rs),
             "missed": statistics.median(r["missed"] for r in rs),
             "scheduled": statistics.median(r["scheduled"] for r in rs),
             "saturated": saturated(rs)}
        for k in ["rate"] + [q for q, _ in QUANTILES]:
            vals = [r[k] for r in rs if k in r]
            if vals:
                m[k] = statistics.median(vals)
                m[k + "_stats"] = benchstats.summarize(vals)
        out[key] = m
    return out


def table_md(scenario, med, targets):
    unit = "conn/s" if scenario == "connrate" else "req/s"
    head = (["target", "offered %s" % unit, "achieved"]
            + ["%s us" % n for _, n in QUANTILES] + ["missed slot", "errors"])
    lines = ["## sweep: %s" % scenario, "",
             "Open loop (ferry-bench --rate): each latency timed from the "
             "unit's slot in the schedule, so waiting for a free connection "
             "counts. Medians over rounds, [lo-hi] as above. *sat* marks the "
             "step where the target stopped keeping up (achieved < 95 %, "
             "more than 1 % of units missed their slot, or errors); the "
             "sweep stops there for it.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in targets:
        steps = sorted(k[2] for k in med if k[0] == scenario and k[1] == t)
        for off in steps:
            m = med[(scenario, t, off)]
            cells = [t, benchstats.fmt(off),
                     benchstats.fmt_stats(m.get("rate_stats", m.get("rate")))
                     + (" *sat*" if m["saturated"] else "")]
            cells += [benchstats.fmt_stats(m.get(q + "_stats", m.get(q)))
                      for q, _ in QUANTILES]
            cells += ["%s of %s" % (benchstats.fmt(m["missed"]),
                                    benchstats.fmt(m["scheduled"])),
                      str(m["errors"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _log10(v):
    import math
    return math.log10(max(v, 1e-3))


def svg(scenario, med, targets, width=640, height=400):
    """p99 (solid) and p50 (dashed) latency against achieved rate, log y."""
    series = []
    for t in targets:
        pts = sorted((m["rate"], m.get("p50_us", 0), m.get("p99_us", 0))
                     for k, m in med.items()
                     if k[0] == scenario and k[1] == t and "rate" in m)
        if pts:
            series.append((t, pts))
    if not series:
        return None
    xs = [p[0] for _, pts in series for p in pts]
    ys = [v for _, pts in series for p in pts for v in p[1:] if v > 0]
    xmax = max(xs) * 1.05 or 1
    ylo, yhi = _log10(min(ys or [1])) - 0.1, _log10(max(ys or [10])) + 0.1
    if yhi - ylo < 1:
        yhi = ylo + 1
    l, r, top, b = 70, 20, 30, 50
    pw, ph = width - l - r, height - top - b

    def X(v):
        return l + pw * v / xmax

    def Y(v):
        return top + ph * (1 - (_log10(v) - ylo) / (yhi - ylo))

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (width, height),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="18" font-size="13">%s: latency against achieved '
           'rate (p99 solid, p50 dashed)</text>' % (l, scenario),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
           % (l, top + ph, l + pw, top + ph),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
           % (l, top, l, top + ph)]
    for i in range(6):
        v = xmax * i / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                   % (X(v), top + ph + 15, benchstats.fmt(v)))
    import math
    for e in range(math.ceil(ylo), math.floor(yhi) + 1):
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>'
                   % (l, Y(10 ** e), l + pw, Y(10 ** e)))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%s us</text>'
                   % (l - 4, Y(10 ** e) + 4, benchstats.fmt(10 ** e)))
    out.append('<text x="%d" y="%d" text-anchor="middle">achieved %s per '
               'second</text>' % (l + pw // 2, height - 10,
                                  "connections" if scenario == "connrate"
                                  else "requests"))
    for i, (t, pts) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        for col, dash in ((2, ""), (1, ' stroke-dasharray="4 3"')):
            p = " ".join("%.1f,%.1f" % (X(pt[0]), Y(pt[col]))
                         for pt in pts if pt[col] > 0)
            out.append('<polyline points="%s" fill="none" stroke="%s" '
                       'stroke-width="1.5"%s/>' % (p, c, dash))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>'
                   % (l + 10, top + 14 + 14 * i, c, t))
    out.append("</svg>")
    return "\n".join(out) + "\n"
