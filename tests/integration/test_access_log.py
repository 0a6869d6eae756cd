"""Access log (README: "Access log"): one line per connection at its close,
text or JSON, to stderr, a file (reopened on SIGUSR1) or syslog over a
Unix datagram socket; lines that do not fit the buffer are dropped and
counted. Real sockets on loopback; the syslog socket is one the test
binds."""

import json
import os
import re
import signal
import socket

import admintest as at
import ferrytest as ft

LINE_RX = re.compile(r"^(\S+Z) (.*)$")


def with_access_log(cfg, **al):
    return ft.to_yaml({"access_log": al}) + "\n" + cfg


def parse_text(line):
    """A text line as a dict: time plus its key=value fields."""
    m = LINE_RX.match(line)
    assert m, line
    d = {"time": m.group(1)}
    for kv in m.group(2).split(" "):
        k, v = kv.split("=", 1)
        d[k] = v
    return d


def text_lines(path):
    try:
        with open(path) as f:
            return [parse_text(x) for x in f.read().splitlines() if x]
    except FileNotFoundError:
        return []


def wait_lines(path, n, parse=text_lines):
    return ft.wait_for(lambda: (lambda x: x if len(x) >= n else None)(
        parse(path)), what=f"{n} access log line(s) in {path}")


def by_service(lines, name):
    got = [x for x in lines if x["service"] == name]
    assert got, (name, lines)
    return got


def say_bye(backend, conn):
    """A backend that answers and closes first."""
    conn.sendall(b"bye\n")


def test_file_one_line_per_connection_with_its_cause(start_ferry, backends,
                                                     tmp_path):
    web = backends("b1")
    bye = backends("bye", handler=say_bye)
    dead = [ft.RefusingPort(), ft.RefusingPort()]
    addrs = {n: ft.free_addr() for n in
             ("web", "bye", "dead", "idle", "lim", "pp")}
    path = tmp_path / "access.log"
    cfg = ft.config([
        ft.service("web", addrs["web"], [web]),
        ft.service("bye", addrs["bye"], [bye]),
        ft.service("dead", addrs["dead"], [d.addr for d in dead], retries=1),
        ft.service("idle", addrs["idle"], [web], idle_timeout="200ms"),
        ft.service("lim", addrs["lim"], [web], max_connections=1),
        ft.service("pp", addrs["pp"], [web], accept_proxy=True),
    ])
    start_ferry(with_access_log(cfg, enabled=True, target="file",
                                path=str(path)))
    try:
        # Client close: greeting (3 bytes) plus the echo of 5 bytes.
        with ft.connect(addrs["web"]) as s:
            client_port = s.getsockname()[1]
            assert ft.read_line(s) == "b1"
            s.sendall(b"hello")
            assert ft.recv_exact(s, 5) == b"hello"
        # Server close.
        with ft.connect(addrs["bye"]) as s:
            assert ft.read_line(s) == "bye"
            ft.read_until_eof(s)
        # Connect failure after both backends refused (1 retry).
        assert ft.rejected_how(addrs["dead"]) == "reset"
        # Idle timeout.
        with ft.connect(addrs["idle"]) as s:
            assert ft.read_line(s) == "b1"
            assert ft.closed_how(s) == "eof"
        # Limit: one open, the second refused.
        with ft.connect(addrs["lim"]) as held:
            assert ft.read_line(held) == "b1"
            assert ft.rejected_how(addrs["lim"]) == "reset"
        # A malformed PROXY header, then a good one: the client is the
        # one it names.
        with ft.connect(addrs["pp"]) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert ft.closed_how(s) == "reset"
        s = ft.connect(addrs["pp"])
        s.sendall(b"PROXY TCP4 198.18.0.5 127.0.0.1 4000 80\r\n")
        assert ft.read_line(s) == "b1"
        ft.close_and_wait(s)
        lines = wait_lines(path, 8)
    finally:
        for d in dead:
            d.close()

    w = by_service(lines, "web")[0]
    assert w["client"] == f"127.0.0.1:{client_port}"
    assert w["backend"] == web.addr
    assert (w["cause"], w["bytes_up"], w["bytes_down"]) == \
        ("client_close", "5", "8")
    assert w["attempts"] == "1"
    assert float(w["connect_ms"]) >= 0
    assert float(w["duration_ms"]) >= 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", w["time"])
    assert int(w["id"]) > 0

    b = by_service(lines, "bye")[0]
    assert (b["cause"], b["bytes_down"]) == ("server_close", "4")

    d = by_service(lines, "dead")[0]
    assert (d["cause"], d["attempts"], d["connect_ms"], d["backend"]) == \
        ("connect_failure", "2", "-", "-")

    i = by_service(lines, "idle")[0]
    assert i["cause"] == "idle_timeout"
    assert float(i["duration_ms"]) >= 200

    lim = sorted(x["cause"] for x in by_service(lines, "lim"))
    assert lim == ["client_close", "limit"], lim
    refused = [x for x in by_service(lines, "lim") if x["cause"] == "limit"]
    assert (refused[0]["backend"], refused[0]["id"]) == ("-", "0")

    # Each worker writes its own lines: across workers the file's order is
    # not the connections' order, so lines are found by their cause.
    p = {x["cause"]: x for x in by_service(lines, "pp")}
    assert sorted(p) == ["client_close", "proxy_header_invalid"], p
    assert p["client_close"]["client"] == "198.18.0.5:4000"
    assert len(lines) == 8, lines


