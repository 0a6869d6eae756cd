"""ferry check-config FILE, and ferry -c with a bad file.

Each error case replaces lines of a known-good file, so the test knows the
line the error is on. The column is only checked to lie on that line: the
contract fixes the line, not which token of it is blamed.
"""

import re
import subprocess
import time

import pytest

import ferrytest as ft

GOOD = """\
log:
  level: info
  format: text
drain_timeout: 30s
defaults:
  balance: roundrobin
  connect_timeout: 2s
  idle_timeout: 1h
  retries: 3
  max_connections: 0
services:
  - name: web
    listen: [127.0.0.1:8080, "[::1]:8080"]
    balance: leastconn
    backends:
      - {address: 127.0.0.1:9001, weight: 1, name: web-1}
      - address: 127.0.0.1:9002
        weight: 5
        name: web-2
  - name: db
    listen:
      - 127.0.0.1:5432
    backends:
      - address: "[::1]:5433"
"""

# id -> ({line number: replacement text, or None to delete}, error line)
CASES = {
    # YAML syntax
    "syntax-mapping-value": ({14: "    balance: leastconn: x"}, 14),
    "syntax-bad-token": ({9: "  retries: @3"}, 9),
    # unknown keys, at every level
    "unknown-top": ({4: "drain_timeot: 30s"}, 4),
    "unknown-log": ({2: "  levle: info"}, 2),
    "unknown-defaults": ({8: "  idle_timout: 1h"}, 8),
    "unknown-service": ({14: "    balanse: leastconn"}, 14),
    "unknown-backend": ({18: "        wieght: 5"}, 18),
    "unknown-backend-flow": (
        {16: "      - {address: 127.0.0.1:9001, weigth: 1, name: web-1}"},
        16),
    # wrong types
    "type-seq-for-int": ({9: "  retries: [1, 2]"}, 9),
    "type-word-for-int": ({10: "  max_connections: many"}, 10),
    "type-map-for-list": ({13: "    listen: {a: 1}"}, 13),
    "type-scalar-for-backends": ({15: "    backends: web-1", 16: None,
                                  17: None, 18: None, 19: None}, 15),
    "type-list-for-log": ({1: "log: [info]", 2: None, 3: None}, 1),
    # bad values of enumerations
    "bad-balance": ({14: "    balance: fastest"}, 14),
    "bad-log-level": ({2: "  level: loud"}, 2),
    "bad-log-format": ({3: "  format: xml"}, 3),
    "bad-relay-splice": ({4: "relay: {splice: sometimes}"}, 4),
    "bad-relay-budget": ({4: "relay: {pipe_budget: -2}"}, 4),
    "bad-relay-workers": ({4: "relay: {workers: 65}"}, 4),
    # bad addresses
    "bad-address-listen": ({22: "      - 127.0.0.300:5432"}, 22),
    "bad-address-hostname": ({17: "      - address: localhost:9002"}, 17),
    "bad-address-v6-bracket": ({24: '      - address: "[::1:5433"'}, 24),
    "bad-address-no-port": ({17: "      - address: 127.0.0.1"}, 17),
    # bad ports
    "bad-port-backend": ({17: "      - address: 127.0.0.1:70000"}, 17),
    "bad-port-listen": ({22: "      - 127.0.0.1:65536"}, 22),
    "bad-port-word": ({17: "      - address: 127.0.0.1:http"}, 17),
    # one spelling per number: YAML 1.1 reads 010 as octal
    "number-leading-zero": ({8: "  retries: 03"}, 8),
    # bad durations
    "bad-duration-unit": ({7: "  connect_timeout: 2 parsecs"}, 7),
    "bad-duration-negative": ({4: "drain_timeout: -5s"}, 4),
    "bad-duration-word": ({8: "  idle_timeout: forever"}, 8),
    # duplicate listen addresses: in one list, and across services
    "dup-listen-same-service": (
        {13: "    listen: [127.0.0.1:8080, 127.0.0.1:8080]"}, 13),
    "dup-listen-other-service": ({22: "      - 127.0.0.1:8080"}, 22),
    "dup-listen-v6": ({22: '      - "[::1]:8080"'}, 22),
    # a service with no backends
    "no-backends-empty": ({23: "    backends: []", 24: None}, 23),
    # weights out of range
    "weight-too-big": ({18: "        weight: 257"}, 18),
    "weight-negative": (
        {16: "      - {address: 127.0.0.1:9001, weight: -1, name: web-1}"},
        16),
}


