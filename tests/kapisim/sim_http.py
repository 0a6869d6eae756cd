"""HTTP side of the simulator: routing, reads (LIST/GET/WATCH), writes,
discovery and the /_sim control API.
"""

import base64
import gzip
import json
import random
import select
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sim_objects as so
import sim_patch
import sim_select
from sim_auth import ANONYMOUS, PUBLIC_PATHS
from sim_errors import ApiError, bad_request, invalid, res_details, \
    status_obj
from sim_store import Expired

GONE_CONTINUE = (
    "The provided continue parameter is too old to display a consistent "
    "list result. You can start a new list without the continue parameter, "
    "or use the continue token in this response to retrieve the remainder "
    "of the results. Continuing with the provided token results in an "
    "inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in "
    "the list.")
INITIAL_END = "k8s.io/initial-events-end"


def qbool(v):
    """Query boolean per apimachinery: "0"/"false" false, else true."""
    if v is None:
        return None
    return not (v == "0" or v.lower() == "false")


def encode_continue(rv, start):
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token):
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        d = json.loads(raw)
    except (ValueError, TypeError) as e:
        raise bad_request("invalid continue token: %s" % e)
    if not isinstance(d, dict) or d.get("v") != "meta.k8s.io/v1":
        raise bad_request("invalid continue token: continue key is not "
                          "supported by this server")
    rv, start = d.get("rv"), d.get("start")
    if not isinstance(rv, int) or not isinstance(start, str) or \
            start.startswith("/") or ".." in start.split("/"):
        raise bad_request("invalid continue token: continue key is not valid")
    return rv, start


def list_invalid(causes):
    return invalid("ListOptions", "meta.k8s.io", "", causes)


def drop_type(obj):
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class Route:
    """A parsed resource path."""

    def __init__(self, res, ns, name, sub, watch_path):
        self.res, self.ns, self.name, self.sub = res, ns, name, sub
        self.watch_path = watch_path