def test_json_and_reopen_on_sigusr1(start_ferry, backends, tmp_path):
    b = backends("b1")
    listen = ft.free_addr()
    path = tmp_path / "access.json"
    f = start_ferry(with_access_log(
        ft.config([ft.service("web", listen, [b])]), enabled=True,
        format="json", target="file", path=str(path)))

    def json_lines(p):
        try:
            with open(p) as fh:
                return [json.loads(x) for x in fh.read().splitlines()]
        except FileNotFoundError:
            return []

    assert ft.hello_done(listen) == "b1"
    first = wait_lines(path, 1, json_lines)
    assert sorted(first[0]) == sorted([
        "time", "id", "client", "service", "backend", "attempts",
        "connect_ms", "duration_ms", "bytes_up", "bytes_down", "cause"])
    assert first[0]["service"] == "web" and first[0]["backend"] == b.addr
    assert first[0]["cause"] == "client_close"
    assert isinstance(first[0]["bytes_down"], int)
    umask = os.umask(0o22)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o640 & ~umask

    # logrotate: rename, then SIGUSR1; the next line goes to a new file.
    rotated = tmp_path / "access.json.1"
    os.rename(path, rotated)
    off = f.log_size()
    f.signal(signal.SIGUSR1)
    f.wait_log(r"access log: reopened", start=off)
    assert ft.hello_done(listen) == "b1"
    second = wait_lines(path, 1, json_lines)
    assert second[0]["id"] != first[0]["id"]
    assert len(json_lines(rotated)) == 1


def test_syslog_over_unix_datagram_socket(start_ferry, backends, tmp_path):
    b = backends("b1")
    listen = ft.free_addr()
    sock_path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(ft.DEADLINE)
    try:
        f = start_ferry(with_access_log(
            ft.config([ft.service("web", listen, [b])]), enabled=True,
            target="syslog", syslog_socket=sock_path))
        assert ft.hello_done(listen) == "b1"
        msg = rx.recv(4096).decode()
        # The syslog daemon restarts (a new socket at the same path):
        # SIGUSR1 reconnects.
        rx.close()
        os.unlink(sock_path)
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(sock_path)
        rx.settimeout(ft.DEADLINE)
        off = f.log_size()
        f.signal(signal.SIGUSR1)
        f.wait_log(r"access log: reopened", start=off)
        assert ft.hello_done(listen) == "b1"
        assert "cause=client_close" in rx.recv(4096).decode()
    finally:
        rx.close()
    # RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG; local0.info
    m = re.match(r"^<134>1 \S+Z \S+ ferry \d+ - - (.*)$", msg)
    assert m, msg
    d = parse_text(m.group(1))
    assert (d["service"], d["cause"], d["backend"]) == \
        ("web", "client_close", b.addr)


