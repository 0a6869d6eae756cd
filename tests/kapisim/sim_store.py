"""State of the simulated API server.

One global revision for all kinds, a bounded history of events (contiguous:
history[i].rev == compacted + 1 + i), objects keyed (kind, namespace, name),
Service IP / node port allocation, snapshots at older revisions rebuilt by
undoing history, and an optional JSON state file.

Locking: every public method takes self.lock (an RLock); self.cond is a
Condition on it that is notified on every write and on control changes.
Stored objects are never mutated after they are stored.
"""

import copy
import datetime
import ipaddress
import json
import os
import random
import threading
import time
import uuid

import sim_objects as so
from sim_errors import ApiError, already_exists, bad_request, conflict, \
    invalid, not_found, res_details

GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class Event:
    __slots__ = ("rev", "res", "type", "obj", "old", "ts")

    def __init__(self, rev, res, typ, obj, old):
        self.rev = rev
        self.res = res        # plural
        self.type = typ       # ADDED / MODIFIED / DELETED
        self.obj = obj        # new state (DELETED: last state, deletion RV)
        self.old = old        # previous state or None
        self.ts = time.time()


class Expired(Exception):
    """A revision older than the kept history was asked for."""


class Store:
    def __init__(self, service_cidrs=("198.18.128.0/17",),
                 node_port_range=(30000, 32767), history_size=10000,
                 endpoints_null_when_empty=True, state_file=None):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.cidrs = [ipaddress.ip_network(c, strict=False)
                      for c in service_cidrs]
        self.node_port_range = tuple(node_port_range)
        self.history_size = max(10, int(history_size))
        self.null_when_empty = endpoints_null_when_empty
        self.state_file = state_file
        self.closing = False
        self.epoch = 0          # bumped to end every open watch
        self.dirty = False
        self.issued = {}        # snapshot rev -> time a continue was issued
        self._clear()

    # ---------------------------------------------------------------- basics

    def _clear(self):
        self.rev = 0
        self.compacted = 0
        self.history = []
        self.objects = {p: {} for p in so.RESOURCES}
        self.used_ips = set()
        self.used_ports = set()
        self.next_ip = {}
        self.next_port = self.node_port_range[0]

    def seed(self, api_host="127.0.0.1", api_port=6443):
        """Create the seed namespaces and default/kubernetes (+ its slice)."""
        with self.lock:
            for ns in ("default", "kube-system", "kube-public",
                       "kube-node-lease"):
                if ("", ns) not in self.objects["namespaces"]:
                    self.create(so.NAMESPACES, "",
                                {"metadata": {"name": ns}})
            kip = str(self.cidrs[0].network_address + 1)
            svc = self.objects["services"].get(("default", "kubernetes"))
            if svc is None:
                self.create(so.SERVICES, "default", {
                    "metadata": {"name": "kubernetes", "labels": {
                        "component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": kip, "ports": [{
                        "name": "https", "protocol": "TCP", "port": 443,
                        "targetPort": api_port}]}})
            elif svc["spec"]["ports"][0].get("targetPort") != api_port:
                new = copy.deepcopy(svc)
                new["spec"]["ports"][0]["targetPort"] = api_port
                new["metadata"]["resourceVersion"] = ""
                self.update(so.SERVICES, "default", "kubernetes", new)
            sl = {"metadata": {"name": "kubernetes", "labels": {
                "kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv6" if ":" in api_host else "IPv4",
                "endpoints": [{"addresses": [api_host], "conditions": {
                    "ready": True, "serving": True, "terminating": False}}],
                "ports": [{"name": "https", "protocol": "TCP",
                           "port": api_port}]}
            cur = self.objects["endpointslices"].get(("default",
                                                      "kubernetes"))
            if cur is None:
                self.create(so.ENDPOINTSLICES, "default", sl)
            elif cur.get("endpoints") != sl["endpoints"] or \
                    cur.get("ports") != sl["ports"]:
                new = copy.deepcopy(cur)
                new["endpoints"], new["ports"] = sl["endpoints"], sl["ports"]
                new["metadata"]["resourceVersion"] = ""
                self.update(so.ENDPOINTSLICES, "default", "kubernetes", new)

    def _commit(self, res, typ, key, new, old):
        """Bump the revision, store, record history, wake watchers."""
        self.rev += 1
        rv = str(self.rev)
        if typ == "DELETED":
            obj = copy.deepcopy(old)
            obj["metadata"]["resourceVersion"] = rv
            del self.objects[res.plural][key]
        else:
            new["metadata"]["resourceVersion"] = rv
            obj = new
            self.objects[res.plural][key] = new
        if res is so.SERVICES:
            self._alloc_release(old)
            self._alloc_claim(new if typ != "DELETED" else None)
        self.history.append(Event(self.rev, res.plural, typ, obj, old))
        if len(self.history) > self.history_size + self.history_size // 10:
            drop = len(self.history) - self.history_size
            self.compacted = self.history[drop - 1].rev
            del self.history[:drop]
        self.dirty = True
        self.cond.notify_all()
        return obj

    # ----------------------------------------------------------- allocation

    @staticmethod
    def _svc_ips(svc):
        spec = (svc or {}).get("spec", {})
        return [ip for ip in spec.get("clusterIPs") or
                ([spec["clusterIP"]] if spec.get("clusterIP") else [])
                if ip and ip != "None"]

    @staticmethod
    def _svc_ports(svc):
        spec = (svc or {}).get("spec", {})
        out = [(p.get("protocol", "TCP"), p["nodePort"])
               for p in spec.get("ports") or [] if p.get("nodePort")]
        if spec.get("healthCheckNodePort"):
            out.append(("TCP", spec["healthCheckNodePort"]))
        return out

    def _alloc_release(self, svc):
        for ip in self._svc_ips(svc):
            self.used_ips.discard(ip)
        for pp in self._svc_ports(svc):
            self.used_ports.discard(pp[1])

    def _alloc_claim(self, svc):
        for ip in self._svc_ips(svc):
            self.used_ips.add(ip)
        for pp in self._svc_ports(svc):
            self.used_ports.add(pp[1])

    def _rebuild_alloc(self):
        self.used_ips, self.used_ports = set(), set()
        for svc in self.objects["services"].values():
            self._alloc_claim(svc)

    def _alloc_ip(self, net):
        first = int(net.network_address) + 2
        last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
        start = self.next_ip.get(str(net), first + 8)
        if not first <= start <= last:
            start = first
        cand = start
        while True:
            ip = str(ipaddress.ip_address(cand))
            if ip not in self.used_ips:
                self.next_ip[str(net)] = cand + 1
                return ip
            cand = cand + 1 if cand < last else first
            if cand == start:
                return None

    def _alloc_port(self, pending):
        lo, hi = self.node_port_range
        cand = self.next_port if lo <= self.next_port <= hi else lo
        for _ in range(hi - lo + 1):
            if cand not in self.used_ports and cand not in pending:
                self.next_port = cand + 1
                return cand
            cand = cand + 1 if cand < hi else lo
        return None

    def _allocate_service(self, svc, old):
        """Fill clusterIP(s), ipFamilies, ipFamilyPolicy and node ports."""
        res = so.SERVICES
        name = svc["metadata"]["name"]
        spec = svc["spec"]
        typ = spec["type"]
        ospec = (old or {}).get("spec", {})
        if typ == "ExternalName":
            for k in ("clusterIP", "clusterIPs", "ipFamilies",
                      "ipFamilyPolicy"):
                spec.pop(k, None)
        else:
            self._allocate_ips(res, name, spec, ospec)
        # node ports
        mine = set(p[1] for p in self._svc_ports(old))
        pending = set()
        need = typ in ("NodePort", "LoadBalancer") and \
            spec.get("allocateLoadBalancerNodePorts", True)
        oports = {(p.get("port"), p.get("protocol", "TCP")): p
                  for p in ospec.get("ports") or []}
        for i, p in enumerate(spec.get("ports") or []):
            if typ not in ("NodePort", "LoadBalancer"):
                p.pop("nodePort", None)
                continue
            if not p.get("nodePort"):
                op = oports.get((p.get("port"), p.get("protocol")))
                if op and op.get("nodePort"):
                    p["nodePort"] = op["nodePort"]
                elif need:
                    np = self._alloc_port(pending)
                    if np is None:
                        raise ApiError(500, "failed to allocate a nodePort: "
                                       "range is full")
                    p["nodePort"] = np
            elif p["nodePort"] in pending or (
                    p["nodePort"] in self.used_ports and
                    p["nodePort"] not in mine):
                raise invalid("Service", "", name, [
                    ("spec.ports[%d].nodePort" % i,
                     "Invalid value: %d" % p["nodePort"],
                     "provided port is already allocated")])
            if p.get("nodePort"):
                pending.add(p["nodePort"])
        if typ == "LoadBalancer" and spec.get("externalTrafficPolicy") == \
                "Local":
            if not spec.get("healthCheckNodePort"):
                spec["healthCheckNodePort"] = ospec.get(
                    "healthCheckNodePort") or self._alloc_port(pending)
        else:
            spec.pop("healthCheckNodePort", None)

    def _allocate_ips(self, res, name, spec, ospec):
        fams_avail = ["IPv%d" % n.version for n in self.cidrs]
        if ospec.get("clusterIPs") or ospec.get("clusterIP"):
            # updates keep allocated values (patchAllocatedValues)
            if not spec.get("clusterIP"):
                spec["clusterIP"] = ospec.get("clusterIP")
            if not spec.get("clusterIPs"):
                spec["clusterIPs"] = ospec.get("clusterIPs")
            if spec.get("clusterIP") != ospec.get("clusterIP"):
                raise invalid("Service", "", name, [
                    ("spec.clusterIPs[0]", 'Invalid value: []string{"%s"}' %
                     spec.get("clusterIP"), "may not change once set")])
            spec.setdefault("ipFamilies", ospec.get("ipFamilies"))
            spec.setdefault("ipFamilyPolicy", ospec.get("ipFamilyPolicy"))
            return
        policy = spec.get("ipFamilyPolicy") or "SingleStack"
        want = list(spec.get("ipFamilies") or [])
        given = [ip for ip in (spec.get("clusterIPs") or
                               ([spec["clusterIP"]] if spec.get("clusterIP")
                                else []))]
        headless = given[:1] == ["None"]
        if not want:
            if given and not headless:
                want = ["IPv%d" % ipaddress.ip_address(ip).version
                        for ip in given]
            else:
                want = [fams_avail[0]]
        for f in want:
            if f not in fams_avail:
                raise invalid("Service", "", name, [
                    ("spec.ipFamilies[0]", 'Invalid value: "%s"' % f,
                     "not configured on this cluster")])
        if policy == "RequireDualStack" and len(fams_avail) < 2:
            raise invalid("Service", "", name, [
                ("spec.ipFamilyPolicy", 'Invalid value: "RequireDualStack"',
                 "this cluster is not configured for dual-stack services")])
        if policy != "SingleStack" and len(want) < 2 and \
                len(fams_avail) > 1:
            want.append([f for f in fams_avail if f != want[0]][0])
        if policy == "SingleStack":
            want = want[:1]
        spec["ipFamilies"] = want
        spec["ipFamilyPolicy"] = policy
        if headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return
        ips = []
        for i, fam in enumerate(want):
            net = self.cidrs[fams_avail.index(fam)]
            if i < len(given):
                ip = given[i]
                if ipaddress.ip_address(ip) not in net:
                    raise invalid("Service", "", name, [
                        ("spec.clusterIPs[%d]" % i,
                         'Invalid value: []string{"%s"}' % ip,
                         "failed to allocate IP %s: the provided IP (%s) is "
                         "not in the valid range" % (ip, ip))])
                if ip in self.used_ips:
                    raise invalid("Service", "", name, [
                        ("spec.clusterIPs[%d]" % i,
                         'Invalid value: []string{"%s"}' % ip,
                         "failed to allocate IP %s: provided IP is already "
                         "allocated" % ip)])
            else:
                ip = self._alloc_ip(net)
                if ip is None:
                    raise ApiError(500, "failed to allocate a serviceIP: "
                                   "range is full")
            ips.append(ip)
        spec["clusterIP"] = ips[0]
        spec["clusterIPs"] = ips

    # ---------------------------------------------------------------- writes

    def _check_ns(self, res, ns):
        if res.namespaced and ("", ns) not in self.objects["namespaces"]:
            raise not_found(so.NAMESPACES, ns)

    def _normalize(self, res, ns, body):
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON object")
        av, kind = body.get("apiVersion"), body.get("kind")
        if av and av != res.api_version:
            raise bad_request(
                "the API version in the data (%s) does not match the "
                "expected API version (%s)" % (av, res.api_version))
        if kind and kind != res.kind:
            raise bad_request("the kind in the data (%s) does not match the "
                              "expected kind (%s)" % (kind, res.kind))
        obj = {"kind": res.kind, "apiVersion": res.api_version}
        obj.update((k, copy.deepcopy(v)) for k, v in body.items()
                   if k not in ("kind", "apiVersion"))
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        if res.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise bad_request(
                    "the namespace of the provided object does not match "
                    "the namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        return obj

    def _default(self, res, obj):
        if res is so.SERVICES:
            so.default_service(obj, True)
        elif res is so.ENDPOINTSLICES:
            so.default_slice(obj, self.null_when_empty)
        else:
            so.default_namespace(obj)

    def create(self, res, ns, body, dry_run=False):
        with self.lock:
            obj = self._normalize(res, ns, body)
            md = obj["metadata"]
            if md.get("resourceVersion"):
                raise ApiError(500, "resourceVersion should not be set on "
                               "objects to be created")
            if not md.get("name") and md.get("generateName"):
                for _ in range(100):
                    cand = md["generateName"][:58] + "".join(
                        random.choice(GEN_CHARS) for _ in range(5))
                    if (ns, cand) not in self.objects[res.plural]:
                        md["name"] = cand
                        break
            so.validate(res, obj, self.node_port_range)
            self._check_ns(res, ns)
            key = (ns if res.namespaced else "", md["name"])
            if key in self.objects[res.plural]:
                raise already_exists(res, md["name"])
            self._default(res, obj)
            for k in ("uid", "creationTimestamp", "deletionTimestamp",
                      "generation", "selfLink", "managedFields"):
                md.pop(k, None)
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now_rfc3339()
            if res is so.ENDPOINTSLICES:
                md["generation"] = 1
            if res is so.SERVICES:
                self._allocate_service(obj, None)
            if dry_run:
                return obj
            return self._commit(res, "ADDED", key, obj, None)

    def update(self, res, ns, name, body, dry_run=False, subresource=None):
        with self.lock:
            obj = self._normalize(res, ns, body)
            md = obj["metadata"]
            if md.get("name") and md["name"] != name:
                raise bad_request(
                    "the name of the object (%s) does not match the name on "
                    "the URL (%s)" % (md["name"], name))
            md["name"] = name
            key = (ns if res.namespaced else "", name)
            old = self.objects[res.plural].get(key)
            if old is None:
                raise not_found(res, name)
            rv = md.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if subresource == "status":
                new = copy.deepcopy(old)
                new["status"] = obj.get("status", {})
                obj = new
            elif "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
            so.validate(res, obj, self.node_port_range)
            self._default(res, obj)
            for k in ("uid", "creationTimestamp", "generation"):
                if k in old["metadata"]:
                    md = obj["metadata"]
                    md[k] = old["metadata"][k]
            if res is so.ENDPOINTSLICES:
                if obj.get("addressType") != old.get("addressType"):
                    raise invalid(res.kind, res.group, name, [
                        ("addressType", 'Invalid value: "%s"' %
                         obj.get("addressType"), "field is immutable")])
            if res is so.SERVICES:
                self._allocate_service(obj, old)
            obj["metadata"]["resourceVersion"] = \
                old["metadata"]["resourceVersion"]
            if obj == old:
                return old       # no-op update: no new revision
            if res is so.ENDPOINTSLICES:
                obj["metadata"]["generation"] = \
                    old["metadata"].get("generation", 1) + 1
            if dry_run:
                return obj
            return self._commit(res, "MODIFIED", key, obj, old)

    def delete(self, res, ns, name, preconditions=None, dry_run=False):
        with self.lock:
            key = (ns if res.namespaced else "", name)
            old = self.objects[res.plural].get(key)
            if old is None:
                raise not_found(res, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, "Precondition failed: UID in precondition:"
                               " %s, UID in object meta: %s" %
                               (pre["uid"], old["metadata"]["uid"]),
                               reason="Conflict",
                               details=res_details(res, name))
            if pre.get("resourceVersion") and pre["resourceVersion"] != \
                    old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Precondition failed: ResourceVersion in "
                               "precondition: %s, ResourceVersion in object "
                               "meta: %s" % (pre["resourceVersion"],
                                             old["metadata"][
                                                 "resourceVersion"]),
                               reason="Conflict",
                               details=res_details(res, name))
            if dry_run:
                return old
            if res is so.NAMESPACES:
                for plural in ("services", "endpointslices"):
                    for k in sorted(self.objects[plural]):
                        if k[0] == name:
                            self._commit(so.RESOURCES[plural], "DELETED", k,
                                         None, self.objects[plural][k])
            self._commit(res, "DELETED", key, None, old)
            return old

    # ----------------------------------------------------------------- reads

    def get(self, res, ns, name):
        with self.lock:
            obj = self.objects[res.plural].get(
                (ns if res.namespaced else "", name))
            if obj is None:
                raise not_found(res, name)
            return obj

    def snapshot(self, plural, at_rev=None):
        """Objects of one kind as of at_rev: {(ns, name): obj}.

        Raises Expired when at_rev is older than the kept history."""
        with self.lock:
            cur = dict(self.objects[plural])
            if at_rev is None or at_rev >= self.rev:
                return cur
            if at_rev < self.compacted:
                raise Expired()
            for ev in reversed(self.history):
                if ev.rev <= at_rev:
                    break
                if ev.res != plural:
                    continue
                key = _key(ev.obj)
                if ev.type == "ADDED":
                    cur.pop(key, None)
                else:
                    cur[key] = ev.old
            return cur

    def events_after(self, rev):
        """Events with revision > rev, or None if rev was compacted away."""
        with self.lock:
            if rev < self.compacted:
                return None
            start = rev - self.compacted
            return self.history[start:] if start >= 0 else self.history[:]

    def wait_change(self, rev, epoch, timeout):
        """Block until the revision passes rev, the epoch changes, or
        timeout; returns True if something changed."""
        with self.lock:
            end = time.monotonic() + timeout
            while self.rev <= rev and self.epoch == epoch and \
                    not self.closing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    # --------------------------------------------------------------- control

    def compact(self, rev=None):
        """Forget history up to rev (default: all of it)."""
        with self.lock:
            rev = self.rev if rev is None else min(int(rev), self.rev)
            if rev <= self.compacted:
                return
            self.history = self.events_after(rev) or []
            self.compacted = rev
            self.issued = {r: t for r, t in self.issued.items() if r >= rev}
            self.cond.notify_all()

    def regress(self, rev, close_watches=True):
        """Restore every kind to revision rev and set the counter back."""
        with self.lock:
            rev = int(rev)
            snaps = {p: self.snapshot(p, rev) for p in so.RESOURCES}
            self.objects = snaps
            self.history = [e for e in self.history if e.rev <= rev]
            self.rev = rev
            self.compacted = min(self.compacted, rev)
            self._rebuild_alloc()
            if close_watches:
                self.epoch += 1
            self.dirty = True
            self.cond.notify_all()

    def reset(self, api_host, api_port):
        """Back to the seed objects; the revision keeps counting up, the
        history is compacted and open watches end."""
        with self.lock:
            rev = self.rev
            self._clear()
            self.rev = rev
            self.compacted = rev
            self.seed(api_host, api_port)
            self.compact()
            self.epoch += 1
            self.cond.notify_all()

    def close(self):
        with self.lock:
            self.closing = True
            self.cond.notify_all()

    def end_watches(self):
        with self.lock:
            self.epoch += 1
            self.cond.notify_all()

    def state(self):
        with self.lock:
            return {"revision": self.rev, "compactedRevision": self.compacted,
                    "historyLength": len(self.history),
                    "objects": {p: len(o) for p, o in self.objects.items()},
                    "epoch": self.epoch}

    # ----------------------------------------------------------- persistence

    def save(self, path=None):
        path = path or self.state_file
        if not path:
            return
        with self.lock:
            data = {"revision": self.rev,
                    "objects": {p: [o for _, o in sorted(objs.items())]
                                for p, objs in self.objects.items()},
                    "nextIP": self.next_ip, "nextPort": self.next_port}
            self.dirty = False
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    def load(self, path=None):
        """Load a state file if it exists; returns True if loaded."""
        path = path or self.state_file
        if not path or not os.path.exists(path):
            return False
        with open(path) as f:
            data = json.load(f)
        with self.lock:
            self._clear()
            for plural, objs in data.get("objects", {}).items():
                for o in objs:
                    self.objects[plural][_key(o)] = o
            self.rev = int(data["revision"])
            self.compacted = self.rev
            self.next_ip = data.get("nextIP", {})
            self.next_port = data.get("nextPort", self.node_port_range[0])
            self._rebuild_alloc()
        return True


def _key(obj):
    md = obj["metadata"]
    return (md.get("namespace", ""), md["name"])
