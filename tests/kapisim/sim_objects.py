"""Kinds served by the simulator: their identity, defaults and validation.

Objects are plain dicts as they appear in
JSON.  prepare_* functions never mutate their inputs' nested values in place
without having deep-copied them first (the store keeps stored objects
immutable).
"""

import ipaddress
import re

from sim_errors import invalid

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUB = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Resource:
    """Static description of one served resource."""

    def __init__(self, plural, singular, kind, group, version, namespaced,
                 field_names, short=None, verbs=None):
        self.plural = plural
        self.singular = singular
        self.kind = kind
        self.group = group
        self.version = version
        self.namespaced = namespaced
        self.field_names = field_names
        self.short = short or []
        self.verbs = verbs or ["create", "delete", "get", "list", "patch",
                               "update", "watch"]

    @property
    def api_version(self):
        return self.group + "/" + self.version if self.group else self.version

    @property
    def qualified(self):
        """`services` or `endpointslices.discovery.k8s.io` (error texts)."""
        return self.plural + ("." + self.group if self.group else "")

    @property
    def list_kind(self):
        return self.kind + "List"

    def fields(self, obj):
        md = obj.get("metadata", {})
        f = {"metadata.name": md.get("name", ""),
             "metadata.namespace": md.get("namespace", "")}
        if self.plural == "services":
            spec = obj.get("spec", {})
            f["spec.clusterIP"] = spec.get("clusterIP", "")
            f["spec.type"] = spec.get("type", "")
        elif self.plural == "namespaces":
            f["status.phase"] = obj.get("status", {}).get("phase", "")
        return f

    def empty(self, rv, annotations=None):
        """The empty object of this kind carried by a BOOKMARK."""
        md = {"resourceVersion": str(rv), "creationTimestamp": None}
        if annotations:
            md["annotations"] = annotations
        o = {"kind": self.kind, "apiVersion": self.api_version, "metadata": md}
        if self.plural == "services":
            o["spec"] = {}
            o["status"] = {"loadBalancer": {}}
        elif self.plural == "endpointslices":
            o["addressType"] = ""
            o["endpoints"] = None
            o["ports"] = None
        else:
            o["spec"] = {}
            o["status"] = {}
        return o


SERVICES = Resource("services", "service", "Service", "", "v1", True,
                    {"metadata.name", "metadata.namespace", "spec.clusterIP",
                     "spec.type"}, short=["svc"])
ENDPOINTSLICES = Resource("endpointslices", "endpointslice", "EndpointSlice",
                          "discovery.k8s.io", "v1", True,
                          {"metadata.name", "metadata.namespace"},
                          verbs=["create", "delete", "deletecollection", "get",
                                 "list", "patch", "update", "watch"])
NAMESPACES = Resource("namespaces", "namespace", "Namespace", "", "v1", False,
                      {"metadata.name", "status.phase"}, short=["ns"],
                      verbs=["create", "delete", "get", "list", "watch"])

RESOURCES = {r.plural: r for r in (SERVICES, ENDPOINTSLICES, NAMESPACES)}
# (group, version) -> {plural: Resource}
GROUPS = {("", "v1"): {"services": SERVICES, "namespaces": NAMESPACES},
          ("discovery.k8s.io", "v1"): {"endpointslices": ENDPOINTSLICES}}


def _err(res, name, causes):
    return invalid(res.kind, res.group, name, causes)


def check_metadata(res, obj, causes):
    """Name / label sanity shared by all kinds; appends to causes."""
    md = obj.get("metadata")
    name = md.get("name", "")
    if not name:
        causes.append(("metadata.name", "Required value",
                       "name or generateName is required"))
        return
    pattern, what = DNS1123_SUB, "a lowercase RFC 1123 subdomain"
    if res.plural == "services":
        pattern, what = DNS1035, "a DNS-1035 label"
    elif res.plural == "namespaces":
        pattern, what = DNS1123_LABEL, "a lowercase RFC 1123 label"
    if len(name) > (63 if pattern is not DNS1123_SUB else 253) or \
            not pattern.match(name):
        causes.append(("metadata.name", 'Invalid value: "%s"' % name,
                       "%s must consist of lower case alphanumeric "
                       "characters or '-'" % what))
    for key in ("labels", "annotations"):
        val = md.get(key)
        if val is None:
            continue
        if not isinstance(val, dict) or not all(
                isinstance(k, str) and isinstance(v, str)
                for k, v in val.items()):
            causes.append(("metadata." + key, "Invalid value",
                           "must be a map of strings"))


def _port_num(v):
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535