def test_lines_dropped_under_pressure_are_counted(start_ferry, tmp_path):
    """A sink that takes nothing (a syslog socket nobody reads, with a
    tiny receive buffer) never slows the workers: the lines that do not
    fit the buffer are dropped, counted and reported."""
    listen, admin = ft.free_addr(), ft.free_addr()
    sock_path = str(tmp_path / "stuck.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    rx.bind(sock_path)
    n = 40
    try:
        cfg = ft.config([ft.service("deny", listen, ["127.0.0.1:9"],
                                    deny=["127.0.0.0/8"])],
                        relay={"workers": 1})
        f = start_ferry(at.with_admin(with_access_log(
            cfg, enabled=True, target="syslog", syslog_socket=sock_path,
            buffer=2), admin))
        for _ in range(n):
            assert ft.rejected_how(listen) == "reset"

        def counted():
            m = at.scrape(admin)
            got = (at.sample(m, "ferry_access_log_lines_total"),
                   at.sample(m, "ferry_access_log_dropped_total"))
            # Two lines may wait in the buffer for the sink.
            return got if sum(got) >= n - 2 else None
        written, dropped = ft.wait_for(counted, what="every line counted")
        # The socket took a dozen at most (max_dgram_qlen, 10 by default).
        assert dropped >= n - 2 - 16, (written, dropped)
        f.wait_log(r"access log: \d+ line\(s\) dropped")
        # The sink drains: lines flow again.
        rx.settimeout(ft.DEADLINE)
        rx.recv(4096)
    finally:
        rx.close()


def test_stderr_when_enabled_and_off_by_default(start_ferry, backends):
    b = backends("b1")
    on, off = ft.free_addr(), ft.free_addr()
    f_on = start_ferry(with_access_log(
        ft.config([ft.service("web", on, [b])]), enabled=True), name="on")
    f_off = start_ferry(ft.config([ft.service("web", off, [b])]), name="off")
    assert ft.hello_done(on) == "b1"
    assert ft.hello_done(off) == "b1"
    f_on.wait_log(r"id=\d+ client=127\.0\.0\.1:\d+ service=web .* "
                  r"cause=client_close")
    # The same connection was logged by "on"; "off" has closed its own
    # by now (its backend saw it end) and writes nothing about it.
    ft.wait_for(lambda: b.active == 0, what="backend connections closed")
    f_off.stop()
    assert "cause=" not in f_off.log_text()


def test_reload_turns_it_on_and_off(start_ferry, backends, tmp_path):
    b = backends("b1")
    listen = ft.free_addr()
    path = tmp_path / "access.log"
    cfg = ft.config([ft.service("web", listen, [b])])
    f = start_ferry(with_access_log(cfg, enabled=False, target="file",
                                    path=str(path)))
    assert ft.hello_done(listen) == "b1"
    off = f.reload(with_access_log(cfg, enabled=True, target="file",
                                   path=str(path)))
    f.wait_log(r"reload: applied", start=off)
    assert ft.hello_done(listen) == "b1"
    assert len(wait_lines(path, 1)) == 1  # the first came before
    off = f.reload(with_access_log(cfg, enabled=False, target="file",
                                   path=str(path), buffer=8))
    f.wait_log(r"access_log: buffer changed \(1024 to 8 lines\): it takes "
               r"effect at the next start", start=off)
    f.wait_log(r"reload: applied", start=off)
    assert ft.hello_done(listen) == "b1"
    # A reload that cannot open the sink keeps the old settings.
    off = f.reload(with_access_log(cfg, enabled=True, target="file",
                                   path=str(tmp_path / "no" / "such.log")))
    f.wait_log(r"access_log: cannot open .*such\.log.*keeps its previous",
               start=off)
    f.stop()
    assert len(text_lines(path)) == 1


def test_drain_reset_is_logged(start_ferry, backends, tmp_path):
    b = backends("b1")
    listen = ft.free_addr()
    path = tmp_path / "access.log"
    f = start_ferry(with_access_log(
        ft.config([ft.service("web", listen, [b])], drain_timeout="300ms"),
        enabled=True, target="file", path=str(path)))
    with ft.connect(listen) as s:
        assert ft.read_line(s) == "b1"
        assert f.stop() == 0
    lines = text_lines(path)
    assert [x["cause"] for x in lines] == ["drain_reset"], lines


def test_unopenable_file_fails_the_start(tmp_path):
    cfg = with_access_log(
        ft.config([ft.service("web", ft.free_addr(), ["127.0.0.1:9"])]),
        enabled=True, target="file", path=str(tmp_path / "no" / "a.log"))
    p = tmp_path / "c.yaml"
    p.write_text(cfg)
    r = ft.run_ferry(["-c", str(p)])
    assert r.returncode == 1
    assert "access_log: cannot open" in r.stderr
    p.write_text(with_access_log(
        ft.config([ft.service("web", ft.free_addr(), ["127.0.0.1:9"])]),
        enabled=True, target="syslog",
        syslog_socket=str(tmp_path / "none.sock")))
    r = ft.run_ferry(["-c", str(p)])
    assert r.returncode == 1
    assert "access_log: cannot reach syslog at" in r.stderr
