"""Generic fixtures for the integration tests.

Only fixtures that any integration test may use live here: the ferry
binary, a factory that starts ferry and always stops it, a factory for
in-process backends, and a report hook that attaches every ferry log to a
failing test. Nothing here runs unless a test asks for it.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import ferrytest  # noqa: E402


# Files that take tens of seconds run first. tests/run spreads whole files
# over its workers (--dist loadfile), each taking the next file in this
# order when it is done: a long file taken last keeps one worker busy on
# its own after the others have finished. Other files keep their order.
LONG_FIRST = ["test_commands.py", "test_kube_e2e.py", "test_kapisim.py",
              "test_faults.py", "test_minicluster.py",
              "test_watcher_kapisim.py", "test_check_config.py",
              "test_minicluster_kernel.py", "test_bench.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        for f in getattr(item, "ferry_procs", []):
            rep.sections.append((f"ferry log {f.log_path}", f.log_text()))


@pytest.fixture(scope="session")
def ferry_bin():
    """Path of the ferry binary ($FERRY_BIN or build/proxy/ferry)."""
    path = ferrytest.ferry_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"ferry binary not found at {path}: build it, or set "
                    "FERRY_BIN")
    return path


@pytest.fixture
def start_ferry(request, tmp_path, ferry_bin):
    """start_ferry(config_text, wait=True, **kw) -> a running
    ferrytest.Ferry; kw go to ferrytest.Ferry (args, name, rlimit_nofile,
    prefix, config_flag). Use a distinct name for each ferry of a test.

    Every ferry started is stopped at teardown (SIGTERM, then SIGKILL), and
    its log is attached to the report of a failing test. A ferry that does
    not exit 0 on SIGTERM fails the test at teardown, unless the test has
    already failed or stopped it itself."""
    procs = []
    request.node.ferry_procs = procs

    def start(config_text, wait=True, **kw):
        f = ferrytest.Ferry(tmp_path, config_text, binary=ferry_bin, **kw)
        procs.append(f)
        return f.start(wait=wait)

    yield start

    problems = []
    for f in procs:
        was_running = f.alive()
        rc = f.stop()
        if was_running and rc != 0:
            problems.append(f"{f.name} (pid {f.pid}) exited with {rc} on "
                            "SIGTERM at teardown (None = killed)")
    call = getattr(request.node, "rep_call", None)
    if problems and call is not None and call.passed:
        logs = "\n".join(f"--- {f.log_path} ---\n{f.log_text()}"
                         for f in procs)
        pytest.fail("\n".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def backends():
    """make(name, handler="greet", host="127.0.0.1", sock=None) -> a
    running ferrytest.Backend, stopped at teardown."""
    made = []

    def make(name="backend", handler="greet", host="127.0.0.1", sock=None,
             backlog=128):
        b = ferrytest.Backend(name, handler, host=host, sock=sock,
                              backlog=backlog)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def closer(start_ferry):
    """closer(obj) registers a socket-like object (anything with close())
    to be closed at teardown, before any ferry is stopped (so that ferry's
    drain does not wait for it); returns obj."""
    objs = []

    def add(obj):
        objs.append(obj)
        return obj

    yield add
    for o in reversed(objs):
        try:
            o.close()
        except OSError:
            pass
