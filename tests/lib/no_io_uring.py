"""Run a command with io_uring_setup(2) refused with EPERM, as the default
seccomp profiles of container runtimes refuse it:

    python3 no_io_uring.py PROGRAM [ARG...]

A classic BPF seccomp filter: system call 425 (io_uring_setup, the same
number on x86_64 and arm64) returns EPERM, every other one is allowed.
"""
import ctypes
import os
import struct
import sys

NR_IO_URING_SETUP = 425
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: no_io_uring.py PROGRAM [ARG...]\n")
        return 2
    prog = b"".join([
        insn(BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        insn(BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ])
    buf = ctypes.create_string_buffer(prog, len(prog))

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fp = Fprog(len(prog) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 \
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                          ctypes.byref(fp), 0, 0) != 0:
        err = ctypes.get_errno()
        sys.stderr.write("no_io_uring: seccomp: %s\n" % os.strerror(err))
        return 1
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
