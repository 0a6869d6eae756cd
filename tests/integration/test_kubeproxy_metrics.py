"""kube-proxy's metrics under kube-proxy's names on node.metrics_listen
(issue 15, point 5): ferry in node mode against the simulated API server
(plain HTTP, root namespace, no service addresses managed), each series
made to move, checked against the Prometheus text format (parsed by
prometheus_client) for names, types and labels.

- kubeproxy_sync_proxy_rules_duration_seconds counts every sync, also one
  whose table came out unchanged; last_timestamp is a recent Unix time.
- last_queued_timestamp follows the latest Service or slice change.
- endpoint_changes_total and service_changes_total count each watch event
  of their kind (added, modified, deleted) and each object a list brings.
- no_local_endpoints_total{traffic_policy} counts a Service port with a
  Local policy whose endpoints are all on other nodes.
- kubeproxy_network_programming_duration_seconds (and ferry's own
  ferry_network_programming_duration_seconds) start at the slice's
  endpoints.kubernetes.io/last-change-trigger-time: a trigger a second old
  is observed as at least a second; one from before ferry started, a
  deletion's, or one that arrives with a relist, is not observed.
- kubeproxy_proxy_healthz_total / kubeproxy_proxy_livez_total{code}.

Run: /usr/bin/python3 -m pytest tests/integration/test_kubeproxy_metrics.py
"""

import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402
import kubetest as kt  # noqa: E402
from ferrytest import wait_for  # noqa: E402
from kapisim_client import start_sim  # noqa: E402

NODE = "n1"
TRIGGER = "endpoints.kubernetes.io/last-change-trigger-time"
KP = "kubeproxy_sync_proxy_rules_"
PROG = "kubeproxy_network_programming_duration_seconds"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"

# name -> (type, label names of its samples)
EXPECTED = {
    KP + "duration_seconds": ("histogram", set()),
    KP + "last_timestamp_seconds": ("gauge", set()),
    KP + "last_queued_timestamp_seconds": ("gauge", set()),
    KP + "endpoint_changes_total": ("counter", set()),
    KP + "endpoint_changes_pending": ("gauge", set()),
    KP + "service_changes_total": ("counter", set()),
    KP + "service_changes_pending": ("gauge", set()),
    KP + "no_local_endpoints_total": ("gauge", {"traffic_policy"}),
    PROG: ("histogram", set()),
    "kubeproxy_proxy_healthz_total": ("counter", {"code"}),
    "kubeproxy_proxy_livez_total": ("counter", {"code"}),
}


