"""The README's two commands, one after the other, in a fresh copy of this
tree, as on a fresh machine:

1. `bash conf/examples/demo.sh`, on a machine without the test packages
   yet: cmocka is hidden from meson (pkg-config and CMake), so build/
   comes out without unit tests, as on a minimal Debian 12. The demo runs
   in the foreground: it must answer on its port with its three backends,
   then stop cleanly on SIGTERM (exit 0, ferry and the backends gone).
2. `bash tests/run --unit-only` (tests/run's build and unit tests, so the
   suite does not run itself) in the same tree, cmocka visible again: it
   must build and pass the unit tests, not reuse build/ as the demo left
   it ("No tests defined").
3. The demo again, on the build/ that tests/run left.

Where the copy has git history, its build/ is first set up from the tree
before proxy/ was split into libraries (a build directory from an older
layout), for the demo to start from.

The copy is a git clone of this checkout with the working tree's
uncommitted changes on top (modified, deleted and untracked files git
does not ignore), so the test checks the tree it runs in; without git, a
copy of the tree without build directories. The demo's ports come from
ft.free_port (FERRY_DEMO_PORTS). Skipped in the sanitizer pass: it runs
the commands, not the binary under test.

Under tests/run the copy's compiles come from ccache (CCACHE_NOHASHDIR:
the same sources as build/, in another directory); what is checked is the
build directories' states and the commands, not the compiler.

Run: /usr/bin/python3 -m pytest tests/integration/test_commands.py
(minutes without ccache: it builds ferry from scratch).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest as ft  # noqa: E402

REPO = ft.REPO_ROOT
SANITIZED = os.environ.get("FERRY_SANITIZED", "0") == "1"
BUILD_DEADLINE = ft.scaled(900)  # a whole build on a busy 2-core machine

pytestmark = pytest.mark.skipif(
    SANITIZED, reason="runs the README's commands, not the binary under "
    "test: once, in the release pass")


def git(*args, cwd=REPO, check=True):
    return subprocess.run(["git", "-C", str(cwd), *args], check=check,
                          capture_output=True, text=True, timeout=120)


def is_checkout():
    if shutil.which("git") is None:
        return False
    r = git("rev-parse", "--show-toplevel", check=False)
    return r.returncode == 0 and Path(r.stdout.strip()).resolve() == REPO


def overlay(dest):
    """Copy the working tree's uncommitted changes onto the clone."""
    changed = git("diff", "--name-only", "-z", "HEAD").stdout
    new = git("ls-files", "--others", "--exclude-standard", "-z").stdout
    for rel in filter(None, (changed + new).split("\0")):
        src, dst = REPO / rel, dest / rel
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        if src.is_symlink() or src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)


def copy_tree(dest):
    """The tree without .git, caches and build directories."""
    def ignore(d, names):
        skip = set()
        for n in names:
            p = os.path.join(d, n)
            if n in (".git", "__pycache__", ".pytest_cache") or (
                    os.path.isdir(p) and (
                        os.path.exists(os.path.join(p, "meson-private"))
                        or (Path(d) == REPO and n.startswith("build")))):
                skip.add(n)
        return skip
    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)


def before_split(tree):
    """The last commit before proxy/ was split into libraries, or None."""
    r = git("log", "--format=%H", "--diff-filter=A", "--",
            "proxy/dataplane/meson.build", cwd=tree, check=False)
    added = r.stdout.split()
    if r.returncode != 0 or not added:
        return None
    r = git("rev-parse", "--verify", "-q", added[-1] + "^", cwd=tree,
            check=False)
    return r.stdout.strip() or None


def without_cmocka(tmp):
    """os.environ, with meson unable to find cmocka (a machine where the
    test packages are not installed yet)."""
    pkgconf = shutil.which("pkg-config")
    if pkgconf is None:
        pytest.skip("needs pkg-config (deploy/install-deps build)")
    pc_path = subprocess.run([pkgconf, "--variable", "pc_path", "pkg-config"],
                             capture_output=True, text=True,
                             timeout=30).stdout.strip()
    pcdir = tmp / "pkgconfig"
    pcdir.mkdir()
    for d in filter(None, pc_path.split(":")):
        for f in sorted(Path(d).glob("*.pc")):
            link = pcdir / f.name
            if not f.name.startswith("cmocka") and not link.exists():
                link.symlink_to(f)
    # CMake's package files would find cmocka too: a cmake that does not
    # run leaves meson pkg-config alone.
    return dict(os.environ, PKG_CONFIG_LIBDIR=str(pcdir), PKG_CONFIG_PATH="",
                CMAKE=shutil.which("false") or "/bin/false")


