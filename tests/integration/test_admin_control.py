"""Runtime control through the admin server: drain a backend (no new
connections, the open one continues), enable it again, set its weight,
and keep both across a SIGHUP reload until reset."""

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402


def names(listen, n):
    return Counter(ft.hello(listen) for _ in range(n))


def post(admin, path):
    return at.http(admin, "POST", path)


def test_drain_keeps_open_connection(start_ferry, backends, closer):
    a, b = backends("web-a"), backends("web-b")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b])]), admin))
    held = closer(ft.connect(listen))
    assert ft.read_line(held) == "web-a"
    status, _, body = post(admin, "/backends/web/web-a/drain")
    assert status == 200, body
    assert b'"state": "draining"' in body
    f.wait_log(r"admin: backend web-a \(.*\) of service web drained: no new "
               r"connections, 1 open continue")
    assert names(listen, 6) == Counter({"web-b": 6})
    # The open connection still relays both ways.
    held.sendall(b"still here\n")
    assert ft.read_line(held) == "still here"
    st = at.backend_state(admin, "web", "web-a")
    assert st["state"] == "draining" and st["active"] == 1
    # Enable: web-a takes connections again.
    status, _, _ = post(admin, "/backends/web/web-a/enable")
    assert status == 200
    assert set(names(listen, 4)) == {"web-a", "web-b"}
    held.sendall(b"bye\n")
    assert ft.read_line(held) == "bye"


def test_weight_persists_across_reload(start_ferry, backends):
    a, b, c = backends("w-a"), backends("w-b"), backends("w-c")
    listen, admin = ft.free_addr(), ft.free_addr()
    f = start_ferry(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b])]), admin))
    # By address as well as by name.
    status, _, body = post(admin, f"/backends/web/{a.addr}/weight?value=3")
    assert status == 200, body
    assert names(listen, 8) == Counter({"w-a": 6, "w-b": 2})
    st = at.backend_state(admin, "web", "w-a")
    assert (st["weight"], st["config_weight"]) == (3, 1)
    assert post(admin, "/backends/web/w-b/drain")[0] == 200

    # A reload that changes the service (a new backend, a new policy):
    # the overrides stay.
    off = f.reload(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b, c], idle_timeout="10m")]), admin))
    f.wait_log(r"reload: applied", start=off)
    assert names(listen, 8) == Counter({"w-a": 6, "w-c": 2})
    assert at.backend_state(admin, "web", "w-a")["weight"] == 3
    assert at.backend_state(admin, "web", "w-b")["state"] == "draining"

    # A table where w-a is gone, then back: still overridden until reset.
    off = f.reload(at.with_admin(ft.config(
        [ft.service("web", listen, [b, c])]), admin))
    f.wait_log(r"reload: applied", start=off)
    assert names(listen, 3) == Counter({"w-c": 3})
    off = f.reload(at.with_admin(ft.config(
        [ft.service("web", listen, [a, b, c])]), admin))
    f.wait_log(r"reload: applied", start=off)
    assert at.backend_state(admin, "web", "w-a")["weight"] == 3

    for n in ("w-a", "w-b"):
        assert post(admin, f"/backends/web/{n}/reset")[0] == 200
    got = names(listen, 9)
    assert got == Counter({"w-a": 3, "w-b": 3, "w-c": 3}), got
    f.wait_log(r"admin: backend w-a .* reset to its configuration")


def test_control_errors(start_ferry, backends):
    a = backends("e-a")
    listen, admin = ft.free_addr(), ft.free_addr()
    start_ferry(at.with_admin(ft.config([ft.service("web", listen, [a])]),
                              admin))
    assert post(admin, "/backends/web/nobody/drain")[0] == 404
    assert post(admin, "/backends/nosvc/e-a/drain")[0] == 404
    assert post(admin, "/backends/web/e-a/explode")[0] == 404
    assert post(admin, "/backends/web/e-a/weight")[0] == 400
    assert post(admin, "/backends/web/e-a/weight?value=257")[0] == 400
    assert post(admin, "/backends/web/e-a/weight?value=-1")[0] == 400
    status, headers, _ = at.http(admin, "GET", "/backends/web/e-a/drain")
    assert status == 405 and headers["allow"] == "POST"
    status, headers, _ = at.http(admin, "POST", "/metrics")
    assert status == 405 and "GET" in headers["allow"]
    # Nothing changed.
    assert at.backend_state(admin, "web", "e-a")["state"] == "up"
    assert ft.hello(listen) == "e-a"
