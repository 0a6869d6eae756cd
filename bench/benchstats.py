"""bench/benchstats.py - the statistics behind bench/run's figures.

Every figure of a run is the median over its rounds, reported with the
spread (min and max) and, from 5 rounds up, an interval for the median
built from order statistics: [x(j), x(n+1-j)] of the sorted rounds covers
the true median with probability 1 - 2 * P(Binomial(n, 1/2) < j), whatever
the distribution. The largest j reaching 95 % is taken; with 5 rounds no
j does, so the interval is min-max and its coverage (93.8 %) is stated.

`bench/run --compare A.json B.json` calls a change between two runs a
difference only where the two intervals (the 95 % ones if both runs have
them, else min-max) do not overlap.
"""

import json
import math
import statistics

CI_MIN_ROUNDS = 5


def median_ci(vals, level=0.95):
    """(lo, hi, coverage) for the median of vals, or None under 5 values."""
    n = len(vals)
    if n < CI_MIN_ROUNDS:
        return None
    xs = sorted(vals)
    best = (xs[0], xs[-1], 1 - 2 * 0.5 ** n)
    # cover(j) = 1 - 2 * sum_{i<j} C(n,i) / 2^n, falling as j grows.
    below = 0.0
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1) / 2.0 ** n
        cover = 1 - 2 * below
        if cover < level:
            break
        best = (xs[j - 1], xs[n - j], cover)
    return best


def summarize(vals):
    """{median, min, max, n[, ci95: [lo, hi], ci_cover]} of a list."""
    s = {"median": statistics.median(vals), "min": min(vals),
         "max": max(vals), "n": len(vals)}
    ci = median_ci(vals)
    if ci is not None:
        s["ci95"] = [ci[0], ci[1]]
        s["ci_cover"] = round(ci[2], 4)
    return s


def interval(s):
    """The interval a comparison uses: the 95 % one, else min-max."""
    if isinstance(s, dict):
        if s.get("n", 1) < 2:
            return (s["median"], s["median"]), "one value"
        if "ci95" in s:
            return tuple(s["ci95"]), "ci95"
        return (s["min"], s["max"]), "min-max"
    return (s, s), "one value"


def load(path):
    """A run's figures: medians.json of bench/run, or the "medians" of a
    JSON document that has them (kernel.json). Returns {key: {metric:
    value}}, where spread-aware runs also hold {metric}_stats."""
    with open(path) as f:
        doc = json.load(f)
    if isinstance(doc, dict) and isinstance(doc.get("medians"), dict):
        doc = doc["medians"]
    if not isinstance(doc, dict):
        raise ValueError("%s: not a medians document" % path)
    return doc


def verdict(sa, sb, higher_better):
    """'differs: better', 'differs: worse', 'same within spread' or 'too
    few rounds' (an interval of one value says nothing)."""
    (alo, ahi), ka = interval(sa)
    (blo, bhi), kb = interval(sb)
    if "one value" in (ka, kb):
        return "too few rounds"
    if ahi < blo or bhi < alo:
        better = (blo > ahi) == bool(higher_better)
        return "differs: %s" % ("better" if better else "worse")
    return "same within spread"


def fmt(v):
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.3g" % v


def fmt_stats(s):
    """'median [lo-hi]' of a summarize() result, or the bare value."""
    if not isinstance(s, dict):
        return fmt(s)
    (lo, hi), kind = interval(s)
    if s.get("n", 1) < 2:
        return fmt(s["median"])
    return "%s [%s-%s%s]" % (fmt(s["median"]), fmt(lo), fmt(hi),
                             "" if kind == "ci95" else " range")


def compare(a, b, higher_better):
    """Rows (key, metric, A, B, change %, verdict) for every figure both
    runs have; higher_better maps a metric name to True/False."""
    rows = []
    for key in sorted(set(a) & set(b)):
        ma, mb = a[key], b[key]
        if not isinstance(ma, dict) or not isinstance(mb, dict):
            continue
        for metric in sorted(set(ma) & set(mb)):
            if metric.endswith("_stats") or metric in ("rounds",):
                continue
            va, vb = ma[metric], mb[metric]
            if (not isinstance(va, (int, float)) or not isinstance(vb, (int, float))
                    or isinstance(va, bool) or isinstance(vb, bool)):
                continue
            sa = ma.get(metric + "_stats", va)
            sb = mb.get(metric + "_stats", vb)
            change = (vb - va) / va * 100 if va else None
            hb = higher_better.get(metric)
            v = verdict(sa, sb, hb) if hb is not None else "-"
            rows.append((key, metric, fmt_stats(sa), fmt_stats(sb),
                         "-" if change is None else "%+.1f%%" % change, v))
    return rows


def compare_text(path_a, path_b, higher_better):
    a, b = load(path_a), load(path_b)
    rows = compare(a, b, higher_better)
    head = ("figure", "metric", "A", "B", "change", "verdict")
    out = ["A: %s" % path_a, "B: %s" % path_b,
           "Medians with [95 % interval] (5+ rounds) or [min-max range]; "
           "a difference only where the intervals do not overlap.", ""]
    if not rows:
        out.append("no figure in common")
        return "\n".join(out) + "\n", 0
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
    for r in [head] + rows:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    worse = sum(1 for r in rows if r[5] == "differs: worse")
    better = sum(1 for r in rows if r[5] == "differs: better")
    out += ["", "%d figure(s): %d better, %d worse, the rest within spread "
            "or without one" % (len(rows), better, worse)]
    return "\n".join(out) + "\n", worse