def edit(text, changes):
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if n in changes:
            if changes[n] is not None:
                out.append(changes[n])
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def error_position(stderr, path, anchored=True):
    """(line, col, message) of the first FILE:LINE:COL: line in stderr.
    Unless <anchored>, the line may start with a prefix (a program name or
    log fields)."""
    start = r"^" if anchored else r"^.*?"
    rx = re.compile(start + re.escape(path) + r":(\d+):(\d+): (\S.*)$",
                    re.MULTILINE)
    m = rx.search(stderr)
    assert m, f"no '{path}:LINE:COL: message' line in stderr:\n{stderr}"
    return int(m.group(1)), int(m.group(2)), m.group(3)


def check_error(stderr, path, text, line, anchored=True):
    got_line, col, msg = error_position(stderr, path, anchored)
    assert got_line == line, \
        f"error reported on line {got_line}, expected {line}: {msg}"
    width = len(text.splitlines()[line - 1])
    assert 1 <= col <= width + 1, f"column {col} is off line {line}"
    return msg


def test_good_file(ferry_bin, tmp_path):
    p = tmp_path / "good.yaml"
    p.write_text(GOOD)
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 0, r.stderr
    assert f"{p}: OK" in r.stdout + r.stderr


def test_good_minimal_file(ferry_bin, tmp_path):
    """Only services: is required; everything else has a default."""
    p = tmp_path / "min.yaml"
    p.write_text("services:\n  - name: s\n    listen: [127.0.0.1:1]\n"
                 "    backends: [{address: 127.0.0.1:2}]\n")
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 0, r.stderr
    assert f"{p}: OK" in r.stdout + r.stderr


def test_demo_example_is_valid(ferry_bin):
    demo = ft.REPO_ROOT / "conf" / "examples" / "demo.yaml"
    if not demo.exists():
        pytest.skip("no conf/examples/demo.yaml")
    r = ft.run_ferry(["check-config", str(demo)])
    assert r.returncode == 0, r.stderr


def test_good_file_from_helpers(ferry_bin, tmp_path):
    """The configs the other tests generate are valid."""
    p = tmp_path / "gen.yaml"
    p.write_text(ft.config([
        ft.service("a", ["127.0.0.1:1", "[::1]:1"],
                   ["127.0.0.1:2", ("[::1]:3", 4)],
                   balance="random", idle_timeout="300ms",
                   max_connections=2),
    ], drain_timeout="1500ms"))
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_error_is_located(ferry_bin, tmp_path, case):
    changes, line = CASES[case]
    text = edit(GOOD, changes)
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 1, \
        f"exit {r.returncode}; stdout={r.stdout!r} stderr={r.stderr!r}"
    check_error(r.stderr, str(p), text, line)
    assert "OK" not in r.stdout


def test_first_error_wins(ferry_bin, tmp_path):
    text = edit(GOOD, {7: "  connect_timeout: 2 parsecs",
                       18: "        weight: 257"})
    p = tmp_path / "two.yaml"
    p.write_text(text)
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 1
    check_error(r.stderr, str(p), text, 7)
    assert f"{p}:18:" not in r.stderr


def test_missing_file(ferry_bin, tmp_path):
    p = tmp_path / "does-not-exist.yaml"
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 1
    assert str(p) in r.stderr


@pytest.mark.parametrize("case", ["unknown-service", "bad-port-backend",
                                  "weight-too-big", "syntax-mapping-value"])
def test_run_with_bad_file_fails(ferry_bin, tmp_path, case):
    """ferry -c BADFILE refuses to start, with the same located error."""
    changes, line = CASES[case]
    text = edit(GOOD, changes)
    # Listen on free ports, so that a ferry that wrongly starts cannot
    # collide with anything; it is killed by the timeout.
    text = text.replace("8080", str(ft.free_port()))
    text = text.replace("5432", str(ft.free_port()))
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    try:
        r = ft.run_ferry(["-c", str(p)], timeout=ft.scaled(10))
    except subprocess.TimeoutExpired:
        pytest.fail("ferry -c with a bad file kept running")
    assert r.returncode != 0
    # Running (not check-config), the error may come as a log line.
    check_error(r.stderr, str(p), text, line, anchored=False)


def _block_maps(levels):
    return "".join(" " * i + "a:\n" for i in range(levels))


def _alias_bomb():
    rows = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return "\n".join(rows) + "\n"


