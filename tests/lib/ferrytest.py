"""Helpers for driving the real ferry binary in integration tests.

Everything here is plain Python and the standard library, so any test file
(proxy, watcher, kapisim, bench) can import it:

- Ferry: start ferry from a generated config, wait until it listens, send it
  signals, read its log, stop it by PID.
- Backend: a small TCP server in the test process (one thread per
  connection) that greets with its name, echoes, or runs a custom handler.
- client helpers: connect, read a line, read until EOF, expect a reset.
- wait_for: poll a condition with a deadline (never a fixed sleep).
- config/service/to_yaml: build a ferry YAML config from Python values.

Rules kept throughout: only 127.0.0.1 and ::1, every loop bounded in count
and time, every process stopped by its PID, generous deadlines so that a slow
(sanitizer) build passes as well as a fast one.
"""

import collections
import errno
import fcntl
import json
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Deadlines are generous on purpose: the suite also runs against an
# AddressSanitizer build. FERRY_TEST_SLOWDOWN multiplies them all.
SLOWDOWN = float(os.environ.get("FERRY_TEST_SLOWDOWN", "1") or "1")
DEADLINE = 15.0 * SLOWDOWN  # waiting for something that should happen
POLL = 0.02  # polling interval


def scaled(seconds):
    return seconds * SLOWDOWN


def ferry_bin():
    """Path of the ferry binary: $FERRY_BIN, else build/proxy/ferry."""
    env = os.environ.get("FERRY_BIN")
    if env:
        return str(Path(env).resolve())
    return str(REPO_ROOT / "build" / "proxy" / "ferry")


# --------------------------------------------------------------- polling


class Timeout(AssertionError):
    pass


def wait_for(pred, timeout=None, what="condition", interval=POLL):
    """Call pred() until it returns a true value, and return that value.

    Raises Timeout (an AssertionError) after <timeout> seconds. The loop is
    bounded in time and, through the interval, in count."""
    timeout = DEADLINE if timeout is None else timeout
    end = time.monotonic() + timeout
    max_rounds = int(timeout / max(interval, 0.001)) + 2
    last_exc = None
    for _ in range(max_rounds):
        try:
            v = pred()
            if v:
                return v
        except (OSError, ValueError) as e:
            last_exc = e
        if time.monotonic() >= end:
            break
        time.sleep(interval)
    msg = f"timed out after {timeout:.1f}s waiting for {what}"
    if last_exc is not None:
        msg += f" (last error: {last_exc!r})"
    raise Timeout(msg)


# --------------------------------------------------------------- addresses


def fmt_addr(host, port):
    """'127.0.0.1:80' or '[::1]:80'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(addr):
    """'127.0.0.1:80' or '[::1]:80' -> (family, host, port)."""
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]:")
        return socket.AF_INET6, host, int(port)
    host, _, port = addr.rpartition(":")
    return socket.AF_INET, host, int(port)


def have_ipv6():
    """True when a socket can be bound to ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# Ports for ferry to bind itself. A port found free and then closed could
# be taken by another test process (the other pytest-xdist worker, or a
# second run on the machine) before ferry binds it. So these ports come
# from 20000-29999, below the kernel's ephemeral range (which port 0 and
# outgoing connections draw from) and the NodePort range; each xdist
# worker starts in its own slice of 1000 (PYTEST_XDIST_WORKER: gw0, gw1,
# ...); and a port is handed out only while this process holds an flock
# on a lock file named after it (shared by every test process of the
# machine, dropped by the kernel when the process ends) and it can be
# bound right now. A process keeps its last PORT_HELD locks; an older
# port may go to another process only if nothing is bound there any more.
PORT_FIRST, PORT_LAST = 20000, 29999
PORT_SLICE = 1000
PORT_HELD = 512
PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "ferry-test-ports")
_port_lock = threading.RLock()
_port_held = collections.OrderedDict()  # port -> lock file descriptor
_port_next = None


def _worker_slice():
    """(first, last) port of this test process's slice."""
    w = os.environ.get("PYTEST_XDIST_WORKER", "")
    n = int(w[2:]) + 1 if re.fullmatch(r"gw\d+", w) else 0
    slices = (PORT_LAST + 1 - PORT_FIRST) // PORT_SLICE
    first = PORT_FIRST + (n % slices) * PORT_SLICE
    return first, first + PORT_SLICE - 1


