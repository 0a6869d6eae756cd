"""The build enforces which library may use which (proxy/meson.build).

For every library, a file that includes one header of every other library
is compiled with that library's own compile command (from the build's
compile_commands.json): a header of a library it may use must compile, one
of a library it may not use must fail. The private inside of the data
plane (svc-t.h, proxy-t.h, udp-t.h) compiles only in the data plane.
"""
import json
import os
import pathlib
import shlex
import subprocess

import pytest

# Once, in the release pass: which header compiles where is the same in
# every build (the sanitizer pass would compile the same files again).
pytestmark = pytest.mark.skipif(
    os.environ.get("FERRY_SANITIZED", "0") == "1",
    reason="include rules, the same in every build: once, in the release "
    "pass")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("FERRY_BUILD_DIR", ROOT / "build"))

# library -> (one of its sources, one of its headers)
LIBS = {
    "conf": ("conf/log.c", "log.h"),
    "watcher": ("watcher/backoff.c", "watcher.h"),
    "http": ("proxy/http/sbuf.c", "httpd.h"),
    "dataplane": ("proxy/dataplane/stats.c", "proxy.h"),
    "health": ("proxy/health/health.c", "health.h"),
    "node": ("proxy/node/vip.c", "kube.h"),
    "ops": ("proxy/ops/ctl.c", "admin.h"),
}

# What each library may include (itself included); everything else must
# fail to compile. Keep in step with proxy/meson.build and docs/.
ALLOWED = {
    "conf": {"conf"},
    "watcher": {"conf", "watcher"},
    "http": {"conf", "http"},
    "dataplane": {"conf", "dataplane"},
    "health": {"conf", "dataplane", "health"},
    "node": {"conf", "watcher", "dataplane", "health", "http", "node"},
    "ops": {"conf", "dataplane", "health", "http", "ops"},
}

PRIVATE = ["svc-t.h", "proxy-t.h", "udp-t.h"]


def compile_command(source):
    path = BUILD / "compile_commands.json"
    if not path.exists():
        pytest.skip(f"no {path}: build ferry with meson first")
    for c in json.loads(path.read_text()):
        if os.path.normpath(os.path.join(c["directory"], c["file"])) \
                == str(ROOT / source):
            return c["directory"], shlex.split(c["command"])
    pytest.fail(f"{source} is not in {path}")


def try_include(lib, header, tmp_path):
    directory, argv = compile_command(LIBS[lib][0])
    src = tmp_path / f"{lib}_includes_{header.replace('.', '_')}.c"
    src.write_text(f'#include "{header}"\nint layering_probe;\n')
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MQ", "-MF"):
            skip = True
            continue
        if a in ("-c", "-MD") or a.endswith(LIBS[lib][0].split("/")[-1]):
            continue
        out.append(a)
    out += ["-fsyntax-only", str(src)]
    r = subprocess.run(out, cwd=directory, capture_output=True, text=True,
                       timeout=60)
    return r.returncode == 0, r.stderr


@pytest.mark.parametrize("lib", sorted(LIBS))
def test_library_sees_only_what_it_may_use(lib, tmp_path):
    wrong = []
    for other, (_, header) in sorted(LIBS.items()):
        ok, err = try_include(lib, header, tmp_path)
        allowed = other in ALLOWED[lib]
        if ok != allowed:
            wrong.append(f"{lib} including {header} ({other}): "
                         f"{'compiled' if ok else 'failed'}"
                         f"{'' if ok else ': ' + err.strip()[:300]}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("lib", sorted(LIBS))
def test_dataplane_inside_is_private(lib, tmp_path):
    for header in PRIVATE:
        ok, err = try_include(lib, header, tmp_path)
        if lib == "dataplane":
            assert ok, err
        else:
            assert not ok, f"{lib} compiled {header}"
            if "dataplane" in ALLOWED[lib]:
                # It finds the file, and the guard refuses it.
                assert "private to proxy/dataplane" in err, err
