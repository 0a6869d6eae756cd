"""Running Python code inside a network namespace the test created.

setns() is per thread, so code runs on threads that entered the
namespace once: sockets made there belong to it."""

import concurrent.futures
import ctypes
import os

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns):
    """Move the calling thread into /var/run/netns/<netns>."""
    fd = os.open("/var/run/netns/" + netns, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns %s: %s" % (netns, os.strerror(e)))
    finally:
        os.close(fd)


class InNs:
    """<threads> threads living in network namespace <netns>: calling the
    object runs a function there and returns its result; submit() returns
    a future."""

    def __init__(self, netns, threads=1):
        self.ex = concurrent.futures.ThreadPoolExecutor(
            threads, initializer=enter, initargs=(netns,))

    def __call__(self, fn, *args, **kw):
        return self.ex.submit(fn, *args, **kw).result()

    def submit(self, fn, *args, **kw):
        return self.ex.submit(fn, *args, **kw)

    def close(self):
        self.ex.shutdown(wait=True)
