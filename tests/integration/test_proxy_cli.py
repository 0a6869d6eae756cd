"""Command line: --version, --help, --config, and the log overrides."""

import json
import re
import signal

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
