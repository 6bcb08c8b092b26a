"""Reading /proc: the one parser of /proc/<pid>/maps, command names, live pids.

Everything here reads a process that may exit at any moment: a vanished
process reads as empty (or None), never as an error.
"""

from __future__ import annotations

import os


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
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