def validate_service(svc, node_port_range, causes):
    spec = svc.get("spec")
    typ = spec.get("type", "ClusterIP")
    types = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
    if typ not in types:
        causes.append(("spec.type", 'Unsupported value: "%s"' % typ,
                       'supported values: ' + ", ".join(
                           '"%s"' % t for t in types)))
        return
    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        causes.append(("spec.ports", "Invalid value", "must be a list"))
        return
    headless = spec.get("clusterIP") == "None"
    if not ports and typ != "ExternalName" and not headless:
        causes.append(("spec.ports", "Required value", ""))
    if typ == "ExternalName" and not spec.get("externalName"):
        causes.append(("spec.externalName", "Required value", ""))
    seen_names, seen_pp = set(), set()
    for i, p in enumerate(ports):
        path = "spec.ports[%d]" % i
        if not isinstance(p, dict):
            causes.append((path, "Invalid value", "must be an object"))
            continue
        name = p.get("name", "")
        if len(ports) > 1 and not name:
            causes.append((path + ".name", "Required value", ""))
        elif name in seen_names and name:
            causes.append((path + ".name", 'Duplicate value: "%s"' % name,
                           ""))
        seen_names.add(name)
        if not _port_num(p.get("port")):
            causes.append((path + ".port", "Invalid value: %r" %
                           (p.get("port"),),
                           "must be between 1 and 65535, inclusive"))
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            causes.append((path + ".protocol", 'Unsupported value: "%s"' %
                           proto, 'supported values: "SCTP", "TCP", "UDP"'))
        if (p.get("port"), proto) in seen_pp:
            causes.append((path, "Duplicate value", "port and protocol"))
        seen_pp.add((p.get("port"), proto))
        np = p.get("nodePort", 0)
        if np:
            lo, hi = node_port_range
            if typ not in ("NodePort", "LoadBalancer"):
                causes.append((path + ".nodePort", "Forbidden",
                               "may not be used when `type` is '%s'" % typ))
            elif not isinstance(np, int) or not lo <= np <= hi:
                causes.append((path + ".nodePort", "Invalid value: %r" % (np,),
                               "provided port is not in the valid range. The "
                               "range of valid ports is %d-%d" % (lo, hi)))
    for fld, allowed in (("sessionAffinity", ("None", "ClientIP")),
                         ("externalTrafficPolicy", ("Cluster", "Local")),
                         ("internalTrafficPolicy", ("Cluster", "Local")),
                         ("ipFamilyPolicy", ("SingleStack", "PreferDualStack",
                                             "RequireDualStack"))):
        v = spec.get(fld)
        if v is not None and v not in allowed:
            causes.append(("spec." + fld, 'Unsupported value: "%s"' % v,
                           "supported values: " + ", ".join(
                               '"%s"' % a for a in allowed)))
    for i, ip in enumerate(spec.get("externalIPs") or []):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            causes.append(("spec.externalIPs[%d]" % i,
                           'Invalid value: "%s"' % ip,
                           "must be a valid IP address"))
    ip = spec.get("clusterIP")
    if ip not in (None, "", "None"):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            causes.append(("spec.clusterIPs[0]", 'Invalid value: "%s"' % ip,
                           "must be a valid IP address, (e.g. 10.9.8.7 or "
                           "2001:db8::ffff)"))


def default_service(svc, ipv4_only_family):
    """Apply the API server's Service defaults (not the allocations)."""
    spec = svc.setdefault("spec", {})
    typ = spec.setdefault("type", "ClusterIP")
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if typ != "ExternalName" or "targetPort" in p:
            p.setdefault("targetPort", p.get("port"))
    if typ != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    else:
        spec.setdefault("sessionAffinity", "None")
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = spec.setdefault("sessionAffinityConfig", {})
        cfg.setdefault("clientIP", {}).setdefault("timeoutSeconds", 10800)
    if typ in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if typ == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    st = svc.setdefault("status", {})
    lb = st.setdefault("loadBalancer", {})
    for ing in lb.get("ingress") or []:
        if ing.get("ip"):
            ing.setdefault("ipMode", "VIP")


def validate_slice(sl, causes):
    at = sl.get("addressType")
    if not at:
        causes.append(("addressType", "Required value", ""))
    elif at not in ("IPv4", "IPv6", "FQDN"):
        causes.append(("addressType", 'Unsupported value: "%s"' % at,
                       'supported values: "FQDN", "IPv4", "IPv6"'))
    eps = sl.get("endpoints")
    if eps is not None and not isinstance(eps, list):
        causes.append(("endpoints", "Invalid value", "must be a list"))
        eps = []
    for i, ep in enumerate(eps or []):
        path = "endpoints[%d]" % i
        addrs = ep.get("addresses") if isinstance(ep, dict) else None
        if not addrs:
            causes.append((path + ".addresses", "Required value",
                           "must contain at least 1 address"))
            continue
        for j, a in enumerate(addrs):
            ok = True
            try:
                ipa = ipaddress.ip_address(a)
                if at == "IPv4" and ipa.version != 4 or \
                        at == "IPv6" and ipa.version != 6:
                    ok = False
            except (ValueError, TypeError):
                ok = at == "FQDN"
            if not ok:
                causes.append(("%s.addresses[%d]" % (path, j),
                               'Invalid value: "%s"' % a,
                               "must be a valid %s address" % at))
    seen = set()
    for i, p in enumerate(sl.get("ports") or []):
        name = p.get("name", "")
        if name in seen:
            causes.append(("ports[%d].name" % i,
                           'Duplicate value: "%s"' % name, ""))
        seen.add(name)
        port = p.get("port")
        if port is not None and not (isinstance(port, int) and
                                     0 <= port <= 65535):
            causes.append(("ports[%d].port" % i, "Invalid value: %r" % port,
                           "must be between 0 and 65535"))
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            causes.append(("ports[%d].protocol" % i,
                           'Unsupported value: "%s"' % proto,
                           'supported values: "SCTP", "TCP", "UDP"'))


def default_slice(sl, null_when_empty):
    eps = sl.get("endpoints")
    if not eps:
        sl["endpoints"] = None if null_when_empty else []
    if "ports" not in sl:
        sl["ports"] = None
    for p in sl.get("ports") or []:
        p.setdefault("name", "")
        p.setdefault("protocol", "TCP")


def default_namespace(ns):
    name = ns["metadata"]["name"]
    ns["metadata"].setdefault("labels", {})
    ns["metadata"]["labels"]["kubernetes.io/metadata.name"] = name
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns["status"] = {"phase": "Active"}


def validate(res, obj, node_port_range):
    """Raise 422 for an invalid object of resource res."""
    causes = []
    check_metadata(res, obj, causes)
    if res is SERVICES:
        validate_service(obj, node_port_range, causes)
    elif res is ENDPOINTSLICES:
        validate_slice(obj, causes)
    if causes:
        raise _err(res, obj["metadata"].get("name", ""), causes)
