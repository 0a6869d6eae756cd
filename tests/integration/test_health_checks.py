"""Active health checks: HTTP and TCP checks take a backend out after
`fall` failures and bring it back after `rise` successes, each transition
logged once with its cause; drained, down and up states show in /status."""

import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402

CHECK = {"type": "http", "path": "/healthz", "expect_status": "200-299",
         "interval": "200ms", "timeout": "1s", "rise": 2, "fall": 3}


def names(listen, n):
    return Counter(ft.hello(listen) for _ in range(n))


def count_lines(f, pattern):
    return len(re.findall(pattern, f.log_text()))


def test_http_check_fall_and_rise(start_ferry, backends):
    ga, gb = at.HttpGreeter(), at.HttpGreeter()
    a, b = backends("web-a", handler=ga), backends("web-b", handler=gb)
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b])], health_check=CHECK), admin))
    at.wait_checks(gb, 2)
    assert set(names(listen, 4)) == {"web-a", "web-b"}

    gb.set_status(503)
    f.wait_log(r"health: backend web-b \(%s\) of service web is DOWN: "
               r"HTTP status 503 \(expected 200-299\) \(3 failed HTTP "
               r"check\(s\) in a row\)" % re.escape(b.addr))
    assert at.backend_state(admin, "web", "web-b")["state"] == "down"
    # Down: every new connection goes to web-a.
    assert names(listen, 8) == Counter({"web-a": 8})
    # More failed checks: still one DOWN line, no repeat.
    at.wait_checks(gb, 4)
    assert count_lines(f, r"web-b .* is DOWN") == 1

    gb.set_status(200)
    f.wait_log(r"health: backend web-b \(%s\) of service web is UP: 2 "
               r"passed HTTP check\(s\) in a row" % re.escape(b.addr))
    assert at.backend_state(admin, "web", "web-b")["state"] == "up"
    assert set(names(listen, 4)) == {"web-a", "web-b"}
    at.wait_checks(gb, 3)
    assert count_lines(f, r"web-b .* is UP") == 1
    assert count_lines(f, r"web-b .* is DOWN") == 1
    m = at.scrape(admin)
    lbl = {"service": "web", "backend": "web-b", "address": b.addr}
    assert at.sample(m, "ferry_backend_health_transitions_total",
                     to="down", **lbl) == 1
    assert at.sample(m, "ferry_backend_health_transitions_total",
                     to="up", **lbl) == 1
    assert at.sample(m, "ferry_backend_health_up", **lbl) == 1


def test_tcp_check_refused_then_listening(start_ferry, backends, closer):
    live = backends("live")
    port = closer(ft.RefusingPort())
    listen, admin = ft.free_addr(), ft.free_addr()
    check = {"type": "tcp", "interval": "100ms", "timeout": "500ms",
             "rise": 1, "fall": 2}
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("db", listen, [ft.backend_entry(port.addr, name="back"),
                                   live])], health_check=check), admin))
    f.wait_log(r"backend back .* of service db is DOWN: connect: "
               r"Connection refused \(2 failed TCP check")
    st = at.backend_state(admin, "db", "back")
    assert st["state"] == "down"
    assert st["health"]["checked"] is True
    assert "refused" in st["health"]["last_failure"]
    # The checks, not client connections, found it down: no client failed.
    assert names(listen, 5) == Counter({"live": 5})
    assert at.get_json(admin)["services"][0]["counters"]["failed"][
        "refused"] == 0
    backends("back", sock=port.take())
    f.wait_log(r"backend back .* of service db is UP: 1 passed TCP check")
    ft.wait_for(lambda: ft.hello(listen) == "back", what="back used again")


def test_checks_spread_and_stop_on_reload(start_ferry, backends):
    """Several backends' first checks do not all start at once, and
    removing health_check in a reload stops the checks and returns the
    backends to unchecked (up)."""
    gs = [at.HttpGreeter(status=500) for _ in range(4)]
    bs = [backends(f"s{i}", handler=g) for i, g in enumerate(gs)]
    listen, admin = ft.free_addr(), ft.free_addr()
    check = dict(CHECK, interval="2s", fall=1)
    text = ft.config([ft.service("spread", listen, bs)], health_check=check)
    f = start_ferry(at.with_admin(text, admin))
    # All four go down within one interval, at spread times: the DOWN
    # lines carry distinct timestamps spread over the interval.
    ft.wait_for(lambda: count_lines(f, r"is DOWN") == 4,
                timeout=ft.scaled(10), what="four DOWN lines")
    stamps = sorted(re.findall(r"(\d\d:\d\d:\d\d\.\d+)Z warn  health",
                               f.log_text()))
    secs = [int(s[:2]) * 3600 + int(s[3:5]) * 60 + float(s[6:])
            for s in stamps]
    assert secs[-1] - secs[0] >= 0.9, stamps  # spread over ~1.5 s of 2 s
    assert ft.rejected_how(listen) == "reset"  # all down: no backend
    off = f.reload(at.with_admin(ft.config(
        [ft.service("spread", listen, bs)]), admin))
    f.wait_log(r"reload: applied", start=off)
    st = at.get_json(admin)["services"][0]
    assert st["health_check"]["type"] == "none"
    assert {b["state"] for b in st["backends"]} == {"up"}
    assert {b["health"]["checked"] for b in st["backends"]} == {False}
    assert ft.hello(listen) in {"s0", "s1", "s2", "s3"}