# id -> (text, error line, start of the message). Each is a few hundred KB
# to a few MB, under the 4 MiB cap, and once took libyaml from seconds to
# minutes (100,000 nested "[" took 73 s).
HOSTILE = {
    "flow-lists": ("services: " + "[" * 100000, 1,
                   "lists and mappings nested too deeply (max 32)"),
    "flow-maps": ("services: " + "{" * 100000, 1,
                  "lists and mappings nested too deeply (max 32)"),
    "flow-mixed": ("services: " + "[{" * 50000, 1,
                   "lists and mappings nested too deeply (max 32)"),
    "block-lists": ("services:\n" + "- " * 100000, 2,
                    "lists and mappings nested too deeply (max 32)"),
    "block-maps": (_block_maps(2000), 33,
                   "lists and mappings nested too deeply (max 32)"),
    "anchors": ("x: [" + ", ".join(f"&a{i} v" for i in range(200000))
                + "]\n", 1, 'unknown key "x"'),
    "directives": ("".join(f"%TAG !t{i}! tag:x:\n" for i in range(100000))
                   + "---\nservices: []\n", 17,
                   "too many YAML directives (max 16)"),
    "alias-bomb": (_alias_bomb(), 5,
                   "aliases expand the document to too many nodes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_is_refused_quickly(ferry_bin, tmp_path, case):
    """A file built to make the YAML parser slow is refused, with its
    position, in time proportional to its size (the bound is generous for
    sanitizer builds; before the fix these took 3 s to minutes)."""
    text, line, msg = HOSTILE[case]
    assert len(text) < 4 << 20
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    limit = ft.scaled(5)
    start = time.monotonic()
    try:
        r = ft.run_ferry(["check-config", str(p)], timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"check-config took over {limit:.0f} s")
    took = time.monotonic() - start
    assert r.returncode == 1, r.stderr
    assert check_error(r.stderr, str(p), text, line).startswith(msg), r.stderr
    assert took < limit


# id -> (changes to GOOD, error line, message). What a reload would refuse
# (or apply wrongly), check-config refuses first.
OVERLAPS = {
    "wildcard-after-specific": (
        {22: "      - 0.0.0.0:8080"}, 22,
        'listen 0.0.0.0:8080 of service "db" overlaps 127.0.0.1:8080 of '
        'service "web"'),
    "v6-wildcard": (
        {22: '      - "[::]:8080"'}, 22,
        'listen [::]:8080 of service "db" overlaps [::1]:8080 of service '
        '"web"'),
    "same-service": (
        {13: '    listen: [127.0.0.1:8080, "[::1]:8080", 0.0.0.0:8080]'}, 13,
        'listen 0.0.0.0:8080 of service "web" overlaps 127.0.0.1:8080 of '
        'service "web"'),
    "admin-listen": (
        {4: "drain_timeout: 30s\nadmin: {enabled: true, listen: "
            "127.0.0.1:5432}"}, 23,
        'listen 127.0.0.1:5432 of service "db" overlaps the admin server\'s '
        'listen 127.0.0.1:5432'),
    "admin-default-listen": (
        {4: "drain_timeout: 30s\nadmin: {enabled: true}",
         22: "      - 0.0.0.0:9990"}, 23,
        'listen 0.0.0.0:9990 of service "db" overlaps the admin server\'s '
        'listen 127.0.0.1:9990'),
    "healthz-listen": (
        {4: "drain_timeout: 30s\nkubernetes: {enabled: true}",
         22: "      - 127.0.0.1:10256"}, 23,
        'listen 127.0.0.1:10256 of service "db" overlaps '
        'node.healthz_listen 0.0.0.0:10256'),
    "v4-mapped": (
        {22: '      - "[::ffff:127.0.0.1]:5432"'}, 22,
        '"listen": an IPv4-mapped IPv6 address: write the IPv4 form'),
    "port-leading-zeros": (
        {22: "      - 127.0.0.1:00000000000000000005432"}, 22,
        '"listen": port must be written without leading zeros'),
}


@pytest.mark.parametrize("case", sorted(OVERLAPS))
def test_listen_conflicts_are_refused(ferry_bin, tmp_path, case):
    changes, line, msg = OVERLAPS[case]
    text = edit(GOOD, changes)
    p = tmp_path / f"{case}.yaml"
    p.write_text(text)
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 1, r.stdout + r.stderr
    got = check_error(r.stderr, str(p), text, line)
    assert got.startswith(msg), got


def test_listen_wildcards_of_both_families(ferry_bin, tmp_path):
    """IPv6 listeners are v6-only, so [::]:P beside 0.0.0.0:P is fine."""
    text = edit(GOOD, {13: '    listen: [0.0.0.0:8080, "[::]:8080"]'})
    p = tmp_path / "both.yaml"
    p.write_text(text)
    r = ft.run_ferry(["check-config", str(p)])
    assert r.returncode == 0, r.stderr
