"""Confining this process with Linux Landlock: only the paths it is given, no TCP, no
signals or abstract Unix sockets beyond itself.

Landlock is the kernel's unprivileged sandbox: a process restricts itself, for the rest
of its life and its children's, and the restriction holds even for root (it is checked
after the usual permissions). A restricted process also cannot ptrace a less restricted
one. The three system calls (444 ``landlock_create_ruleset``, 445
``landlock_add_rule``, 446 ``landlock_restrict_self``, the same number on every
architecture) are called through ctypes; ``PR_SET_NO_NEW_PRIVS`` comes first, as the
kernel asks of an unprivileged caller.

Contract of :func:`restrict_to`: afterwards the process can open files beneath the
read-write paths (any operation, directories created or removed) and read (never write)
beneath the read-only ones; every other path is refused with ``EACCES`` (``/proc`` and
``/etc`` included), TCP ``bind`` and ``connect`` are refused (ABI 4+), and signals and
abstract Unix sockets cannot reach a process outside this sandbox (ABI 6+). File
descriptors opened before the call keep working. Landlock confines the calling thread
and the threads it starts later, never threads already running: the process must have
one thread when it calls (it is checked). It raises :class:`LandlockUnavailable`
when the kernel lacks Landlock or an ABI below :data:`MINIMUM_ABI`, and ``OSError`` when
a system call fails; it never returns with the process half-restricted.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from pathlib import Path

MINIMUM_ABI = 4  # file access (with truncate and rename across directories) and TCP

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ALL_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1,
                  5: (1 << 16) - 1}  # ABI 2: REFER, 3: TRUNCATE, 5: IOCTL_DEV
_READ_ONLY = _EXECUTE | _READ_FILE | _READ_DIR
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class LandlockUnavailable(RuntimeError):
    """The kernel cannot confine this process (no Landlock, or too old an ABI)."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is absent or disabled."""
    version = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def restrict_to(read_write: Iterable[Path], read_only: Iterable[Path] = ()) -> int:
    """Confine this process for good (see the module's contract); returns the ABI used.

    Paths that do not exist are skipped. Raises LandlockUnavailable or OSError.
    """
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # restrict_self confines the calling thread (and its future ones)
        raise LandlockUnavailable(f"{threads} threads run already: Landlock would confine "
                                  "only one of them (restrict before starting any)")
    abi = abi_version()
    if abi < MINIMUM_ABI:
        raise LandlockUnavailable(
            f"the kernel offers Landlock ABI {abi}, {MINIMUM_ABI} or later is needed"
            if abi else "the kernel has no Landlock (Linux 5.13+, enabled in the LSM list)")
    all_fs = _ALL_FS_BY_ABI[min(abi, 5)]
    attr = _RulesetAttr(all_fs, _NET_BIND_TCP | _NET_CONNECT_TCP,
                        _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else ctypes.sizeof(ctypes.c_uint64) * 2
    ruleset = _check(_libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                   ctypes.c_uint32(0)))
    try:
        for paths, access in ((read_write, all_fs), (read_only, _READ_ONLY)):
            for path in paths:
                _allow(ruleset, path, access)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _check(_libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)))
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: Path, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):  # a file takes file rights only
            access &= _EXECUTE | _WRITE_FILE | _READ_FILE | (1 << 14) | (1 << 15)
        rule = _PathBeneathAttr(access, fd)
        _check(_libc.syscall(_ADD_RULE, ruleset, ctypes.c_int(_RULE_PATH_BENEATH),
                             ctypes.byref(rule), ctypes.c_uint32(0)))
    finally:
        os.close(fd)


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno() or errno.EINVAL
        raise OSError(code, os.strerror(code))
    return int(result)
