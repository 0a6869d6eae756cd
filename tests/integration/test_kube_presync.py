"""Kubernetes mode before the first full sync: ferry serves the file's
services alone, as at start, and a reload changes them at once (it used to
log "reload: applied" while the new file waited for the API)."""
import ferrytest as ft
from ferrytest import wait_for


def kube_config(services, api, healthz):
    return ft.config(services) + ft.to_yaml({
        "kubernetes": {"enabled": True, "api_server": f"https://{api}",
                       "node_name": "node-1"},
        "node": {"vip_interface": "none", "healthz_listen": healthz,
                 "dataplane": "proxy", "proxy_steering": "listen"},
    }) + "\n"


def test_reload_before_first_sync_serves_the_new_file(start_ferry,
                                                      backends):
    b = backends("b")
    api = ft.free_addr()  # nothing listens: the sync never comes
    healthz = ft.free_addr()
    a_addr, b_addr = ft.free_addr(), ft.free_addr()
    f = start_ferry(kube_config([ft.service("a", a_addr, [b])], api,
                                healthz))
    assert ft.hello(a_addr) == "b"
    off = f.reload(kube_config([ft.service("b", b_addr, [b])], api,
                               healthz))
    f.wait_log(r"reload: applied .*\(generation 2, 1 services\)", off)
    wait_for(lambda: ft.try_hello(b_addr) == "b", ft.scaled(10),
             "the reloaded file's service served")
    wait_for(lambda: ft.is_refused(a_addr), ft.scaled(10),
             "the removed service's listener closed")
