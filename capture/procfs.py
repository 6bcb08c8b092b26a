"""Reading /proc: the one parser of /proc/<pid>/maps, command names, live pids, and
the one way to open a file that another process names.

Everything here reads a process that may exit at any moment: a vanished
process reads as empty (or None), never as an error.

Any local user chooses what their processes map and where: a mapped file can be
deleted and a FIFO made at its path, which a plain open() of
/proc/<pid>/root/<path> would wait on forever (with SIGINT retried by Python, so
not even Ctrl-C ends it). open_regular() is used for every such file: O_NONBLOCK
(a FIFO opens at once), O_NOFOLLOW (a symlink swapped in is not followed), then
fstat: only a regular file of bounded size is read.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

MAX_OBJECT_BYTES = 4 << 30    # larger "ELF objects" are not read (libxul.so with debug info: ~2.5 GiB)
MAX_PROC_BYTES = 64 << 20     # /proc/<pid>/maps of a process with 10^5 mappings is ~10 MiB


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a folder or an oversized file: not read."""


def open_regular(path: str, max_bytes: int = MAX_OBJECT_BYTES, follow_symlinks: bool = False) -> BinaryIO:
    """Open a file for reading without ever blocking in open() and only if it is a regular file
    of at most `max_bytes` (files in /proc report size 0 and pass). Raises OSError.
    follow_symlinks: for names that are symlinks by design (/usr/lib/debug/.build-id/...,
    /lib/x86_64-linux-gnu/libssl.so.3); paths read from /proc/<pid>/maps never are."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", path)
        if st.st_size > max_bytes:
            raise NotRegularFile(errno.EFBIG, f"larger than {max_bytes >> 20} MiB", path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str, max_bytes: int = MAX_PROC_BYTES) -> bytes | None:
    """At most `max_bytes` of a file, or None if it cannot be opened or read."""
    try:
        with open_regular(path, max_bytes) as fh:
            return fh.read(max_bytes)
    except OSError:
        return None


def read_text(path: str) -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode(errors="replace")


def read_comm(pid: int) -> str | None:
    comm = read_text(f"/proc/{pid}/comm")
    return None if comm is None else comm.rstrip("\n")


def live_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def read_maps(pid: int) -> list[dict]:
    """Executable file mappings of a process, as rows of the archive's `mappings`
    table without ts and build_id: pid, start, end, file_offset, perms, path, inode.
    `path` is in the process's mount namespace (open it through root_path())."""
    text = read_text(f"/proc/{pid}/maps")
    rows = []
    for line in (text or "").splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        rows.append({"pid": pid, "start": start, "end": end, "file_offset": int(parts[2], 16),
                     "perms": parts[1], "path": parts[5].removesuffix(" (deleted)"), "inode": int(parts[4])})
    return rows


def root_path(pid: int, path: str) -> str:
    """A path of process `pid` as this process can open it (containers have their own root)."""
    return f"/proc/{pid}/root{path}"
