"""Build deploy/Dockerfile with podman, daemonless and without a registry,
for tests/integration/test_image.py; tests/run starts the build in the
background at its start (the image test then waits for it).

    /usr/bin/python3 tests/lib/imagetest.py build [RESULT.json]

No registry is reachable, so the Dockerfile's base image (its FROM) is made
here: a minimal Debian 12 root file system (debootstrap --variant=minbase
from the mirror apt uses), trimmed the way Debian's -slim images are,
imported with `podman import` under the FROM's name. It is kept between
runs in the cache directory ($FERRY_IMAGE_CACHE, else
/var/cache/ferry-image), with podman's own storage, so a second run only
builds what changed in the tree.

podman's settings live in this tree (tests/lib/containers.conf) and in a
storage.conf written into the cache directory; they reach podman through
CONTAINERS_CONF and CONTAINERS_STORAGE_CONF (env()), never through the
machine's /etc/containers.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DAEMONSET = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
TOOLS = ("podman", "buildah", "runc", "debootstrap")
SUITE = "bookworm"
# Paths Debian's -slim images leave out of every package (documentation,
# manual pages, translations), as a dpkg filter so that the Dockerfile's
# own apt-get installs leave them out too.
SLIM_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                "/usr/share/locale/*", "/usr/share/groff/*",
                "/usr/share/lintian/*")
SLIM_KEEP = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")


def cache_dir():
    return Path(os.environ.get("FERRY_IMAGE_CACHE")
                or "/var/cache/ferry-image")


def missing():
    """Why the image cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (podman with runc, debootstrap)"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    if absent:
        return ("needs %s (bash deploy/install-deps image)"
                % ", ".join(absent))
    return None


def env():
    """The environment podman runs with: the test's own settings."""
    c = cache_dir()
    c.mkdir(parents=True, exist_ok=True)
    storage = c / "storage.conf"
    text = ('[storage]\ndriver = "overlay"\ngraphroot = "%s"\n'
            'runroot = "%s"\n' % (c / "storage", c / "run"))
    if not storage.exists() or storage.read_text() != text:
        storage.write_text(text)
    e = dict(os.environ)
    e["CONTAINERS_CONF"] = str(HERE / "containers.conf")
    e["CONTAINERS_STORAGE_CONF"] = str(storage)
    e["CONTAINERS_REGISTRIES_CONF"] = str(HERE / "registries.conf")
    return e


