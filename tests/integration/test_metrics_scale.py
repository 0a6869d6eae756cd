"""/metrics of a large table (README "Metrics", metrics.per_backend).

ferry starts from a generated config of many services with 25 backends
each; the backends are addresses nothing listens on, and no connection is
made: only the exposition is checked. With per_backend false the reply is
200, holds the per-service series of every service and no per-backend
series, and stays within a few KiB per service (per-backend series would
add about 4 KiB per backend). With per_backend true, or left to auto for
the file's services, every backend has its series."""

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import admintest as at  # noqa: E402
import ferrytest as ft  # noqa: E402

SANITIZED = os.environ.get("FERRY_SANITIZED") == "1"
SERVICES = 400 if SANITIZED else 2000
BACKENDS = 25
PER_SERVICE_MAX = 2560  # bytes of per-service series, with room


def scale_config(n, port, admin, per_backend):
    """n services on 127.66.x.y:<port>, 25 backends each in 198.18.0.0/15
    (never contacted), relay on one worker to keep descriptors low."""
    out = ["log: {level: warn}", "relay: {workers: 1}",
           f'admin: {{enabled: true, listen: "{admin}"}}']
    if per_backend is not None:
        out.append(f"metrics: {{per_backend: {per_backend}}}")
    out.append("services:")
    for i in range(n):
        out.append(f"- name: svc-{i}")
        out.append(f'  listen: ["127.66.{1 + i // 250}.{1 + i % 250}:{port}"]')
        out.append("  backends:")
        for j in range(BACKENDS):
            out.append(f'  - {{address: "198.18.{i % 256}.{j + 1}:'
                       f'{8000 + i // 256}"}}')
    return "\n".join(out) + "\n"


def start_scaled(start_ferry, n, per_backend):
    admin = ft.free_addr()
    text = scale_config(n, ft.free_port(), admin, per_backend)
    f = start_ferry(text, wait=False)

    def ready():
        if not f.alive():
            raise AssertionError(f"ferry exited\n{f.log_text()}")
        try:
            return at.http(admin, "GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            return False
    ft.wait_for(ready, ft.scaled(30), "ferry ready with the large table")
    return admin


def scrape(admin):
    status, headers, body = at.http(admin, "GET", "/metrics",
                                    timeout=ft.scaled(30))
    assert status == 200, (status, body[:200])
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body.decode()


def count(text, prefix):
    return len(re.findall("^" + re.escape(prefix), text, re.M))


def test_per_backend_false_keeps_metrics_small(start_ferry):
    admin = start_scaled(start_ferry, SERVICES, "false")
    text = scrape(admin)
    assert len(text) < 64 * 1024 + SERVICES * PER_SERVICE_MAX, len(text)
    assert count(text, "ferry_service_connections_accepted_total{") \
        == SERVICES
    assert count(text, "ferry_service_connect_duration_seconds_count{") \
        == SERVICES
    assert 'ferry_service_connections_active{service="svc-%d"} 0\n' \
        % (SERVICES - 1) in text
    assert count(text, "ferry_backend_") == 0
    assert "# TYPE ferry_backend_" not in text


@pytest.mark.parametrize("per_backend", ["true", None])
def test_per_backend_series_present(start_ferry, per_backend):
    """true, and auto (the default) for services from the file."""
    n = 20
    admin = start_scaled(start_ferry, n, per_backend)
    text = scrape(admin)
    assert count(text, "ferry_service_connections_accepted_total{") == n
    assert count(text, "ferry_backend_weight{") == n * BACKENDS
    assert count(text, "ferry_backend_connect_duration_seconds_count{") \
        == n * BACKENDS
    assert ('ferry_backend_connections_total{service="svc-19",'
            'backend="198.18.19.25:8000",address="198.18.19.25:8000"} 0\n'
            in text)