def rfc3339(t):
    return datetime.datetime.fromtimestamp(
        t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scrape(addr):
    """({(sample name, labels): value}, {family name: (type, labels)})."""
    from prometheus_client.parser import text_string_to_metric_families
    status, headers, body = at.http(addr, "GET", "/metrics")
    assert status == 200, (status, body[:200])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, fams = {}, {}
    for fam in text_string_to_metric_families(body.decode()):
        # The parser drops a counter's _total from the family's name.
        name = fam.name + ("_total" if fam.type == "counter" else "")
        labels = set()
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            labels |= set(s.labels) - {"le"}
        fams[name] = (fam.type, labels)
    return samples, fams


def val(m, name, **labels):
    return m[(name, frozenset(labels.items()))]


def slice_obj(name, node, trigger=None):
    pod = kt.Pod.__new__(kt.Pod)
    pod.name, pod.ip = "pod-" + name, "198.18.7.9"
    obj = kt.slice_obj(name, "web", [kt.ep(pod, node=node)], 8080)
    if trigger is not None:
        obj["metadata"]["annotations"] = {TRIGGER: trigger}
    return obj


def test_kubeproxy_metrics(start_ferry, tmp_path):
    (tmp_path / "sim").mkdir()
    sim = start_sim(str(tmp_path / "sim"), bookmark_interval=0.5,
                    service_cidr=kt.service_cidr())
    try:
        run(start_ferry, tmp_path, sim)
    finally:
        sim.stop()


def run(start_ferry, tmp_path, sim):
    kc = ft.write_kubeconfig(tmp_path / "kubeconfig", sim.url)
    metrics, healthz, admin = ft.free_addr(), ft.free_addr(), ft.free_addr()
    # Objects there before ferry: the first list brings them, each a change.
    sim.create("services", kt.svc_obj("pre", [("http", 81, None)],
                                      type="ClusterIP"))
    n_services = len(sim.list("services")["items"])
    n_slices = len(sim.list("endpointslices")["items"])
    t_start = time.time()
    f = start_ferry(ft.to_yaml({
        "drain_timeout": "1s",
        "kubernetes": {"enabled": True, "kubeconfig": str(kc),
                       "node_name": NODE},
        "node": {"vip_interface": "none", "dataplane": "proxy",
                 "proxy_steering": "listen",
                 "healthz_listen": healthz, "metrics_listen": metrics},
        "admin": {"enabled": True, "listen": admin},
    }) + "\n", wait=False)
    f.wait_log(r"metrics: kube-proxy's metrics on http://%s/metrics"
               % metrics.replace("[", r"\[").replace("]", r"\]"))

    def synced():
        try:
            return val(scrape(metrics)[0], KP + "duration_seconds_count") >= 1
        except OSError:
            return False
    wait_for(synced, ft.scaled(10), "the first sync counted")
    m0, fams = scrape(metrics)
    for name, (typ, labels) in EXPECTED.items():
        assert fams.get(name) == (typ, labels), (name, fams.get(name))
    assert not [n for n in fams if n not in EXPECTED], sorted(fams)
    assert val(m0, KP + "last_timestamp_seconds") >= t_start - 1
    assert val(m0, KP + "service_changes_total") == n_services
    assert val(m0, KP + "endpoint_changes_total") == n_slices
    assert val(m0, PROG + "_count") == 0
    assert val(m0, KP + "no_local_endpoints_total",
               traffic_policy="internal") == 0

    # A Service with a Local internal policy, its only endpoint on another
    # node, a trigger time a second old (after ferry started).
    wait_for(lambda: time.time() > t_start + 1.5, ft.scaled(5),
             "a trigger time after ferry's start can be a second old")
    t_change = time.time()
    sim.create("services", kt.svc_obj("web", [("http", 80, None)],
                                      type="ClusterIP",
                                      internalTrafficPolicy="Local"))
    sim.create("endpointslices", slice_obj("web-1", "n2",
                                           rfc3339(time.time() - 1.0)))

    def moved():
        m = scrape(metrics)[0]
        return (val(m, KP + "no_local_endpoints_total",
                    traffic_policy="internal") == 1
                and val(m, PROG + "_count") == 1) and m
    m1 = wait_for(moved, ft.scaled(10), "the Local Service counted")
    assert val(m1, KP + "service_changes_total") \
        == val(m0, KP + "service_changes_total") + 1
    assert val(m1, KP + "endpoint_changes_total") \
        == val(m0, KP + "endpoint_changes_total") + 1
    assert val(m1, KP + "no_local_endpoints_total",
               traffic_policy="external") == 0
    assert val(m1, KP + "duration_seconds_count") \
        > val(m0, KP + "duration_seconds_count")
    assert val(m1, KP + "last_timestamp_seconds") >= t_change - 0.5
    assert val(m1, KP + "last_queued_timestamp_seconds") >= t_change - 0.5
    assert val(m1, KP + "endpoint_changes_pending") == 0
    # From the trigger, not from the event's arrival: at least a second.
    assert val(m1, PROG + "_sum") >= 1.0
    assert val(m1, PROG + "_bucket", le="0.5") == 0
    assert val(m1, PROG + "_bucket", le="+Inf") == 1
    fm = at.scrape(admin)
    assert at.sample(fm, "ferry_network_programming_duration_seconds_count") \
        == 1
    assert at.sample(fm, "ferry_network_programming_duration_seconds_sum") \
        >= 1.0

    # The endpoint moves to this node, with a trigger from before ferry
    # started: counted as a change, not as programming latency.
    sim.replace("endpointslices", slice_obj("web-1", NODE,
                                            "2000-01-01T00:00:00Z"))
    m2 = wait_for(lambda: (lambda m: val(
        m, KP + "no_local_endpoints_total", traffic_policy="internal") == 0
        and m)(scrape(metrics)[0]), ft.scaled(10), "the endpoint local")
    assert val(m2, KP + "endpoint_changes_total") \
        == val(m1, KP + "endpoint_changes_total") + 1
    assert val(m2, PROG + "_count") == 1

    # The same endpoints again with a new trigger: the table is unchanged,
    # still a sync (counted) and programming observed.
    sim.replace("endpointslices", slice_obj("web-1", NODE,
                                            rfc3339(time.time())))
    m3 = wait_for(lambda: (lambda m: val(m, PROG + "_count") == 2 and m)(
        scrape(metrics)[0]), ft.scaled(10), "an unchanged sync observed")
    assert val(m3, KP + "duration_seconds_count") \
        > val(m2, KP + "duration_seconds_count")

    # A deletion is a change; its annotation is not a trigger.
    sim.delete("endpointslices", "web-1")
    m4 = wait_for(lambda: (lambda m: val(
        m, KP + "endpoint_changes_total")
        == val(m3, KP + "endpoint_changes_total") + 1 and m)(
        scrape(metrics)[0]), ft.scaled(10), "the deletion counted")
    assert val(m4, PROG + "_count") == 2

    # A slice created while the watch is down comes with the relist after
    # a 410: each slice listed is a change, no trigger is measured.
    off = f.log_size()
    sim.fault(action="fail", path=SLICES, watch=True, status=503, count=-1)
    sim.fault(action="end_watches")
    f.wait_log(r"kube-api: watch endpointslices: HTTP 503", off)
    sim.create("endpointslices", slice_obj("web-2", "n2",
                                           rfc3339(time.time() - 1.0)))
    sim.clear_faults()
    sim.fault(action="gone", path=SLICES, watch=True)
    listed = len(sim.list("endpointslices")["items"])
    f.wait_log(r"kube-api: listed %d endpointslices" % listed, off)
    m5 = wait_for(lambda: (lambda m: val(
        m, KP + "no_local_endpoints_total", traffic_policy="internal") == 1
        and m)(scrape(metrics)[0]), ft.scaled(10), "the relisted slice")
    assert val(m5, KP + "endpoint_changes_total") \
        == val(m4, KP + "endpoint_changes_total") + listed
    assert val(m5, PROG + "_count") == 2

    # kube-proxy's health answers, counted by code.
    for path in ("/healthz", "/healthz", "/livez"):
        assert at.http(healthz, "GET", path)[0] == 200
    m6 = scrape(metrics)[0]
    assert val(m6, "kubeproxy_proxy_healthz_total", code="200") \
        == val(m5, "kubeproxy_proxy_healthz_total", code="200") + 2
    assert val(m6, "kubeproxy_proxy_livez_total", code="200") \
        == val(m5, "kubeproxy_proxy_livez_total", code="200") + 1
    assert val(m6, "kubeproxy_proxy_healthz_total", code="503") == 0

    # Only GET (or HEAD) /metrics.
    assert at.http(metrics, "GET", "/nope")[0] == 404
    assert at.http(metrics, "POST", "/metrics", headers={})[0] == 405
    assert at.http(metrics, "HEAD", "/metrics")[0] == 200
    assert f.alive()
