"""Start, stop and drive the simulated Kubernetes API server (kapisim).

Standard library only; run tests with /usr/bin/python3.

    from kapisim_client import start_sim, make_ca_and_cert

    sim = start_sim(tmpdir, tls=True, tokens={"abc123": "lb"},
                    bookmark_interval=0.2)
    try:
        sim.create("services", {"metadata": {"name": "web"},
                                "spec": {"ports": [{"port": 80}]}})
        sim.fault(action="fail", path="/api/v1/services", status=429,
                  retryAfter=1, format="text")
        sim.restart()            # same port, same objects (state file)
    finally:
        sim.stop()

start_sim(tmpdir, tls=False, tokens=None, **opts) -> Sim
    tmpdir   a directory for the port file, state file, log and certs.
    tls      True: make a CA + server cert (openssl CLI) and serve https;
             or a (ca_file, cert_file, key_file) tuple to reuse one.
    tokens   None: no authentication.  A str: one token (user "test"); a
             dict {token: user or "user rule ..."}: one line each in the
             token file (format in kapisim/sim_auth.py).
    opts     any kapisim flag, underscores for dashes, e.g.
             bookmark_interval=0.2, endpoints_null_when_empty=False,
             watch_max_seconds=30, continue_ttl=2, listen="127.0.0.1:0".
             A state file in tmpdir is always used (so restart() works).

Sim attributes: url, port, host, ca_file (None without TLS), token (first
token or None), tokens_file, state_file, log_file, proc.
Sim methods:
    stop()                   SIGTERM, wait (then SIGKILL); idempotent.
    kill()                   SIGKILL (no clean shutdown; state file is
                             still at most 50 ms old).
    restart(**opts)          stop, start again on the same port and files.
    set_tokens(tokens)       rewrite the token file (rotation).
    request(method, path, body=None, token=..., headers=None, ctype=None)
                             -> (status, headers dict, parsed JSON or text)
    create(kind, obj, ns="default"), replace(kind, obj, ns=None),
    delete(kind, name, ns="default"), get(kind, name, ns="default"),
    list(kind, ns=None, **query)  -> parsed JSON; raise SimError on >= 400.
        kind: "services", "endpointslices" or "namespaces" (a Kind name
        such as "Service" works too).
    fault(**rule) / fault(rules=[...])   POST /_sim/faults (see
                             kapisim/sim_faults.py for the actions).
    clear_faults(), reset(), state(), requests(), clear_requests().
make_ca_and_cert(tmpdir) -> (ca_file, cert_file, key_file) for 127.0.0.1.
"""

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
KAPISIM = os.path.join(os.path.dirname(HERE), "kapisim", "kapisim.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
    else sys.executable

KINDS = {
    "services": ("/api/v1", True), "service": ("/api/v1", True),
    "Service": ("/api/v1", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", True),
    "endpointslice": ("/apis/discovery.k8s.io/v1", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", True),
    "namespaces": ("/api/v1", False), "Namespace": ("/api/v1", False),
}
PLURAL = {"service": "services", "Service": "services",
          "endpointslice": "endpointslices",
          "EndpointSlice": "endpointslices", "Namespace": "namespaces"}


class SimError(Exception):
    """An HTTP error answer: .status, .body (parsed JSON or text)."""

    def __init__(self, status, body):
        super().__init__("HTTP %d: %s" % (status, body))
        self.status = status
        self.body = body


def make_ca_and_cert(tmpdir, name="kapisim"):
    """A throwaway CA and a server cert for IP 127.0.0.1 / localhost,
    made with the openssl CLI.  Returns (ca_file, cert_file, key_file)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl CLI not found")
    d = os.path.join(tmpdir, "pki")
    os.makedirs(d, exist_ok=True)
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    key, csr = os.path.join(d, "server.key"), os.path.join(d, "server.csr")
    crt, ext = os.path.join(d, "server.crt"), os.path.join(d, "ext.cnf")

    def run(*args):
        subprocess.run(("openssl",) + args, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
        "-out", ca, "-days", "2", "-subj", "/CN=%s-ca" % name)
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=%s" % name)
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
    return ca, crt, key


def _token_lines(tokens):
    if tokens is None:
        return None
    if isinstance(tokens, str):
        tokens = {tokens: "test"}
    return "".join("%s %s\n" % (t, u) for t, u in tokens.items())


class Sim:
    def __init__(self, tmpdir, tls, tokens, opts):
        self.tmpdir = tmpdir
        self.tls = tls
        self.opts = dict(opts)
        self.ca_file = self.cert_file = self.key_file = None
        if isinstance(tls, (tuple, list)):
            self.ca_file, self.cert_file, self.key_file = tls
        elif tls:
            self.ca_file, self.cert_file, self.key_file = \
                make_ca_and_cert(tmpdir)
        self.tokens_file = None
        self.token = None
        if tokens is not None:
            self.tokens_file = os.path.join(tmpdir, "tokens")
            self.set_tokens(tokens)
        self.state_file = self.opts.pop("state_file", None) or \
            os.path.join(tmpdir, "kapisim-state.json")
        self.log_file = os.path.join(tmpdir, "kapisim.log")
        self.port_file = os.path.join(tmpdir, "kapisim.port")
        self.stderr_file = os.path.join(tmpdir, "kapisim.stderr")
        self.listen = self.opts.pop("listen", "127.0.0.1:0")
        self.proc = None
        self.port = None

    # ------------------------------------------------------------ process

    def set_tokens(self, tokens):
        """Rewrite the token file atomically (the sim re-reads it)."""
        tmp = self.tokens_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(_token_lines(tokens))
        os.replace(tmp, self.tokens_file)
        first = tokens if isinstance(tokens, str) else next(iter(tokens),
                                                            None)
        self.token = first

    def _argv(self, listen):
        argv = [PYTHON, KAPISIM, "--listen", listen, "--port-file",
                self.port_file, "--state-file", self.state_file, "--log",
                self.log_file]
        if self.tls:
            argv += ["--tls-cert", self.cert_file, "--tls-key", self.key_file]
        if self.tokens_file:
            argv += ["--tokens", self.tokens_file]
        for k, v in self.opts.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            argv += ["--" + k.replace("_", "-"), str(v)]
        return argv

    def start(self, deadline=15.0):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        listen = self.listen
        if self.port is not None:
            listen = "%s:%d" % (listen.rpartition(":")[0], self.port)
        err = open(self.stderr_file, "ab")
        self.proc = subprocess.Popen(self._argv(listen), stdout=err,
                                     stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("kapisim exited with %s: %s" % (
                    self.proc.returncode, self._stderr()))
            try:
                with open(self.port_file) as f:
                    txt = f.read()
                if txt.endswith("\n"):
                    self.port = int(txt)
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        else:
            self.stop()
            raise RuntimeError("kapisim did not start within %.0fs: %s" % (
                deadline, self._stderr()))
        self.host = listen.rpartition(":")[0].strip("[]")
        scheme = "https" if self.tls else "http"
        h = "[%s]" % self.host if ":" in self.host else self.host
        self.url = "%s://%s:%d" % (scheme, h, self.port)
        return self

    def _stderr(self):
        try:
            with open(self.stderr_file, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def kill(self):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(5)

    def restart(self, **opts):
        self.stop()
        self.opts.update(opts)
        return self.start()

    # --------------------------------------------------------------- HTTP

    def ssl_context(self):
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def request(self, method, path, body=None, token=True, headers=None,
                ctype=None, timeout=10.0):
        """One request; token=True uses self.token, None/False sends none,
        a str sends that.  Returns (status, headers, body)."""
        data = None
        hdrs = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else \
                json.dumps(body).encode()
            hdrs["Content-Type"] = ctype or "application/json"
        tok = self.token if token is True else token
        if tok:
            hdrs["Authorization"] = "Bearer " + tok
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data,
                                     headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=self.ssl_context()) as r:
                status, rh, raw = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, dict(e.headers), e.read()
        text = raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = text
        return status, rh, parsed

    def _ok(self, method, path, body=None, **kw):
        status, _, parsed = self.request(method, path, body, **kw)
        if status >= 400:
            raise SimError(status, parsed)
        return parsed

    @staticmethod
    def path(kind, ns=None, name=None):
        prefix, namespaced = KINDS[kind]
        plural = PLURAL.get(kind, kind)
        p = prefix
        if namespaced and ns:
            p += "/namespaces/" + urllib.parse.quote(ns)
        p += "/" + plural
        if name:
            p += "/" + urllib.parse.quote(name)
        return p

    def create(self, kind, obj, ns="default", **query):
        ns = obj.get("metadata", {}).get("namespace") or ns
        return self._ok("POST", self.path(kind, ns) + _qs(query), obj)

    def replace(self, kind, obj, ns=None, **query):
        md = obj["metadata"]
        ns = ns or md.get("namespace") or "default"
        return self._ok("PUT", self.path(kind, ns, md["name"]) + _qs(query),
                        obj)

    def delete(self, kind, name, ns="default", body=None, **query):
        return self._ok("DELETE", self.path(kind, ns, name) + _qs(query),
                        body)

    def get(self, kind, name, ns="default"):
        return self._ok("GET", self.path(kind, ns, name))

    def list(self, kind, ns=None, **query):
        return self._ok("GET", self.path(kind, ns) + _qs(query))

    def fault(self, rules=None, **rule):
        return self._ok("POST", "/_sim/faults", rules if rules is not None
                        else rule, token=None)

    def clear_faults(self):
        return self._ok("DELETE", "/_sim/faults", token=None)

    def reset(self):
        return self._ok("POST", "/_sim/reset", {}, token=None)

    def state(self):
        return self._ok("GET", "/_sim/state", token=None)

    def requests(self):
        return self._ok("GET", "/_sim/requests", token=None)["requests"]

    def clear_requests(self):
        return self._ok("DELETE", "/_sim/requests", token=None)


def _qs(query):
    return "?" + urllib.parse.urlencode(query) if query else ""


def start_sim(tmpdir, tls=False, tokens=None, **opts):
    """Start kapisim (see the module doc); returns a running Sim."""
    return Sim(str(tmpdir), tls, tokens, opts).start()
