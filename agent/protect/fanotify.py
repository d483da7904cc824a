"""A small typed ctypes binding of Linux fanotify: the calls, the two structs, the constants.

No maintained Python library covers fanotify *permission* events (inotify is well covered, by
watchdog), so this module binds the two system calls and the two structures the protector
needs, and nothing else. `tests/agent/protect/test_fanotify.py` compiles a C program against the
kernel's `<sys/fanotify.h>` and checks that sizes, offsets and constants here match it.

Linux only: on other systems `is_available()` is False and the calls raise `OSError(ENOSYS)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "FANOTIFY_METADATA_VERSION",
    "FAN_ALLOW",
    "FAN_CLASS_CONTENT",
    "FAN_CLOEXEC",
    "FAN_CLOSE_WRITE",
    "FAN_DENY",
    "FAN_EVENT_ON_CHILD",
    "FAN_MARK_ADD",
    "FAN_MARK_FLUSH",
    "FAN_MARK_MOUNT",
    "FAN_MARK_REMOVE",
    "FAN_MODIFY",
    "FAN_NOFD",
    "FAN_NONBLOCK",
    "FAN_OPEN_EXEC_PERM",
    "FAN_OPEN_PERM",
    "FAN_Q_OVERFLOW",
    "FAN_UNLIMITED_MARKS",
    "FAN_UNLIMITED_QUEUE",
    "PERMISSION_EVENTS",
    "Event",
    "EventMetadata",
    "Response",
    "fanotify_init",
    "fanotify_mark",
    "is_available",
    "iter_events",
    "respond",
]

# fanotify_init flags
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_CONTENT = 0x00000004
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_UNLIMITED_MARKS = 0x00000020

# event mask bits
FAN_MODIFY = 0x00000002
FAN_CLOSE_WRITE = 0x00000008
FAN_Q_OVERFLOW = 0x00004000
FAN_OPEN_PERM = 0x00010000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_EVENT_ON_CHILD = 0x08000000
PERMISSION_EVENTS = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM
"""The permission events this binding answers (access permission is not used)."""

# fanotify_mark flags
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FLUSH = 0x00000080

# responses
FAN_ALLOW = 0x01
FAN_DENY = 0x02

FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
_AT_FDCWD = -100


class EventMetadata(ctypes.Structure):
    """`struct fanotify_event_metadata` (24 bytes; the mask is an 8-byte aligned u64)."""

    _fields_ = (
        ("event_len", ctypes.c_uint32),
        ("vers", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("metadata_len", ctypes.c_uint16),
        ("mask", ctypes.c_uint64),
        ("fd", ctypes.c_int32),
        ("pid", ctypes.c_int32),
    )


class Response(ctypes.Structure):
    """`struct fanotify_response`: the event's fd and FAN_ALLOW or FAN_DENY."""

    _fields_ = (("fd", ctypes.c_int32), ("response", ctypes.c_uint32))


class Event(NamedTuple):
    """One event read from a fanotify group: its mask, the file's fd (or FAN_NOFD), the pid.

    A NamedTuple rather than a frozen dataclass: one is built per event on the reader's path.
    """

    mask: int
    fd: int
    pid: int

    @property
    def is_permission(self) -> bool:
        """True when the kernel waits for an answer to this event."""
        return bool(self.mask & PERMISSION_EVENTS)


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "fanotify needs Linux")
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fanotify_init.argtypes = (ctypes.c_uint, ctypes.c_uint)
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = (
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_char_p,
        )
        lib.fanotify_mark.restype = ctypes.c_int
        _libc = lib
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def fanotify_init(flags: int, event_f_flags: int = os.O_RDONLY) -> int:
    """Create a fanotify group and return its descriptor.

    Raises:
        OSError: EPERM without CAP_SYS_ADMIN, ENOSYS/EINVAL where fanotify is missing.
    """
    lib = _lib()
    return _check(lib.fanotify_init(flags, event_f_flags | os.O_LARGEFILE), "fanotify_init")


def fanotify_mark(fan_fd: int, flags: int, mask: int, path: str | None) -> None:
    """Add, remove or flush a mark on `path` (relative to the current directory).

    Raises:
        OSError: the mark was refused (EINVAL for an event the kernel lacks, ENOENT...).
    """
    lib = _lib()
    raw = os.fsencode(path) if path is not None else None
    _check(lib.fanotify_mark(fan_fd, flags, mask, _AT_FDCWD, raw), "fanotify_mark")


# The hot path packs and unpacks with `struct` (a few times faster than ctypes objects); the
# formats are the ctypes layouts above, native byte order, and the tests hold them together.
_META = struct.Struct("=IBBHQii")
_RESPONSE = struct.Struct("=iI")
_META_SIZE = _META.size


def iter_events(buffer: bytes) -> Iterator[Event]:
    """Split what one read() of a fanotify descriptor returned into events.

    Raises:
        OSError: the kernel speaks another metadata version (EPROTO).
    """
    offset = 0
    unpack = _META.unpack_from
    while offset + _META_SIZE <= len(buffer):
        event_len, vers, _, _, mask, fd, pid = unpack(buffer, offset)
        if vers != FANOTIFY_METADATA_VERSION:
            raise OSError(errno.EPROTO, f"fanotify metadata version {vers}")
        if event_len < _META_SIZE:
            break
        yield Event(mask, fd, pid)
        offset += event_len


def respond(fan_fd: int, event_fd: int, allow: bool) -> None:
    """Answer a permission event (FAN_ALLOW or FAN_DENY); the caller closes `event_fd`.

    Raises:
        OSError: the write failed (ENOENT when the event was already answered).
    """
    os.write(fan_fd, _RESPONSE.pack(event_fd, FAN_ALLOW if allow else FAN_DENY))


def is_available() -> tuple[bool, str]:
    """Whether this process can hold fanotify permission marks, and why not when it cannot."""
    if not sys.platform.startswith("linux"):
        return False, f"fanotify needs Linux (this is {sys.platform})"
    try:
        fd = fanotify_init(FAN_CLOEXEC | FAN_CLASS_CONTENT)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return False, "fanotify needs root (CAP_SYS_ADMIN)"
        return False, f"fanotify is not available: {exc.strerror or exc}"
    try:
        fanotify_mark(fd, FAN_MARK_ADD, FAN_OPEN_EXEC_PERM, "/")
    except OSError as exc:
        return False, f"this kernel refuses exec permission marks: {exc.strerror or exc}"
    finally:
        os.close(fd)
    return True, ""
