"""Who may drive the admin API (issue 22, points 3 and 8).

- Reads (/healthz, /readyz, /metrics, /status, /) are open to whoever
  reaches the port.
- A control request is refused (403) unless it carries X-Ferry-Control: 1,
  a Host naming the admin address (its IP:PORT, [v6]:PORT, or
  localhost:PORT on loopback) and no Origin but the admin's own: what a
  web page in a browser on the admin host can send cross-site (a plain
  POST, a foreign Origin, a rebound host name) never drains a backend.
- With admin.token_file, control needs "Authorization: Bearer TOKEN"
  (401 otherwise); the file is read when the config is loaded (start,
  reload, check-config): one that cannot be used fails the load, so a
  start exits 1, check-config says why, and a reload is rejected with the
  token in force kept.
- A repeated or unknown query parameter is 400.
- A storm of control requests logs a bounded number of lines; every
  action is counted in ferry_admin_actions_total.

Run: /usr/bin/python3 -m pytest tests/integration/test_admin_security.py
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
from ferrytest import wait_for  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"
TOKEN = "f3rry-Adm1n-t0ken.9c1e"


def dl(seconds):
    return ft.scaled(seconds) * (3 if SANITIZED else 1)


def raw_post(admin, path, headers, host=None):
    """Status of a POST with exactly <headers> (and a Host of <host>, the
    admin address by default; "" for none)."""
    host = admin if host is None else host
    lines = [f"POST {path} HTTP/1.1"]
    if host:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers] + ["Content-Length: 0"]
    reply = at.raw(admin, ("\r\n".join(lines) + "\r\n\r\n").encode())
    return at.status_code(reply), reply


def state(admin, name="b1"):
    b = at.backend_state(admin, "web", name)
    return b["state"], b["weight"]


@pytest.fixture
def served(start_ferry, backends, tmp_path):
    """ferry with one service of two backends and the admin server on
    127.0.0.1; returns (ferry, admin address, config text maker)."""
    b1, b2 = backends("b1"), backends("b2")
    listen, admin = ft.free_addr(), ft.free_addr()

    def text(extra=""):
        return at.with_admin(ft.config([ft.service("web", listen,
                                                   [b1, b2])]),
                             admin) + extra
    f = start_ferry(text())
    wait_for(lambda: at.http(admin, "GET", "/healthz")[0] == 200, dl(10),
             "admin server up")
    return f, admin, text


CTRL = ("X-Ferry-Control", "1")


def test_cross_site_requests_refused(served):
    """What a browser sends for a page of another site: a form POST
    (no custom header), a fetch() with a foreign Origin, a rebound host
    name. None of them changes anything."""
    f, admin, _ = served
    _, host, port = ft.parse_addr(admin)
    path = "/backends/web/b1/drain"
    form = ("Content-Type", "application/x-www-form-urlencoded")
    cases = [
        # A plain cross-site form post: Origin and no custom header.
        [form, ("Origin", "http://evil.example")],
        # The same without Origin (older browsers, or Origin stripped).
        [form],
        # A foreign Origin with the header (as after a granted preflight).
        [CTRL, ("Origin", "http://evil.example")],
        [CTRL, ("Origin", "null")],
        [CTRL, ("Origin", f"http://{host}:{port + 1}")],
        [CTRL, ("Origin", f"https://{host}:{port}")],
        [CTRL, ("Origin", f"http://{host}:{port}"), ("Origin", "http://x")],
        # Two or a wrong X-Ferry-Control.
        [("X-Ferry-Control", "0")],
        [CTRL, CTRL],
    ]
    for hdrs in cases:
        status, reply = raw_post(admin, path, hdrs)
        assert status == 403, (hdrs, reply[:300])
    # DNS rebinding: the page's own name in Host, or a wrong port.
    for h in ["evil.example", f"evil.example:{port}", f"{host}:{port + 1}",
              f"127.0.0.9:{port}", f"localhost.evil.example:{port}", "",
              f"[::1]:{port}", f"{host}:{port}:{port}"]:
        status, reply = raw_post(admin, path, [CTRL], host=h)
        assert status == 403, (h, reply[:300])
    assert b"Host header" in raw_post(admin, path, [CTRL], host="x")[1]
    assert state(admin) == ("up", 1)
    f.wait_log(r"admin: refused a control request: control requests from "
               r"another origin are refused")
    m = at.scrape(admin)
    assert at.sample(m, "ferry_admin_control_refused_total") == \
        len(cases) + 9
    assert at.sample(m, "ferry_admin_actions_total") == 0


def test_own_origin_and_host_forms_accepted(served):
    f, admin, _ = served
    _, host, port = ft.parse_addr(admin)
    path = "/backends/web/b1/weight?value=4"
    for h, extra in [(admin, []),
                     (f"localhost:{port}", []),
                     (f"LocalHost:{port}", []),
                     (admin, [("Origin", f"http://{admin}")]),
                     (admin, [("Origin", f"http://localhost:{port}")])]:
        status, reply = raw_post(admin, path, [CTRL] + extra, host=h)
        assert status == 200, (h, extra, reply[:300])
    assert state(admin) == ("up", 4)
    # at.http sends the header by itself; curl users add -H.
    assert at.http(admin, "POST", "/backends/web/b1/reset")[0] == 200
    assert state(admin) == ("up", 1)


def test_ipv6_host_forms(start_ferry, backends):
    if not ft.have_ipv6():
        pytest.skip("no IPv6 loopback")
    b = backends("b1")
    admin = ft.free_addr("::1")
    start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin))
    wait_for(lambda: at.http(admin, "GET", "/healthz")[0] == 200, dl(10),
             "admin server up")
    port = ft.parse_addr(admin)[2]
    for h, want in [(f"[::1]:{port}", 200),
                    (f"[0:0:0:0:0:0:0:1]:{port}", 200),
                    (f"localhost:{port}", 200),
                    (f"[::2]:{port}", 403), (f"::1:{port}", 403),
                    (f"127.0.0.1:{port}", 403), (f"[::1]", 403)]:
        status, reply = raw_post(admin, "/backends/web/b1/drain", [CTRL],
                                 host=h)
        assert status == want, (h, reply[:300])


def test_wildcard_listener_takes_its_addresses(start_ferry, backends):
    """On 0.0.0.0 the admin server is every IPv4 address of the host:
    any IP literal with its port names it, a host name still does not."""
    b = backends("b1")
    port = ft.free_port("0.0.0.0")
    admin = ft.fmt_addr("0.0.0.0", port)
    start_ferry(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), [b])]), admin))
    local = ft.fmt_addr("127.0.0.1", port)
    wait_for(lambda: at.http(local, "GET", "/healthz")[0] == 200, dl(10),
             "admin server up")
    for h, want in [(f"127.0.0.1:{port}", 200), (f"127.0.0.7:{port}", 200),
                    (f"localhost:{port}", 200),
                    (f"evil.example:{port}", 403),
                    (f"[::1]:{port}", 403)]:
        status, reply = raw_post(local, "/backends/web/b1/enable", [CTRL],
                                 host=h)
        assert status == want, (h, reply[:300])


def test_query_parameters_strict(served):
    f, admin, _ = served
    for q in ["weight?value=5&value=200", "weight?value=5&other=1",
              "weight?value=5&", "weight?Value=5", "drain?now=1",
              "enable?x", "reset?value=1"]:
        status, _, body = at.http(admin, "POST", f"/backends/web/b1/{q}")
        assert status == 400, (q, status, body)
        assert body == b"unknown or repeated query parameter\n", q
    assert state(admin) == ("up", 1)
    # One spelling per number, as in the config.
    status, _, body = at.http(admin, "POST",
                              "/backends/web/b1/weight?value=0005")
    assert status == 400, body
    assert state(admin) == ("up", 1)
    assert at.http(admin, "POST",
                   "/backends/web/b1/weight?value=5")[0] == 200
    assert state(admin) == ("up", 5)


def test_reads_stay_open_without_headers(served):
    """No header, no token: the read endpoints answer as before."""
    f, admin, _ = served
    for path in ["/healthz", "/readyz", "/metrics", "/status", "/"]:
        status = at.raw(admin, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        assert at.status_code(status) == 200, path


# --------------------------------------------------------------- token


def bearer(tok):
    return ("Authorization", f"Bearer {tok}")


def test_token(served, tmp_path):
    f, admin, text = served
    tf = tmp_path / "admin-token"
    tf.write_text(TOKEN + "\n")
    off = f.reload(text(f"  token_file: {tf}\n"))
    f.wait_log(r"reload: applied", off, dl(10))
    f.wait_log(r"admin: control requests need the bearer token of ", off)
    path = "/backends/web/b1/drain"
    status, reply = raw_post(admin, path, [CTRL])
    assert status == 401, reply[:300]
    assert b"\r\nWWW-Authenticate: Bearer" in reply
    for auth in [bearer("wrong"), bearer(TOKEN[:-1]), bearer(TOKEN + "x"),
                 ("Authorization", TOKEN), ("Authorization", "Basic x"),
                 bearer(TOKEN.upper())]:
        assert raw_post(admin, path, [CTRL, auth])[0] == 401, auth
    # Two Authorization lines are refused even when one is right.
    assert raw_post(admin, path,
                    [CTRL, bearer(TOKEN), bearer("x")])[0] == 401
    # The token does not replace the other checks.
    assert raw_post(admin, path, [bearer(TOKEN)])[0] == 403
    assert state(admin) == ("up", 1)
    status, reply = raw_post(admin, path, [CTRL, bearer(TOKEN)])
    assert status == 200, reply[:300]
    assert raw_post(admin, "/backends/web/b1/enable",
                    [CTRL, ("authorization", "bearer " + TOKEN)])[0] == 200
    # Reads stay open.
    assert at.http(admin, "GET", "/status")[0] == 200
    assert at.http(admin, "GET", "/metrics")[0] == 200
    # Read on reload, not per request: a new token counts after SIGHUP.
    tf.write_text("  second-" + TOKEN + "\n\n")
    assert raw_post(admin, path, [CTRL, bearer(TOKEN)])[0] == 200
    off = f.reload()
    f.wait_log(r"reload: applied", off, dl(10))
    assert raw_post(admin, path, [CTRL, bearer(TOKEN)])[0] == 401
    assert raw_post(admin, "/backends/web/b1/enable",
                    [CTRL, bearer("second-" + TOKEN)])[0] == 200
    # A file that cannot be read on reload: the reload is rejected, the
    # token in force stays.
    tf.unlink()
    off = f.reload()
    f.wait_log(r"reload: rejected .*cannot open admin.token_file "
               r".*admin-token: No such file or directory; keeping "
               r"generation", off, dl(10))
    assert raw_post(admin, path, [CTRL])[0] == 401
    assert raw_post(admin, path, [CTRL, bearer("second-" + TOKEN)])[0] == 200
    # No token_file: control needs no token again.
    off = f.reload(text())
    f.wait_log(r"admin: control requests no longer need a token", off,
               dl(10))
    assert raw_post(admin, "/backends/web/b1/enable", [CTRL])[0] == 200


@pytest.mark.parametrize("content,why", [
    (None, r"cannot open admin.token_file .*: No such file or directory"),
    ("", r"admin.token_file .* is empty"),
    (" \n\t\n", r"admin.token_file .* is empty"),
    ("two words\n", r"admin.token_file .*: the token holds a space or a "
                     r"byte that is not visible ASCII"),
    ("x" * 5000, r"admin.token_file .*: the token is longer than 4096 "
                 r"bytes"),
], ids=["missing", "empty", "blank", "space", "long"])
def test_bad_token_file_fails_the_load(ferry_bin, tmp_path, content, why):
    """A token file that cannot be used fails the config: check-config
    says why and exits 1, and ferry refuses to start with it (control
    is never left open, nor silently off)."""
    tf = tmp_path / "token"
    if content is not None:
        tf.write_text(content)
    cfg = tmp_path / "ferry.yaml"
    cfg.write_text(at.with_admin(
        ft.config([ft.service("web", ft.free_addr(), ["127.0.0.1:9"])]),
        ft.free_addr()) + f"  token_file: {tf}\n")
    r = subprocess.run([ferry_bin, "check-config", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and re.search(why, r.stdout + r.stderr), r
    r = subprocess.run([ferry_bin, "-c", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and re.search(why, r.stderr), r


# --------------------------------------------------------------- log storm


def test_action_log_rate_limited(served):
    """2,000 control requests: every one applied and counted, but the log
    gets a burst of 10 action lines and about one a second after that,
    each preceded by a line saying how many were not logged since."""
    f, admin, _ = served
    off = f.log_size()
    t0 = time.monotonic()
    for i in range(2000):
        action = "drain" if i % 2 == 0 else "enable"
        st = at.http(admin, "POST", f"/backends/web/b1/{action}",
                     timeout=dl(5))[0]
        assert st == 200, (i, st)
        assert time.monotonic() - t0 < dl(120), "the storm took too long"
    took = time.monotonic() - t0
    assert state(admin) == ("up", 1)  # the last one was enable
    m = at.scrape(admin)
    assert at.sample(m, "ferry_admin_actions_total") == 2000
    summary = re.compile(r"admin: (\d+) action\(s\) not logged \(rate "
                         r"limit\); (\d+) in all so far")
    # The count of left-out actions comes with the next line logged: a
    # storm shorter than a second needs one more action, a moment later.
    off2 = f.log_size()

    def one_more():
        assert at.http(admin, "POST",
                       "/backends/web/b1/weight?value=2")[0] == 200
        return summary.search(f.log_text(off2))
    wait_for(one_more, dl(10), "a line counting the actions not logged",
             interval=0.25)
    log = f.log_text(off)
    lines = [ln for ln in log.splitlines()
             if re.search(r"admin: (backend |\d+ action)", ln)]
    bound = 2 * (10 + int(time.monotonic() - t0) + 2)
    assert 10 <= len(lines) <= bound, (len(lines), took, lines[:20])
    # Each summary line accounts for every action up to the one logged
    # right after it: logged lines plus those it and earlier ones counted.
    logged = skipped = 0
    last = None
    for ln in lines:
        got = summary.search(ln)
        if got:
            skipped += int(got.group(1))
            last = int(got.group(2))
        else:
            logged += 1
            if last is not None:
                assert logged + skipped == last, (logged, skipped, last)
                last = None
    assert skipped > 0, "no line counted the actions not logged"
    assert last is None  # the last summary was checked
