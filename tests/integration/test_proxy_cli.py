"""Command line: --version, --help, --config, and the log overrides."""

import json
import re
import socket

import pytest

import ferrytest as ft


def test_version_and_help(ferry_bin):
    v = ft.run_ferry(["--version"])
    assert v.returncode == 0, v.stderr
    assert re.search(r"\d+\.\d+", v.stdout + v.stderr), "no version number"
    h = ft.run_ferry(["--help"])
    assert h.returncode == 0, h.stderr
    text = h.stdout + h.stderr
    for word in ("--config", "check-config", "--log-level", "--log-format"):
        assert word in text, f"--help does not mention {word}"


def test_long_config_option(start_ferry, backends):
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("s", listen, [b])]),
                    config_flag="--config")
    assert ft.hello(listen) == "b"
    assert f.stop() == 0


def test_log_format_json_override(start_ferry, backends):
    """--log-format json wins over format: text in the file: every log line
    is a JSON object, and the reload line is among them."""
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("s", listen, [b])],
                              log_format="text"),
                    args=["--log-format", "json"])
    off = f.reload()
    f.wait_log(r"reload: applied", start=off)
    lines = [ln for ln in f.log_text().splitlines() if ln.strip()]
    assert lines
    for ln in lines:
        obj = json.loads(ln)
        assert isinstance(obj, dict), ln
    assert any("reload: applied" in json.dumps(json.loads(ln))
               for ln in lines)


def test_log_level_override(start_ferry, backends):
    """--log-level error wins over level: debug in the file: an applied
    reload (informational) leaves no line, while the reload itself
    happens."""
    a, b = backends("a"), backends("b")
    l1, l2 = ft.free_addr(), ft.free_addr()
    f = start_ferry(ft.config([ft.service("s", l1, [a])], log_level="debug"),
                    args=["--log-level", "error"])
    f.reload(ft.config([ft.service("s", l1, [a]),
                        ft.service("t", l2, [b])], log_level="debug"))
    f.wait_ready([l2])
    assert ft.hello(l2) == "b"
    assert "reload: applied" not in f.log_text()


def test_builtin_demo_config(start_ferry, backends):
    """ferry with no -c runs the built-in demo: 127.0.0.1:8080 over
    backends on 127.0.0.1:9001-9003. Fixed ports, so skipped when any of
    them is taken."""
    socks = []
    try:
        for port in (9001, 9002, 9003):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                pytest.skip(f"port {port} is in use")
            socks.append(s)
        if not ft.is_refused("127.0.0.1:8080", timeout=1):
            pytest.skip("port 8080 is in use")
    except BaseException:
        for s in socks:
            s.close()
        raise
    bs = [backends(f"web-{i}", sock=s) for i, s in enumerate(socks, 1)]
    f = start_ferry("", config_flag=None, wait=False)
    f.wait_ready(["127.0.0.1:8080"])
    assert [ft.hello("127.0.0.1:8080") for _ in range(3)] == \
        [b.name for b in bs]
    assert f.stop() == 0
