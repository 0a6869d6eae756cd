"""The README's examples are real: every YAML block in it that is a
configuration passes `ferry check-config`, and the keys its big
configuration block lists are the keys ferry knows (a renamed or removed
key fails here, not in a user's editor)."""
import os
import pathlib
import re
import subprocess
import textwrap

import pytest

import ferrytest as ft

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

# Keys a configuration file may start with; a block whose first key is
# another one (a fragment of a manifest, say) is not a configuration.
TOP_KEYS = {"log", "drain_timeout", "relay", "defaults", "admin", "services",
            "kubernetes", "node", "listeners"}


def yaml_blocks():
    text = README.read_text()
    out = []
    for m in re.finditer(r"^([ \t]*)```yaml\n(.*?)^[ \t]*```", text,
                         re.S | re.M):
        body = textwrap.dedent(m.group(2))
        line = text.count("\n", 0, m.start()) + 1
        first = re.match(r"\s*([A-Za-z_]+)\s*:", body)
        if first and first.group(1) in TOP_KEYS:
            out.append(pytest.param(body, id=f"README.md:{line}"))
    return out


@pytest.mark.parametrize("body", yaml_blocks())
def test_readme_yaml_passes_check_config(body, tmp_path):
    if "services:" not in body and "kubernetes:" not in body:
        # A settings fragment: check it beside one service.
        body += textwrap.dedent("""
            services:
              - name: readme
                listen: 127.0.0.1:18099
                backends: [{address: 127.0.0.1:18098}]
            """)
    path = tmp_path / "readme.yaml"
    path.write_text(body)
    r = subprocess.run([ft.ferry_bin(), "check-config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n--- block ---\n{body}"


def test_there_are_examples_to_check():
    # The test above must not pass by finding nothing.
    assert len(yaml_blocks()) >= 3


def test_node_name_alone_does_not_switch_on_kubernetes(start_ferry, backends):
    """README, "Running ferry": `--node-name` on its own changes nothing."""
    b = backends("b")
    listen = ft.free_addr()
    f = start_ferry(ft.config([ft.service("web", listen, [b])]),
                    args=["--node-name", "node-1"])
    with ft.connect(listen) as s:
        assert s.recv(64) == b"b\n"
    log = f.log_text()
    assert "serving 1 service(s)" in log, log
    assert "kubernetes" not in log.lower() and "api server" not in log.lower(), log


def test_kubeconfig_flag_switches_on_kubernetes(tmp_path, ferry_bin):
    """README, "Running ferry": --kubeconfig switches on Kubernetes mode
    (here it must fail on the missing file, which only Kubernetes mode
    reads)."""
    missing = tmp_path / "no-such-kubeconfig"
    r = subprocess.run([ferry_bin, "--kubeconfig", str(missing)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "no-such-kubeconfig" in r.stderr, r.stderr


def test_readme_names_every_fuzz_target():
    """README, "Tests": the list of fuzz targets is the one tests/fuzz/run
    runs (a target added without a word, or a word for none, fails)."""
    text = README.read_text()
    start = text.index("The targets,\nin `tests/fuzz/fuzz_<target>.c`")
    end = text.index("Longer runs", start)
    named = set(re.findall(r"`([a-z_]+)`", text[start:end]))
    run = (ROOT / "tests" / "fuzz" / "run").read_text()
    listed = set(re.search(r'^all="([^"]*)"', run, re.M).group(1).split())
    assert listed, "no target list in tests/fuzz/run"
    assert named == listed, (sorted(named - listed), sorted(listed - named))