def session_pids(sid):
    """PIDs of the processes in session <sid>."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(d))
    return pids


def run_bounded(argv, cwd, env, log, timeout):
    """Run <argv> in its own session with output to <log>; kill the whole
    session if it outlives <timeout>. Returns the exit status."""
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out,
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
        pytest.fail(f"{' '.join(argv)} still running after {timeout:.0f}s:"
                    f"\n{tail(log)}")


def tail(path, n=60):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"({path}: no log)"
    return "\n".join(lines[-n:])


def ask(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/",
                                timeout=5) as r:
        return r.read().decode().strip()


def run_demo(tree, env, log):
    """Run the demo in <tree> in the foreground until it answers, check
    its spread, then stop it with SIGTERM: it must exit 0, with ferry and
    its backends gone."""
    ports = [ft.free_port() for _ in range(4)]
    env = dict(env, FERRY_DEMO_PORTS=" ".join(map(str, ports)))
    with open(log, "wb") as out:
        demo = subprocess.Popen(["bash", "conf/examples/demo.sh"], cwd=tree,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        def serving():
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited with "
                                     f"{demo.returncode}:\n{tail(log)}")
            return ask(ports[0]).startswith("web-")
        ft.wait_for(serving, timeout=BUILD_DEADLINE, interval=0.5,
                    what="the demo answering on 127.0.0.1:%d" % ports[0])
        assert {ask(ports[0]) for _ in range(3)} == {"web-1", "web-2",
                                                     "web-3"}
        ft.wait_for(lambda: "ferry is balancing 127.0.0.1:%d" % ports[0]
                    in log.read_text(errors="replace"),
                    what="the demo's instructions")
        demo.send_signal(signal.SIGTERM)
        rc = demo.wait(ft.scaled(60))
        assert rc == 0, tail(log)
        assert "demo stopped" in log.read_text(errors="replace")
        # The demo waits for ferry and its backends before it exits.
        assert session_pids(demo.pid) == []
        assert all(ft.is_refused("127.0.0.1:%d" % p) for p in ports)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(30)
        if session_pids(demo.pid):
            os.killpg(demo.pid, signal.SIGKILL)


@pytest.fixture
def tree(tmp_path):
    """A fresh copy of this tree (see the module's docstring) and the
    commit before the proxy/ split in it, if it has history."""
    dest = tmp_path / "ferry"
    if is_checkout():
        git("clone", "-q", str(REPO), str(dest))
        old = before_split(dest)
        return dest, old
    if not (REPO / "meson.build").is_file():
        pytest.skip(f"{REPO} is not a source tree")
    copy_tree(dest)
    return dest, None


def test_demo_then_tests_run_in_a_fresh_tree(tree, tmp_path):
    dest, old = tree
    if os.geteuid() != 0:
        r = subprocess.run(["bash", "deploy/install-deps", "build", "demo",
                            "test"], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            pytest.skip(f"packages missing and not root: {r.stderr.strip()}")
    hidden = without_cmocka(tmp_path)

    if old is not None:
        # build/ from the tree before the split, set up as the demo did.
        head = git("rev-parse", "HEAD", cwd=dest).stdout.strip()
        git("checkout", "-q", "--detach", old, cwd=dest)
        rc = run_bounded(["meson", "setup", "build"], dest, hidden,
                         tmp_path / "old-setup.log", BUILD_DEADLINE)
        assert rc == 0, tail(tmp_path / "old-setup.log")
        git("checkout", "-q", "--detach", head, cwd=dest)
    if is_checkout():
        overlay(dest)

    # 1. The demo, where cmocka cannot be found yet.
    run_demo(dest, hidden, tmp_path / "demo.log")
    meson_log = (dest / "build" / "meson-logs" / "meson-log.txt").read_text(
        errors="replace")
    assert re.search(r"dependency cmocka found: NO", meson_log), \
        "the demo's build/ found cmocka: the test no longer starts " \
        "from a build/ without unit tests"

    # 2. tests/run's build and unit tests in the same tree, cmocka back.
    log = tmp_path / "tests-run.log"
    rc = run_bounded(["bash", "tests/run", "--unit-only"], dest, os.environ,
                     log, BUILD_DEADLINE)
    text = log.read_text(errors="replace")
    lines = text.strip().splitlines()
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1] if lines
                     else "")
    unit = re.findall(r"^\s*'(\w+)'\s*:\s*\[",
                      (dest / "tests/unit/meson.build").read_text(), re.M)
    assert rc == 0 and m and m[2] == "0" and int(m[1]) >= len(unit) > 0, (
        f"tests/run --unit-only exited {rc}, {len(unit)} unit tests "
        f"registered:\n{tail(log)}")

    # 3. The demo again, on the build/ tests/run left.
    run_demo(dest, os.environ, tmp_path / "demo-again.log")