def parse_route(path):
    """Map a URL path to a Route, None when not a resource path."""
    segs = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
    if segs[:2] == ["api", "v1"]:
        group, rest = ("", "v1"), segs[2:]
    elif segs[:1] == ["apis"] and len(segs) >= 3:
        group, rest = (segs[1], segs[2]), segs[3:]
    else:
        return None
    kinds = so.GROUPS.get(group)
    if kinds is None or not rest or rest == [""]:
        return None
    watch_path = False
    if rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in kinds:
        ns, plural, tail = rest[1], rest[2], rest[3:]
    else:
        ns, plural, tail = "", rest[0], rest[1:]
    res = kinds.get(plural)
    if res is None or len(tail) > 2:
        raise ApiError(404, "the server could not find the requested "
                       "resource", details={})
    name = tail[0] if tail else None
    sub = tail[1] if len(tail) > 1 else None
    if sub is not None and not (sub == "status" and res is not so.ENDPOINTSLICES):
        raise ApiError(404, "the server could not find the requested "
                       "resource", details={})
    return Route(res, ns, name, sub, watch_path)


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, opts, store, faults, auth, logf):
        self.opts, self.store, self.faults, self.auth = opts, store, faults, \
            auth
        self.logf = logf
        self.log_lock = threading.Lock()
        self.requests = []
        self.watches = 0
        self.watch_lock = threading.Lock()
        self.ssl_ctx = None
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.address_family = fam
        super().__init__(addr, Handler)
        if opts.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
            ctx.set_alpn_protocols(["http/1.1"])
            self.ssl_ctx = ctx

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.ssl_ctx is not None:
            sock = self.ssl_ctx.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # client went away, TLS handshake failed, ...

    def record(self, entry):
        with self.log_lock:
            self.requests.append(entry)
            if len(self.requests) > 2000:
                del self.requests[:500]
            if self.logf:
                self.logf.write(json.dumps(entry) + "\n")
                self.logf.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kapisim"
    sys_version = ""
    timeout = 600

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()

    def log_message(self, fmt, *args):
        pass

    # ------------------------------------------------------------- plumbing

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def read_body(self):
        self.body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def drain_body(self):
        """Consume an unread request body so keep-alive stays in sync; a
        large or chunked one closes the connection instead."""
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") or n > (1 << 20):
            self.close_connection = True
        elif n:
            self.rfile.read(n)

    def json_body(self, required=True):
        raw = self.read_body()
        if not raw.strip():
            if required:
                raise bad_request("the body of the request was empty")
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise bad_request("couldn't get version/kind; json parse error: "
                              "%s" % e)

    def send_raw(self, code, body, ctype, headers=None):
        gz = False
        if len(body) > 128 * 1024 and "gzip" in self.headers.get(
                "Accept-Encoding", ""):
            body, gz = gzip.compress(body), True
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        if gz:
            self.send_header("Content-Encoding", "gzip")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.status = code

    def send_json(self, code, obj, headers=None):
        self.send_raw(code, json.dumps(obj).encode() + b"\n",
                      "application/json", headers)

    def send_error_obj(self, err):
        headers = dict(err.headers)
        if err.text is not None:
            self.send_raw(err.code, err.text.encode(),
                          "text/plain; charset=utf-8", headers)
        else:
            self.send_json(err.code, err.status(), headers)

    def dispatch(self, method):
        srv = self.server
        self.status = 0
        self.user = None
        t0 = time.time()
        url = urllib.parse.urlsplit(self.path)
        path = url.path or "/"
        q = {}
        for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            q.setdefault(k, v)
        self.is_watch = False
        self.body_read = False
        try:
            if path.startswith("/_sim/"):
                self.control(method, path)
                return
            if srv.store.closing:
                raise ApiError(503, "apiserver is shutting down",
                               headers={"Retry-After": "1"})
            if srv.auth is not None:
                self.user = srv.auth.authenticate(
                    self.headers.get("Authorization"), path)
            route = parse_route(path)
            self.is_watch = route is not None and method == "GET" and (
                route.watch_path or bool(qbool(q.get("watch"))))
            self.inject(method, path)
            if route is None:
                self.non_resource(method, path)
            else:
                self.resource(method, route, q)
        except ApiError as e:
            try:
                if not self.body_read:
                    self.drain_body()
                self.send_error_obj(e)
            except OSError:
                self.close_connection = True
        except (OSError, ssl.SSLError):
            self.close_connection = True
        finally:
            srv.record({"time": round(t0, 3), "method": method,
                        "path": path, "query": q, "status": self.status,
                        "watch": self.is_watch,
                        "user": self.user.name if self.user else None,
                        "seconds": round(time.time() - t0, 3)})

    def inject(self, method, path):
        """Apply `fail` and `drop` faults to this request."""
        r = self.server.faults.take(("fail", "drop"), method, path,
                                    self.is_watch)
        if r is None:
            return
        if r["action"] == "drop":
            self.abort_connection()
            raise OSError("dropped by fault")
        code = int(r.get("status", 500))
        headers = {}
        if r.get("retryAfter") is not None:
            headers["Retry-After"] = str(r["retryAfter"])
        if code == 429:
            msg = r.get("message", "Too many requests, please try again "
                                   "later.")
        elif code == 503:
            msg = r.get("message", "apiserver is shutting down")
        else:
            msg = r.get("message", "injected failure")
        if r.get("format", "json") == "text":
            raise ApiError(code, msg, text=msg + "\n", headers=headers)
        det = None
        if r.get("retryAfter") is not None:
            det = {"retryAfterSeconds": int(r["retryAfter"])}
        raise ApiError(code, msg, details=det, headers=headers)

    def abort_connection(self):
        """Cut the connection with a TCP reset."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            sock = self.connection
            if isinstance(sock, ssl.SSLSocket):
                sock = socket.socket(fileno=sock.detach())
            sock.close()
        except OSError:
            pass

    # ------------------------------------------------------ non-resources

    def non_resource(self, method, path):
        srv = self.server
        host, port = srv.server_address[:2]
        docs = {
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{
                         "clientCIDR": "0.0.0.0/0",
                         "serverAddress": "%s:%d" % (host, port)}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1",
                      "groups": [_group_doc()]},
            "/apis/discovery.k8s.io": dict(_group_doc(), kind="APIGroup",
                                           apiVersion="v1"),
            "/api/v1": _resource_list(("", "v1")),
            "/apis/discovery.k8s.io/v1": _resource_list(
                ("discovery.k8s.io", "v1")),
            "/version": {"major": "1", "minor": "30",
                         "gitVersion": "v1.30.0-kapisim",
                         "gitCommit": "0000000000000000000000000000000000000000",
                         "gitTreeState": "clean",
                         "buildDate": "2024-04-17T00:00:00Z",
                         "goVersion": "go1.22.2", "compiler": "gc",
                         "platform": "linux/amd64"},
        }
        p = path.rstrip("/") or "/"
        if p in ("/healthz", "/readyz", "/livez") or \
                p.startswith(("/healthz/", "/readyz/", "/livez/")):
            self.send_raw(200, b"ok", "text/plain; charset=utf-8")
            return
        if p in docs:
            if method != "GET":
                raise ApiError(405, "the server does not allow this method "
                               "on the requested resource")
            self.send_json(200, docs[p])
            return
        if p.startswith("/api") and p != "/api" and p.count("/") <= 3 and \
                p not in docs:
            raise ApiError(404, "the server could not find the requested "
                           "resource", details={})
        raise ApiError(404, "404 page not found", text="404 page not found\n")

    # ------------------------------------------------------------ resources

    def authorize(self, verb, route):
        user = self.user
        if user is None:
            return
        resource = route.res.plural + ("/" + route.sub if route.sub else "")
        if user.allowed(verb, route.res.plural) and (
                not route.sub or user.allowed(verb, resource)):
            return
        res = route.res
        who = ("%s \"%s\"" % (res.qualified, route.name) if route.name
               else res.qualified)
        scope = ('in the namespace "%s"' % route.ns if route.ns
                 else "at the cluster scope")
        msg = ('%s is forbidden: User "%s" cannot %s resource "%s" in API '
               'group "%s" %s' % (who, user.name, verb, resource, res.group,
                                  scope))
        raise ApiError(403, msg, details=res_details(res, route.name))

    def resource(self, method, route, q):
        res = route.res
        if res.namespaced and route.name and not route.ns:
            raise ApiError(404, "the server could not find the requested "
                           "resource", details={})
        if method == "GET":
            if self.is_watch:
                self.authorize("watch", route)
                self.watch(route, q)
            elif route.name:
                self.authorize("get", route)
                self.send_json(200, self.server.store.get(res, route.ns,
                                                          route.name))
            else:
                self.authorize("list", route)
                self.send_json(200, self.list(route, q))
            return
        dry = self.dry_run(q)
        store = self.server.store
        if method == "POST" and not route.name:
            self.authorize("create", route)
            obj = store.create(res, route.ns, self.json_body(), dry)
            self.send_json(201, obj)
        elif method == "PUT" and route.name:
            self.authorize("update", route)
            obj = store.update(res, route.ns, route.name, self.json_body(),
                               dry, route.sub)
            self.send_json(200, obj)
        elif method == "PATCH" and route.name:
            self.authorize("patch", route)
            self.send_json(200, self.patch(route, dry))
        elif method == "DELETE" and route.name:
            self.authorize("delete", route)
            opts = self.json_body(required=False) or {}
            old = store.delete(res, route.ns, route.name,
                               opts.get("preconditions"), dry)
            if res is so.ENDPOINTSLICES:
                self.send_json(200, {
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "details": res_details(
                        res, route.name, {"uid": old["metadata"]["uid"]})})
            else:
                self.send_json(200, old)
        elif method == "DELETE" and res is so.ENDPOINTSLICES:
            self.authorize("deletecollection", route)
            self.json_body(required=False)
            lst = self.list(route, {k: v for k, v in q.items()
                                    if k in ("labelSelector",
                                             "fieldSelector")})
            with store.lock:
                for item in lst["items"]:
                    md = item["metadata"]
                    store.delete(res, md["namespace"], md["name"], None, dry)
            self.send_json(200, lst)
        else:
            raise ApiError(405, "the server does not allow this method on "
                           "the requested resource", details={})

    @staticmethod
    def dry_run(q):
        v = q.get("dryRun")
        if v is None or v == "":
            return False
        if v != "All":
            raise bad_request('dryRun: Unsupported value: "%s": supported '
                              'values: "All"' % v)
        return True

    def patch(self, route, dry):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in sim_patch.SUPPORTED:
            raise ApiError(415, "the body of the request was in an unknown "
                           "format - accepted media types include: " +
                           ", ".join(sim_patch.SUPPORTED))
        body = self.json_body()
        store = self.server.store
        with store.lock:
            cur = store.get(route.res, route.ns, route.name)
            try:
                if ctype == sim_patch.MERGE:
                    new = sim_patch.apply_merge(cur, body)
                elif ctype == sim_patch.STRATEGIC:
                    new = sim_patch.apply_strategic(cur, body)
                else:
                    new = sim_patch.apply_jsonpatch(cur, body)
            except ValueError as e:
                raise ApiError(422, str(e))
            if not isinstance(new, dict):
                raise bad_request("the patch did not produce an object")
            md = new.setdefault("metadata", {})
            md.setdefault("resourceVersion", cur["metadata"][
                "resourceVersion"])
            return store.update(route.res, route.ns, route.name, new, dry,
                                route.sub)

    # ----------------------------------------------------------------- list

    def selectors(self, route, q):
        try:
            lsel = sim_select.parse_labels(q.get("labelSelector", ""))
            fsel = sim_select.parse_fields(q.get("fieldSelector", ""),
                                           route.res.field_names)
        except ValueError as e:
            raise bad_request(str(e))
        res, ns, name = route.res, route.ns, route.name

        def match(obj):
            md = obj["metadata"]
            if ns and md.get("namespace") != ns:
                return False
            if name and md.get("name") != name:
                return False
            return lsel(md.get("labels")) and fsel(res.fields(obj))

        match.empty = lsel.empty and fsel.empty
        return match

    def wait_rev(self, rv):
        """Wait up to --too-large-wait for the revision to reach rv, then
        504 like the watch cache."""
        store = self.server.store
        end = time.monotonic() + self.server.opts.too_large_wait
        with store.lock:
            while store.rev < rv:
                left = end - time.monotonic()
                if left <= 0 or store.closing:
                    raise ApiError(
                        504, "Timeout: Too large resource version: %d, "
                        "current: %d" % (rv, store.rev), reason="Timeout",
                        details={"causes": [{
                            "reason": "ResourceVersionTooLarge",
                            "message": "Too large resource version"}],
                            "retryAfterSeconds": 1},
                        headers={"Retry-After": "1"})
                store.cond.wait(left)

    @staticmethod
    def parse_rv(rv):
        if not rv.isdigit():
            raise bad_request('invalid resource version "%s"' % rv)
        return int(rv)

    def list(self, route, q):
        store = self.server.store
        res = route.res
        rv = q.get("resourceVersion", "")
        match_mode = q.get("resourceVersionMatch", "")
        cont = q.get("continue", "")
        causes = []
        if match_mode and match_mode not in ("Exact", "NotOlderThan"):
            causes.append(("resourceVersionMatch",
                           'Unsupported value: "%s"' % match_mode,
                           'supported values: "Exact", "NotOlderThan"'))
        elif match_mode and cont:
            causes.append(("resourceVersionMatch", "Forbidden",
                           "resourceVersionMatch is forbidden when continue "
                           "is provided"))
        elif match_mode and not rv:
            causes.append(("resourceVersionMatch", "Forbidden",
                           "resourceVersionMatch is forbidden unless "
                           "resourceVersion is provided"))
        elif match_mode == "Exact" and rv == "0":
            causes.append(("resourceVersionMatch", "Forbidden",
                           'resourceVersionMatch "exact" is forbidden for '
                           'resourceVersion "0"'))
        if "sendInitialEvents" in q:
            causes.append(("sendInitialEvents", "Forbidden",
                           "sendInitialEvents is forbidden for list"))
        if causes:
            raise list_invalid(causes)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request('limit: Invalid value: "%s"' % q.get("limit"))
        match = self.selectors(route, q)
        start = ""
        if cont:
            if rv not in ("", "0"):
                raise bad_request("specifying resource version is not "
                                  "allowed when using continue")
            snap_rev, start = decode_continue(cont)
            with store.lock:
                issued = store.issued.get(snap_rev)
                expired = snap_rev >= 0 and (
                    snap_rev < store.compacted or
                    (issued is not None and time.time() - issued >
                     self.server.opts.continue_ttl))
                if expired:
                    raise ApiError(410, GONE_CONTINUE, reason="Expired",
                                   metadata={"continue": encode_continue(
                                       -1, start)})
                if snap_rev < 0:
                    snap_rev = store.rev
                objs = store.snapshot(res.plural, snap_rev)
        else:
            exact = False
            n = None
            if rv not in ("", "0"):
                n = self.parse_rv(rv)
                exact = match_mode == "Exact" or (not match_mode and limit)
                self.wait_rev(n)
            with store.lock:
                if exact:
                    if n < store.compacted:
                        raise ApiError(410, "The resourceVersion for the "
                                       "provided list is too old.",
                                       reason="Expired")
                    snap_rev = n
                else:
                    snap_rev = store.rev
                objs = store.snapshot(res.plural, snap_rev)
        return self.page(route, objs, snap_rev, start, limit, match)

    def page(self, route, objs, snap_rev, start, limit, match):
        res = route.res
        cluster_wide = res.namespaced and not route.ns

        def skey(key):
            return key[0] + "/" + key[1] if cluster_wide else key[1]

        keys = sorted((skey(k), k) for k in objs
                      if (not route.ns or k[0] == route.ns) and
                      (not route.name or k[1] == route.name))
        keys = [(s, k) for s, k in keys if s >= start]
        items, last, more, remaining = [], None, False, 0
        for i, (s, k) in enumerate(keys):
            obj = objs[k]
            if not match(obj):
                continue
            if limit and len(items) >= limit:
                more = True
                remaining = len(keys) - i if match.empty else 0
                break
            items.append(drop_type(obj))
            last = s
        md = {"resourceVersion": str(snap_rev)}
        if more:
            md["continue"] = encode_continue(snap_rev, last + "\x00")
            if match.empty:
                md["remainingItemCount"] = remaining
            store = self.server.store
            with store.lock:
                store.issued.setdefault(snap_rev, time.time())
        return {"kind": res.list_kind, "apiVersion": res.api_version,
                "metadata": md, "items": items}

    # ---------------------------------------------------------------- watch

    def watch(self, route, q):
        srv = self.server
        store, faults, opts = srv.store, srv.faults, srv.opts
        rv = q.get("resourceVersion", "")
        match_mode = q.get("resourceVersionMatch", "")
        bookmarks = bool(qbool(q.get("allowWatchBookmarks")))
        sie = qbool(q.get("sendInitialEvents"))
        gate = opts.watch_list and not faults.flag(
            "reject_send_initial_events")
        causes = []
        if sie is not None and not gate:
            causes.append(("sendInitialEvents", "Forbidden",
                           "sendInitialEvents is forbidden for watch unless "
                           "the WatchList feature gate is enabled"))
        elif sie is not None:
            if match_mode != "NotOlderThan":
                causes.append(("resourceVersionMatch", "Forbidden",
                               "sendInitialEvents requires setting "
                               "resourceVersionMatch to NotOlderThan"))
            if not bookmarks:
                causes.append(("allowWatchBookmarks", "Forbidden",
                               "sendInitialEvents requires setting "
                               "allowWatchBookmarks to true"))
        elif match_mode:
            causes.append(("resourceVersionMatch", "Forbidden",
                           "resourceVersionMatch is forbidden for watch "
                           "unless sendInitialEvents is provided"))
        if causes:
            raise list_invalid(causes)
        match = self.selectors(route, q)
        n = self.parse_rv(rv) if rv not in ("", "0") else None
        if sie is None and gate and n is None:
            sie = True       # WatchList gate on: RV unset/0 defaults to it
        if sie and n is not None:
            self.wait_rev(n)
        try:
            timeout = float(q["timeoutSeconds"]) if q.get(
                "timeoutSeconds") else None
        except ValueError:
            raise bad_request("timeoutSeconds: Invalid value")
        if timeout is None or timeout <= 0:
            hi = opts.watch_max_seconds
            timeout = random.uniform(hi / 2.0, hi)
        w = Watch(self, route, match, bookmarks, timeout)
        gone = faults.take(("gone",), "GET", self.path_only(), True)
        end_rule = faults.take(("end_watch",), "GET", self.path_only(), True)
        w.configure_end(end_rule)
        with srv.watch_lock:
            srv.watches += 1
        try:
            w.run(n, bool(sie), gone)
        finally:
            with srv.watch_lock:
                srv.watches -= 1

    def path_only(self):
        return urllib.parse.urlsplit(self.path).path

    # -------------------------------------------------------------- control

    def control(self, method, path):
        srv = self.server
        store, faults = srv.store, srv.faults
        body = self.json_body(required=False) if method in (
            "POST", "PUT") else None
        host, port = srv.server_address[:2]
        if path == "/_sim/state" and method == "GET":
            st = store.state()
            st["watches"] = srv.watches
            st["faults"] = faults.listing()
            st["port"] = port
            self.send_json(200, st)
        elif path == "/_sim/faults" and method == "GET":
            self.send_json(200, faults.listing())
        elif path == "/_sim/faults" and method == "DELETE":
            faults.clear()
            self.send_json(200, {"ok": True})
        elif path == "/_sim/faults" and method == "POST":
            rules = body if isinstance(body, list) else [body or {}]
            ids = []
            for r in rules:
                try:
                    ids.append(self.apply_fault(r))
                except (ValueError, KeyError, TypeError) as e:
                    raise bad_request("bad fault %r: %s" % (r, e))
            self.send_json(200, {"ids": ids, "revision": store.rev})
        elif path == "/_sim/reset" and method == "POST":
            faults.clear()
            store.reset(srv.opts.advertise_host, port)
            with srv.log_lock:
                srv.requests = []
            self.send_json(200, store.state())
        elif path == "/_sim/requests" and method == "GET":
            with srv.log_lock:
                self.send_json(200, {"requests": list(srv.requests)})
        elif path == "/_sim/requests" and method == "DELETE":
            with srv.log_lock:
                srv.requests = []
            self.send_json(200, {"ok": True})
        elif path == "/_sim/save" and method == "POST":
            store.save()
            self.send_json(200, store.state())
        else:
            raise ApiError(404, "404 page not found", text="404 page not "
                           "found\n")

    def apply_fault(self, r):
        store, faults = self.server.store, self.server.faults
        act = r.get("action")
        if act == "compact":
            store.compact(r.get("revision"))
            return None
        if act == "regress":
            faults.end_mode = "clean"
            store.regress(int(r["revision"]), r.get("closeWatches", True))
            return None
        if act == "end_watches":
            faults.end_mode = r.get("mode", "clean")
            store.end_watches()
            return None
        return faults.add(r)


class Watch:
    """One watch stream."""

    def __init__(self, h, route, match, bookmarks, timeout):
        self.h = h
        self.route = route
        self.match = match
        self.bookmarks = bookmarks
        self.start = time.monotonic()
        self.deadline = self.start + timeout
        self.sent = 0
        self.end_events = None
        self.end_at = None
        self.end_mode = "clean"
        self.buf = []

    def configure_end(self, rule):
        if rule is None:
            return
        if rule.get("afterEvents") is not None:
            self.end_events = int(rule["afterEvents"])
        if rule.get("afterSeconds") is not None:
            self.end_at = self.start + float(rule["afterSeconds"])
        self.end_mode = rule.get("mode", "clean")

    # output
    def chunk(self, data):
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def emit(self, typ, obj):
        data = json.dumps({"type": typ, "object": obj},
                          separators=(",", ":")).encode() + b"\n"
        faults = self.h.server.faults
        path = self.h.path_only()
        delay = faults.peek("delay_flush", path)
        if delay:
            time.sleep(float(delay.get("seconds", 0.1)))
        mode = faults.peek("chunking", path)
        mode = mode.get("mode", "normal") if mode else "normal"
        if mode == "split" and len(data) > 2:
            cut = len(data) // 2
            self.chunk(data[:7])
            self.chunk(data[7:cut])
            self.chunk(data[cut:])
        elif mode == "coalesce":
            self.buf.append(data)
        else:
            self.chunk(data)
        if typ not in ("BOOKMARK", "ERROR"):
            self.sent += 1

    def flush(self):
        if self.buf:
            self.chunk(b"".join(self.buf))
            self.buf = []

    def inject(self):
        """Raw lines from "inject" rules for this watch, if any."""
        faults = self.h.server.faults
        while True:
            r = faults.take(("inject",), "GET", self.h.path_only(), True)
            if r is None:
                return
            line = (str(r.get("text", "")) * int(r.get("repeat", 1))).encode()
            for _ in range(int(r.get("lines", 1))):
                self.chunk(line + b"\n")
            self.h.wfile.flush()

    def bookmark(self, rv, annotations=None):
        self.emit("BOOKMARK", self.route.res.empty(rv, annotations))

    def client_gone(self):
        try:
            r, _, _ = select.select([self.h.connection], [], [], 0)
            return bool(r)
        except (OSError, ValueError):
            return True

    def start_stream(self):
        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Cache-Control", "no-cache, private")
        h.send_header("Audit-Id", str(uuid.uuid4()))
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.flush()
        h.status = 200

    def finish(self, mode):
        if mode == "abort":
            self.h.abort_connection()
            return
        self.flush()
        self.h.wfile.write(b"0\r\n\r\n")
        self.h.wfile.flush()

    def error_410(self, message):
        self.emit("ERROR", status_obj(410, message, reason="Expired"))

    def transition(self, ev):
        """The event a watcher of this selector sees for ev, or None."""
        if ev.res != self.route.res.plural:
            return None
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if self.match(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self.match(ev.old) else None
        now, before = self.match(ev.obj), self.match(ev.old)
        if now and before:
            return ("MODIFIED", ev.obj)
        if now:
            return ("ADDED", ev.obj)
        if before:
            old = dict(ev.old)
            old["metadata"] = dict(old["metadata"],
                                   resourceVersion=str(ev.rev))
            return ("DELETED", old)
        return None

    def run(self, n, sie, gone):
        srv = self.h.server
        store, opts = srv.store, srv.opts
        self.start_stream()
        plural = self.route.res.plural
        with store.lock:
            epoch = store.epoch
            if gone is not None:
                self.error_410("too old resource version: %s (%d)" % (
                    n if n is not None else 0, store.rev))
                self.finish("clean")
                return
            initial = []
            if n is None:
                pos = store.rev
                if sie is not False:
                    objs = store.snapshot(plural)
                    initial = [objs[k] for k in sorted(objs)
                               if self.match(objs[k])]
            elif sie:
                pos = store.rev
                objs = store.snapshot(plural)
                initial = [objs[k] for k in sorted(objs)
                           if self.match(objs[k])]
            else:
                if n < store.compacted:
                    self.error_410("too old resource version: %d (%d)" % (
                        n, store.compacted))
                    self.finish("clean")
                    return
                pos = n
        try:
            self.stream(initial, sie, pos, epoch, opts, store)
        except (OSError, ssl.SSLError):
            self.h.close_connection = True

    def stream(self, initial, sie, pos, epoch, opts, store):
        faults = self.h.server.faults
        for obj in initial:
            self.emit("ADDED", obj)
        if sie and self.bookmarks:
            self.bookmark(pos, {INITIAL_END: "true"})
        self.flush()
        interval = opts.bookmark_interval
        next_bm = time.monotonic() + interval
        pre_deadline_sent = False
        mode = "clean"
        while True:
            now = time.monotonic()
            if now >= self.deadline or (self.end_at and now >= self.end_at):
                mode = self.end_mode if self.end_at and now >= self.end_at \
                    else "clean"
                break
            if self.end_events is not None and self.sent >= self.end_events:
                mode = self.end_mode
                break
            due = next_bm
            if not pre_deadline_sent and self.deadline - 2 < due:
                due = max(now, self.deadline - 2)
            wake = min(due, self.deadline, self.end_at or self.deadline,
                       now + 0.5)
            store.wait_change(pos, epoch, max(0.0, wake - now))
            if self.client_gone():
                self.h.close_connection = True
                return
            self.inject()
            with store.lock:
                if store.epoch != epoch or store.closing:
                    mode = faults.end_mode if store.epoch != epoch \
                        else "clean"
                    break
                evs = store.events_after(pos)
                cur = store.rev
            if evs is None:
                self.error_410("The resourceVersion for the provided watch "
                               "is too old.")
                break
            for ev in evs:
                out = self.transition(ev)
                pos = ev.rev
                if out is not None:
                    self.emit(*out)
                    if self.end_events is not None and \
                            self.sent >= self.end_events:
                        break
            self.flush()
            now = time.monotonic()
            if now >= due and pos <= cur:
                if self.bookmarks and not faults.flag("suppress_bookmarks"):
                    self.bookmark(pos)
                    self.flush()
                if due >= self.deadline - 2 - 1e-6:
                    pre_deadline_sent = True
                next_bm = now + interval
        self.finish(mode)


def _group_doc():
    gv = {"groupVersion": "discovery.k8s.io/v1", "version": "v1"}
    return {"name": "discovery.k8s.io", "versions": [gv],
            "preferredVersion": gv}


def _resource_list(gv):
    group, version = gv
    out = []
    for res in so.GROUPS[gv].values():
        d = {"name": res.plural, "singularName": res.singular,
             "namespaced": res.namespaced, "kind": res.kind,
             "verbs": res.verbs}
        if res.short:
            d["shortNames"] = res.short
        out.append(d)
        if res is not so.ENDPOINTSLICES:
            out.append({"name": res.plural + "/status", "singularName": "",
                        "namespaced": res.namespaced, "kind": res.kind,
                        "verbs": ["get", "patch", "update"]})
    doc = {"kind": "APIResourceList",
           "groupVersion": (group + "/" if group else "") + version,
           "resources": out}
    if group:
        doc["apiVersion"] = "v1"
    return doc
