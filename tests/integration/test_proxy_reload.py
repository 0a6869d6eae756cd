"""SIGHUP reload: a valid file is applied whole without touching established
connections; an invalid one is rejected and the old config keeps serving."""

import re

import ferrytest as ft


def echo_ok(sock, text):
    sock.sendall(text.encode() + b"\n")
    assert ft.read_line(sock) == text


def test_good_then_bad_reload(start_ferry, backends):
    old, new = backends("old"), backends("new")
    keep_l, gone_l, add_l = ft.free_addr(), ft.free_addr(), ft.free_addr()
    f = start_ferry(ft.config([
        ft.service("keep", keep_l, [old]),
        ft.service("gone", gone_l, [old]),
    ]))

    with ft.connect(keep_l) as held:
        assert ft.read_line(held) == "old"
        echo_ok(held, "before reload")

        # --- a good reload: "keep" now uses "new" with leastconn, "gone"
        # is removed, "added" appears.
        off = f.reload(ft.config([
            ft.service("keep", keep_l, [new], balance="leastconn"),
            ft.service("added", add_l, [new, old]),
        ]))
        f.wait_log(r"reload: applied", start=off)
        assert "reload: rejected" not in f.log_text(off)

        echo_ok(held, "after good reload")  # untouched, still on "old"
        assert [ft.hello(keep_l) for _ in range(4)] == ["new"] * 4
        ft.wait_for(lambda: ft.is_refused(gone_l),
                    what=f"removed listener {gone_l} to close")
        f.wait_ready([add_l])
        assert [ft.hello(add_l) for _ in range(4)] == ["new", "old"] * 2

        # --- a bad reload: the file ends with an unknown key; it also names
        # a new listener, which must not be opened.
        bad_l = ft.free_addr()
        bad = ft.config([ft.service("bad", bad_l, [old])])
        bad_line = len(bad.splitlines()) + 1
        bad += "no_such_key: 1\n"
        off = f.reload(bad)
        m = f.wait_log(r"reload: rejected.*", start=off)
        path = re.escape(str(f.config_path))
        assert re.search(path + rf":{bad_line}:\d+: ", m.group(0)), \
            f"expected {f.config_path}:{bad_line}:COL: in {m.group(0)!r}"
        assert "reload: applied" not in f.log_text(off)

        echo_ok(held, "after bad reload")
        assert [ft.hello(keep_l) for _ in range(2)] == ["new"] * 2
        assert [ft.hello(add_l) for _ in range(2)] == ["new", "old"]
        assert ft.is_refused(bad_l)
        assert ft.is_refused(gone_l)
        assert f.alive()

        # --- the good file again is still accepted after a rejection.
        off = f.reload(ft.config([
            ft.service("keep", keep_l, [old, new]),
        ]))
        f.wait_log(r"reload: applied", start=off)
        ft.wait_for(lambda: ft.is_refused(add_l),
                    what=f"listener {add_l} to close")
        echo_ok(held, "after third reload")


def test_reload_moves_listener_between_services(start_ferry, backends):
    """The same address can move from one service to another in one reload
    (a whole-config swap, not add-then-remove)."""
    a, b = backends("a"), backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("first", listen, [a])]))
    assert ft.hello(listen) == "a"
    off = f.reload(ft.config([ft.service("second", listen, [b])]))
    f.wait_log(r"reload: applied", start=off)
    assert ft.hello(listen) == "b"


def test_reload_changes_weights(start_ferry, backends):
    a, b = backends("a"), backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("w", listen, [a, b])]))
    assert sorted(ft.hello(listen) for _ in range(2)) == ["a", "b"]
    off = f.reload(ft.config([ft.service("w", listen, [(a, 1), (b, 0)])]))
    f.wait_log(r"reload: applied", start=off)
    assert [ft.hello(listen) for _ in range(4)] == ["a"] * 4


def test_reload_refuses_deep_nesting_quickly(start_ferry, backends):
    """A reload with 100,000 nested "[" (once a minute-long stall of the
    control loop) is rejected at once, with the position, and the running
    configuration keeps serving."""
    a = backends("a")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("s", listen, [a])]))
    assert ft.hello(listen) == "a"
    for deep in ("services: " + "[" * 100000,
                 "services:\n" + "- " * 100000):
        off = f.reload(deep)
        m = f.wait_log(r"reload: rejected.*", start=off,
                       timeout=ft.scaled(5))
        assert re.search(re.escape(str(f.config_path))
                         + r":\d+:\d+: lists and mappings nested too deeply "
                           r"\(max 32\)", m.group(0)), m.group(0)
        assert "reload: applied" not in f.log_text(off)
        assert ft.hello(listen) == "a"
        assert f.alive()
