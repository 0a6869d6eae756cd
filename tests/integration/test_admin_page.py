"""The status page in a real browser: headless Chromium (Debian's
chromium) loads it from the admin server, runs its script, and shows the
real backend names; a counter changes between two loads. A screenshot is
kept in the test's directory. A UDP service shows its flows. A service
links to its explanation, which the page shows."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
from test_udp import Client, UdpBackend, udp_bound  # noqa: E402

# Once, in the release pass: what these tests add is the page's script in
# a browser (Chromium's CPU, the same page in every build). Ferry's side
# of it runs under the sanitizers elsewhere: GET / (test_admin_security),
# /status with its 1,000-backend cap (test_admin_http), /explain
# (test_explain, test_explain_live), UDP flow counters (test_udp).
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="the page's script in Chromium: once, in the release pass")


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium; "
                "deploy/install-deps test installs it)")


def browse(tmp_path, url, tag, extra=()):
    """Run headless Chromium on <url>; returns its stdout (the DOM)."""
    profile = tmp_path / f"profile-{tag}"
    profile.mkdir()
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=4000",
           *extra, url]
    env = dict(os.environ, HOME=str(tmp_path))
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env,
                           timeout=ft.scaled(90), cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish in {ft.scaled(90)} s")
    if r.returncode != 0 and "--screenshot" not in " ".join(extra):
        pytest.fail(f"chromium exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def accepted(dom):
    m = re.search(r"accepted (\d+)", dom)
    assert m, dom[-3000:]
    return int(m.group(1))


def test_status_page_in_chromium(start_ferry, backends, tmp_path):
    chromium()
    a, b = backends("page-alpha"), backends("page-beta")
    u = UdpBackend("page-udp")
    listen, admin = ft.free_addr(), ft.free_addr()
    try:
        page(start_ferry, a, b, u, listen, admin, tmp_path)
    finally:
        u.close()


def test_status_page_says_what_it_left_out(start_ferry, tmp_path):
    """A service of 1,001 backends (never connected to): /status lists
    the first 1,000 and the page says one more was left out (README:
    Admin server)."""
    chromium()
    admin = ft.free_addr()
    wide = [f"127.3.{i // 256}.{i % 256}:9" for i in range(1001)]
    start_ferry(at.with_admin(ft.config(
        [ft.service("wide", ft.free_addr(), wide)]), admin))
    dom = browse(tmp_path, f"http://{admin}/", "w", ["--dump-dom"])
    assert "service wide" in dom
    assert "\u2026 and 1 more, not listed" in dom, dom[-3000:]
    assert "127.3.3.231:9" in dom and "127.3.3.232:9" not in dom


def page(start_ferry, a, b, u, listen, admin, tmp_path):
    # A UDP service beside the TCP one (README: UDP services): its flows
    # on the page too.
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("shop", listen, [a, b]),
         ft.service("dns", listen, [u.addr], protocol="udp")]), admin))
    port = ft.parse_addr(listen)[2]
    ft.wait_for(lambda: udp_bound(f.pid, port), what="udp bound")
    for _ in range(2):
        c = Client()
        try:
            assert c.ask(listen)[0] == "page-udp"
        finally:
            c.close()
    url = f"http://{admin}/"
    # Self-contained: no outside assets.
    status, headers, body = at.http(admin, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert not re.search(rb"(src|href)=\"?(https?:)?//", body)

    for _ in range(3):
        ft.hello(listen)
    dom1 = browse(tmp_path, url, "1", ["--dump-dom"])
    assert "page-alpha" in dom1 and "page-beta" in dom1, dom1[-3000:]
    assert "service shop" in dom1
    assert "service dns" in dom1 and "udp flows 2 \u00b7 open 2" in dom1
    assert a.addr in dom1
    n1 = accepted(dom1)
    assert n1 >= 3

    for _ in range(4):
        ft.hello(listen)
    dom2 = browse(tmp_path, url, "2", ["--dump-dom"])
    n2 = accepted(dom2)
    assert n2 == n1 + 4, (n1, n2)

    # Each service links to its explanation, shown in the page from
    # /explain's answer (README: ferry explain).
    assert f'href="#explain/{listen}/tcp"' in dom1, dom1[-3000:]
    dom3 = browse(tmp_path, f"{url}#explain/{listen}/tcp", "x", ["--dump-dom"])
    assert f"explain {listen}/tcp" in dom3, dom3[-3000:]
    assert re.search(r'data-verdict="page-alpha"><td class="l">page-alpha'
                     r'</td><td class="l">[^<]+</td><td>serving</td>', dom3)
    assert re.search(r'class="explain-next">next: page-(alpha|beta) ', dom3)

    shot = tmp_path / "status.png"
    browse(tmp_path, url, "3", [f"--screenshot={shot}",
                                "--window-size=1280,800"])
    assert shot.exists() and shot.stat().st_size > 2000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