def _bindable(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def claim_port(port, host="127.0.0.1"):
    """Reserve <port> for this process if no other test process holds it
    and <host> can bind it now; True when reserved (or already ours).

    Without a lock directory (not writable), only the bind check is left."""
    with _port_lock:
        if port in _port_held:
            return _bindable(host, port)
        fd = None
        try:
            os.makedirs(PORT_LOCK_DIR, mode=0o1777, exist_ok=True)
            fd = os.open(os.path.join(PORT_LOCK_DIR, str(port)),
                         os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False  # another test process has it
        if not _bindable(host, port):
            if fd is not None:
                os.close(fd)
            return False
        _port_held[port] = fd
        while len(_port_held) > PORT_HELD:
            _, old = _port_held.popitem(last=False)
            if old is not None:
                os.close(old)
        return True


def free_port(host="127.0.0.1"):
    """A port reserved for this test process that <host> can bind, for
    ferry to listen on (see PORT_FIRST above)."""
    global _port_next
    first, last = _worker_slice()
    span = last - first + 1
    with _port_lock:
        if _port_next is None or not first <= _port_next <= last:
            # Not always the slice's start: two runs without xdist share
            # a slice, and the locks sort them out faster from apart.
            _port_next = first + os.getpid() % span
        for _ in range(span):
            port = _port_next
            _port_next = first + (_port_next + 1 - first) % span
            if port not in _port_held and claim_port(port, host):
                return port
    raise RuntimeError(f"no free port in {first}-{last} on {host}")


def free_addr(host="127.0.0.1"):
    return fmt_addr(host, free_port(host))


class RefusingPort:
    """A port where connect() is refused: bound, never listening.

    Holding the bound socket keeps anyone else from taking the port for the
    life of the test. listen() turns it into a real backend later."""

    def __init__(self, host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.addr = fmt_addr(host, self.sock.getsockname()[1])

    def take(self):
        """Hand the bound socket over (e.g. to a Backend)."""
        s, self.sock = self.sock, None
        return s

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class BlackHole:
    """A listening socket whose accept queue is full, so the kernel drops
    new SYNs: a connect() to it neither succeeds nor fails until it times
    out. Works without root on loopback (the SYN is dropped while
    sk_ack_backlog > backlog)."""

    def __init__(self, host="127.0.0.1"):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.addr = fmt_addr(host, self.sock.getsockname()[1])
        self.fillers = []
        # Fill the accept queue: connects complete until it is full; the
        # first that does not complete shows the queue is full.
        for _ in range(16):
            c = socket.socket(fam, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect((host, self.sock.getsockname()[1]))
            except BlockingIOError:
                pass
            _, w, _ = select.select([], [c], [], scaled(0.3))
            if w and c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                self.fillers.append(c)
                continue
            c.close()
            return
        self.close()
        raise RuntimeError("could not fill the accept queue of a listener")

    def close(self):
        for c in self.fillers:
            c.close()
        self.fillers = []
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# --------------------------------------------------------------- clients


def connect(addr, timeout=None):
    """A connected client socket with a timeout on every operation."""
    fam, host, port = parse_addr(addr)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(DEADLINE if timeout is None else timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def read_line(sock, timeout=None, limit=4096):
    """Read up to and including b'\\n'; returns the line without it.

    Raises EOFError if the peer closes first, ConnectionResetError on RST,
    socket.timeout when nothing arrives in time."""
    timeout = DEADLINE if timeout is None else timeout
    end = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        if len(buf) > limit:
            raise ValueError(f"line longer than {limit} bytes: {buf[:80]!r}")
        left = end - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no full line after {timeout}s: {buf!r}")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(f"EOF before end of line: {buf!r}")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    if rest:
        raise ValueError(f"unexpected bytes after the line: {rest[:80]!r}")
    return line.decode()


def recv_exact(sock, n, timeout=None):
    timeout = DEADLINE if timeout is None else timeout
    end = time.monotonic() + timeout
    parts, got = [], 0
    while got < n:
        left = end - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"got {got} of {n} bytes in {timeout}s")
        sock.settimeout(left)
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError(f"EOF after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_until_eof(sock, timeout=None, limit=64 << 20):
    """All bytes until the peer's FIN. Raises on reset or timeout."""
    timeout = DEADLINE if timeout is None else timeout
    end = time.monotonic() + timeout
    parts, got = [], 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no EOF after {timeout}s ({got} bytes)")
        sock.settimeout(left)
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
        if got > limit:
            raise ValueError(f"more than {limit} bytes before EOF")


def closed_how(sock, timeout=None):
    """Wait for the peer to end the connection; returns 'reset' or 'eof'.

    Any data that arrives first is returned as ('data', bytes) instead, so a
    served connection is told apart from a rejected one. Raises
    socket.timeout if the connection just stays open."""
    timeout = DEADLINE if timeout is None else timeout
    sock.settimeout(timeout)
    try:
        chunk = sock.recv(4096)
    except ConnectionResetError:
        return "reset"
    if not chunk:
        return "eof"
    return ("data", chunk)


def rejected_how(addr, timeout=None):
    """Connect and see how the connection ends without sending anything:
    'reset' (also when the RST already fails the connect()), 'eof', or
    ('data', bytes) when it is served. Raises ConnectionRefusedError when
    nothing listens."""
    try:
        s = connect(addr, timeout)
    except ConnectionResetError:
        return "reset"
    with s:
        return closed_how(s, timeout)


def hello(addr, timeout=None):
    """Connect, read the backend's name line, close. Returns the name."""
    with connect(addr, timeout) as s:
        return read_line(s, timeout)


def hello_done(addr, timeout=None):
    """hello(), but the connection is ended cleanly and completely (our
    FIN, then the backend's FIN relayed back) before returning, so that
    ferry has finished with it when the next connection arrives."""
    s = connect(addr, timeout)
    try:
        name = read_line(s, timeout)
    except BaseException:
        s.close()
        raise
    close_and_wait(s, timeout)
    return name


def try_hello(addr, timeout=None, done=False):
    """Like hello(), but returns None instead of raising when the
    connection is refused, reset, closed or times out. With <done>, uses
    hello_done()."""
    try:
        return (hello_done if done else hello)(addr, timeout)
    except (OSError, EOFError, ValueError):
        return None


def is_refused(addr, timeout=2.0):
    """True when a connect() to <addr> is refused right now."""
    try:
        s = connect(addr, timeout)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


def close_and_wait(sock, timeout=None):
    """Half-close our side and wait for the peer's FIN (or reset), so that
    ferry and the backend have both seen the end of the connection."""
    try:
        sock.shutdown(socket.SHUT_WR)
        read_until_eof(sock, timeout)
    except OSError:
        pass
    finally:
        sock.close()


def set_linger_rst(sock):
    """Make close() send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    b"\x01\x00\x00\x00\x00\x00\x00\x00")


# --------------------------------------------------------------- listening


def _proc_listening(port, pid=None):
    """True if some socket on this host LISTENs on <port> (from
    /proc/net/tcp{,6}); with <pid>, it must be one of that process's fds."""
    inodes = set()
    # /proc/PID/net is the view of that process's network namespace.
    base = f"/proc/{pid}/net" if pid is not None else "/proc/net"
    for name in (f"{base}/tcp", f"{base}/tcp6"):
        try:
            with open(name) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            if len(parts) < 10 or parts[3] != "0A":
                continue
            if int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    if not inodes or pid is None:
        return bool(inodes)
    return holds_socket(pid, inodes)


def holds_socket(pid, inodes):
    """True if process <pid> has a descriptor on one of the sockets whose
    inode numbers (strings, as /proc/net/* print them) are in <inodes>."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


# --------------------------------------------------------------- backends


class Backend:
    """A TCP server in the test process, one thread per connection.

    handler(backend, conn) runs for each accepted connection; the socket is
    closed when it returns. Built-in handlers: "greet" (send the name and a
    newline, then echo until EOF), "echo" (echo until EOF). The counters
    accepted/active and the list records (for handlers to append to) are
    safe to read from the test thread."""

    def __init__(self, name="backend", handler="greet", host="127.0.0.1",
                 sock=None, backlog=128):
        self.name = name
        self.handler = {"greet": greet_echo, "echo": echo}.get(handler,
                                                                handler)
        if sock is None:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
        sock.listen(backlog)
        self.sock = sock
        h, port = sock.getsockname()[:2]
        self.addr = fmt_addr(h, port)
        self.lock = threading.Lock()
        self.accepted = 0
        self.active = 0
        self.records = []
        self.conns = set()
        self.threads = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"backend-{name}")
        self.thread.start()

    def __repr__(self):
        return f"<Backend {self.name} {self.addr}>"

    def _serve(self):
        while not self.stopping.is_set():
            try:
                r, _, _ = select.select([self.sock], [], [], 0.1)
                if not r:
                    continue
                conn, _ = self.sock.accept()
            except (OSError, ValueError):
                if self.stopping.is_set():
                    return
                time.sleep(0.01)
                continue
            with self.lock:
                self.accepted += 1
                self.active += 1
                self.conns.add(conn)
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            with self.lock:
                self.threads = [x for x in self.threads if x.is_alive()]
                self.threads.append(t)
            t.start()

    def _run(self, conn):
        try:
            self.handler(self, conn)
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.active -= 1
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        for t in threads:
            t.join(5)


def greet_echo(backend, conn):
    conn.sendall(backend.name.encode() + b"\n")
    echo(backend, conn)


def echo(backend, conn):
    for _ in range(1 << 30):
        data = conn.recv(1 << 16)
        if not data:
            return
        conn.sendall(data)


# --------------------------------------------------------------- config


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def write_kubeconfig(path, cluster, user=None):
    """A kubeconfig at <path> with one context: cluster <cluster> (a
    dict: server, certificate-authority-data...; or the server's URL) and
    user <user> (a dict, default none). Returns <path>."""
    if isinstance(cluster, str):
        cluster = {"server": cluster}
    path.write_text(to_yaml({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}],
        "contexts": [{"name": "c", "context": {"cluster": "k",
                                               "user": "u"}}],
        "users": [{"name": "u", "user": user or {}}],
    }) + "\n")
    return path


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (strings quoted)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:")
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                empty = "{}" if isinstance(v, dict) else "[]"
                out.append(f"{pad}{k}: {empty}")
            else:
                out.append(f"{pad}{k}: {_yaml_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2).split("\n")
                inner[0] = f"{pad}- " + inner[0][indent + 2:]
                out.extend(inner)
            else:
                out.append(f"{pad}- {_yaml_scalar(v)}")
    else:
        out.append(pad + _yaml_scalar(obj))
    return "\n".join(out)


def backend_entry(b, weight=None, name=None):
    """A backends: item for a Backend, RefusingPort, BlackHole or address."""
    addr = b if isinstance(b, str) else b.addr
    e = {"address": addr}
    if weight is not None:
        e["weight"] = weight
    bname = name if name is not None else getattr(b, "name", None)
    if bname:
        e["name"] = bname
    return e


def service(name, listen, backends, **opts):
    """A services: item. listen is an address or a list of them; backends
    are Backend objects, addresses, (backend, weight) pairs or dicts."""
    if isinstance(listen, str):
        listen = [listen]
    items = []
    for b in backends:
        if isinstance(b, dict):
            items.append(b)
        elif isinstance(b, tuple):
            items.append(backend_entry(*b))
        else:
            items.append(backend_entry(b))
    svc = {"name": name, "listen": list(listen)}
    svc.update(opts)
    svc["backends"] = items
    return svc


def config(services, drain_timeout="2s", log_level="info", log_format="text",
           relay=None, **defaults):
    """A whole ferry config. <relay> is the "relay:" section (a dict) or
    None; other keyword arguments go to defaults:."""
    d = {"balance": "roundrobin", "connect_timeout": "1s",
         "idle_timeout": "1h", "retries": 3, "max_connections": 0}
    d.update(defaults)
    top = {
        "log": {"level": log_level, "format": log_format},
        "drain_timeout": drain_timeout,
    }
    if relay is not None:
        top["relay"] = relay
    top["defaults"] = d
    top["services"] = services
    return to_yaml(top) + "\n"


# --------------------------------------------------------------- ferry


def listen_addrs(config_text):
    """The listen addresses of a config written by config() (best effort,
    for waiting until ferry is ready)."""
    found = []
    in_listen = False
    for ln in config_text.splitlines():
        s = ln.strip()
        if s.startswith("listen:"):
            rest = s[len("listen:"):].strip()
            if rest.startswith("["):
                found += [x.strip().strip('"') for x in
                          rest.strip("[]").split(",") if x.strip()]
                in_listen = False
            elif rest:
                # One address (a service's, or the admin server's
                # "listen:", which opens after the services).
                found.append(rest.strip('"'))
                in_listen = False
            else:
                in_listen = True
            continue
        if in_listen and s.startswith("- "):
            found.append(s[2:].strip().strip('"'))
        else:
            in_listen = False
    return found


class Ferry:
    """One ferry process, run from <workdir>, logging to <workdir>/NAME.log.

    The process is started by start() and always stopped by stop(); use the
    start_ferry fixture, which does both and attaches the log to a failing
    test's report."""

    def __init__(self, workdir, config_text=None, args=(), name="ferry",
                 rlimit_nofile=None, binary=None, prefix=(),
                 config_flag="-c"):
        self.workdir = Path(workdir)
        self.name = name
        self.binary = binary or ferry_bin()
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.args = list(args)
        # A command that execs ferry in place (e.g. ip netns exec NS), so
        # that the PID stays ferry's.
        self.prefix = list(prefix)
        self.config_flag = config_flag
        self.rlimit_nofile = rlimit_nofile
        self.proc = None
        self.config_text = None
        if config_text is not None:
            self.write_config(config_text)

    # -- lifecycle

    def write_config(self, text):
        """Replace the config file atomically (rename), as an operator's
        tooling would before a SIGHUP."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)
        self.config_text = text

    def _preexec(self):
        if self.rlimit_nofile is not None:
            import resource
            n = self.rlimit_nofile
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    def start(self, wait=True, timeout=None):
        cmd = self.prefix + [self.binary]
        if self.config_flag:  # None: no config option (the built-in demo)
            cmd += [self.config_flag, str(self.config_path)]
        cmd += self.args
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                cwd=str(self.workdir), close_fds=True,
                preexec_fn=self._preexec if self.rlimit_nofile else None)
        finally:
            logf.close()
        if wait:
            self.wait_ready(timeout=timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, addrs=None, timeout=None):
        """Wait until ferry listens on every address of its config.

        Readiness is read from /proc/net/tcp{,6} (a LISTEN socket owned by
        ferry's PID) rather than by connecting, so that no extra connection
        disturbs the balancing the test is about to check."""
        if addrs is None:
            addrs = listen_addrs(self.config_text or "")
        for a in addrs:
            port = parse_addr(a)[2]

            def ready(port=port):
                if not self.alive():
                    raise AssertionError(
                        f"ferry exited with {self.proc.returncode} before "
                        f"listening on {a}\n--- log ---\n{self.log_text()}")
                return _proc_listening(port, self.pid)
            wait_for(ready, timeout, f"ferry listening on {a}")

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def reload(self, text=None):
        """Optionally write a new config, then send SIGHUP. Returns the log
        offset before the signal, for wait_log()."""
        if text is not None:
            self.write_config(text)
        off = self.log_size()
        self.signal(signal.SIGHUP)
        return off

    def wait_exit(self, timeout=None):
        """Wait for the process to exit; returns its exit status."""
        timeout = DEADLINE if timeout is None else timeout
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"ferry (pid {self.pid}) still running after "
                          f"{timeout:.1f}s") from None

    def stop(self, timeout=None):
        """SIGTERM, wait, SIGKILL if needed. Returns the exit status, or
        None if it had to be killed. Safe to call twice."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        timeout = DEADLINE if timeout is None else timeout
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    # -- log

    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, start=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern, start=0, timeout=None):
        """Wait for a log line matching regex <pattern> after byte offset
        <start>; returns the match."""
        rx = re.compile(pattern)

        def found():
            return rx.search(self.log_text(start))
        return wait_for(found, timeout, f"ferry log line /{pattern}/")

    # -- resources

    def cpu_seconds(self):
        """utime+stime of the process, in seconds, from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            stat = f.read()
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15
        return ticks / os.sysconf("SC_CLK_TCK")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def run_ferry(args, timeout=None, **kw):
    """Run ferry to completion (check-config, --version, ...).

    Returns the CompletedProcess with text stdout/stderr."""
    timeout = DEADLINE if timeout is None else timeout
    return subprocess.run([ferry_bin()] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout,
                          **kw)


def errno_name(e):
    return errno.errorcode.get(getattr(e, "errno", None) or 0, repr(e))


def rss_kb(pid):
    """Resident memory of process <pid>, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError("no VmRSS")


def thread_nice(pid):
    """{thread name: nice value} of every thread of <pid>; the main
    thread is "control"."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        if int(tid) == pid:
            name = "control"
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[name] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out