def podman(*args, check=True, timeout=600, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(["podman"] + [str(a) for a in args], env=env(),
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("podman %s: exit %d\n%s%s" % (
            " ".join(map(str, args)), p.returncode, p.stdout or "",
            p.stderr or ""))
    return p


def image_name():
    """The image the DaemonSet runs (its container's image:), under the
    localhost/ name README's "Run as a DaemonSet" loads it as."""
    txt = DAEMONSET.read_text()
    m = re.search(r"^\s*image:\s*(\S+)\s*$", txt, re.M)
    return "localhost/" + m.group(1)


def base_name():
    """The Dockerfile's first FROM, as a full reference."""
    m = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M)
    ref = m.group(1)
    if "/" not in ref.split(":")[0]:
        ref = "docker.io/library/" + ref
    return ref


def mirror():
    """The Debian mirror apt uses on this machine."""
    srcs = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        srcs += sorted(d.iterdir())
    for f in srcs:
        try:
            txt = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?:^deb\s+(?:\[[^]]*\]\s+)?|^URIs:\s*)"
                             r"(\S+/debian)/?\s", txt, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _slim(root):
    """Trim a debootstrap root the way -slim images are trimmed."""
    cfg = root / "etc" / "dpkg" / "dpkg.cfg.d" / "slim"
    cfg.write_text("".join("path-exclude %s\n" % p for p in SLIM_EXCLUDE)
                   + "".join("path-include %s\n" % p for p in SLIM_KEEP))
    (root / "etc" / "apt" / "apt.conf.d" / "slim").write_text(
        'APT::Keep-Downloaded-Packages "false";\n'
        'Acquire::Languages "none";\n'
        # apt's binary caches (pkgcache.bin, srcpkgcache.bin: about 70 MB
        # after an apt-get update) would stay in the layer that ran it.
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n')
    for d in ("usr/share/doc", "usr/share/man", "usr/share/info",
              "usr/share/locale", "usr/share/groff", "usr/share/lintian",
              "var/cache/apt/archives", "var/lib/apt/lists"):
        p = root / d
        if not p.is_dir():
            continue
        for child in p.iterdir():
            if d == "usr/share/doc" and child.is_dir():
                for f in child.iterdir():
                    if f.name != "copyright":
                        _rm(f)
            elif d == "usr/share/locale" and child.name == "locale.alias":
                continue
            elif child.name in ("partial", "lock"):
                continue
            else:
                _rm(child)
    for f in (root / "var" / "log").rglob("*"):
        if f.is_file():
            f.unlink()
    # debootstrap copies the machine's own; the runtime mounts a
    # container's at run time.
    for f in ("etc/hostname", "etc/resolv.conf"):
        p = root / f
        if p.exists() or p.is_symlink():
            p.unlink()
        p.write_text("")


def _rm(p):
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def make_base(log):
    """Import the base image unless podman's storage has it; make its root
    file system with debootstrap unless the cache has its tar."""
    ref = base_name()
    if podman("image", "exists", ref, check=False).returncode == 0:
        log("base %s: in the cache" % ref)
        return
    c = cache_dir()
    tar = c / ("%s-minbase.tar" % SUITE)
    if not tar.exists():
        root = c / "rootfs"
        if root.exists():
            shutil.rmtree(root)
        t = time.monotonic()
        url = mirror()
        p = subprocess.run(["debootstrap", "--variant=minbase", SUITE,
                            str(root), url], capture_output=True, text=True,
                           timeout=900)
        if p.returncode != 0:
            raise RuntimeError("debootstrap %s from %s: exit %d\n%s" % (
                SUITE, url, p.returncode, (p.stdout + p.stderr)[-3000:]))
        _slim(root)
        with tarfile.open(str(tar) + ".tmp", "w") as tf:
            tf.add(str(root), arcname=".")
        os.replace(str(tar) + ".tmp", tar)
        shutil.rmtree(root)
        log("debootstrap %s from %s: %.1f s" % (SUITE, url,
                                                 time.monotonic() - t))
    t = time.monotonic()
    with open(tar, "rb") as f:
        podman("import", "--change", "CMD [\"bash\"]", "-", ref, stdin=f)
    log("podman import %s: %.1f s" % (ref, time.monotonic() - t))


def build_cmd():
    """What the README tells users to run (podman build from the top of
    the tree), plus --pull=never: the base is local."""
    return ["podman", "build", "--pull=never", "-f", "deploy/Dockerfile",
            "-t", image_name(), "."]


def build(log=print):
    """Make the base if needed and build the image. Returns a dict of the
    timings ({"base": s, "build": s, "total": s})."""
    c = cache_dir()
    c.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(c / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A build stopped half-way (tests/run stops its background build
        # when no test waits for it) leaves its working containers.
        subprocess.run(["buildah", "rm", "--all"], env=env(),
                       capture_output=True, timeout=120)
        make_base(log)
        t1 = time.monotonic()
        cmd = build_cmd()
        log("$ " + " ".join(cmd))
        p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True,
                           text=True, timeout=1800)
        log(p.stdout[-6000:] + p.stderr[-6000:])
        if p.returncode != 0:
            raise RuntimeError("podman build: exit %d" % p.returncode)
        t2 = time.monotonic()
        # Keep the cache bounded: untagged images older than a day go. The
        # newest build stage is tagged first (every step cached, seconds),
        # so the layers the next build reuses (its apt-get) stay.
        stage = re.search(r"^FROM\s+\S+\s+AS\s+(\S+)",
                          DOCKERFILE.read_text(), re.M | re.I).group(1)
        subprocess.run(["podman", "build", "--pull=never", "--target",
                        stage, "-f", "deploy/Dockerfile", "-t",
                        image_name() + "-" + stage, "."],
                       cwd=REPO, env=env(), capture_output=True,
                       timeout=600)
        podman("image", "prune", "-f", "--filter", "until=24h", check=False)
    return {"base": round(t1 - t0, 1), "build": round(t2 - t1, 1),
            "total": round(t2 - t0, 1)}


def main(argv):
    if len(argv) < 2 or argv[1] != "build":
        print("usage: imagetest.py build [RESULT.json]", file=sys.stderr)
        return 2
    result = Path(argv[2]) if len(argv) > 2 else None
    out = {}
    why = missing()
    if why:
        out = {"ok": False, "skip": why}
    else:
        try:
            out = dict(build(lambda s: print(s, flush=True)), ok=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            out = {"ok": False, "error": str(e)[-4000:]}
    print(json.dumps(out), flush=True)
    if result:
        tmp = Path(str(result) + ".tmp")
        tmp.write_text(json.dumps(out) + "\n")
        os.replace(tmp, result)
    return 0 if out.get("ok") or out.get("skip") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
