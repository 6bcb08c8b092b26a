"""Where an object's separate debug file is, looked up as gdb does:
/usr/lib/debug/.build-id/xx/yyyy.debug, then .gnu_debuglink next to the
object, in .debug/ beside it and under /usr/lib/debug. A candidate is used
only if its build id matches."""

from __future__ import annotations

import os

from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import build_id

DEBUG_ROOT = "/usr/lib/debug"


def host_path(path: str) -> str:
    """/proc/<pid>/root/usr/lib/x.so -> /usr/lib/x.so (the name a user knows)."""
    if path.startswith("/proc/"):
        parts = path.split("/", 4)
        if len(parts) == 5 and parts[3] == "root":
            return "/" + parts[4]
    return path


def find_debug_file(path: str, elf: ELFFile, bid: str) -> str | None:
    """A separate debug file with the same build id, or None. For a path under
    /proc/<pid>/root, the candidates are looked up under that root too."""
    root = path[: len(path) - len(host_path(path)) + 1].rstrip("/") if path.startswith("/proc/") else ""
    candidates = []
    if len(bid) > 2:
        candidates.append(f"{root}{DEBUG_ROOT}/.build-id/{bid[:2]}/{bid[2:]}.debug")
    link = elf.get_section_by_name(".gnu_debuglink")
    if link is not None:
        name = link.data().split(b"\0", 1)[0].decode(errors="replace")
        host_dir = os.path.dirname(host_path(path))
        candidates += [f"{root}{host_dir}/{name}", f"{root}{host_dir}/.debug/{name}",
                       f"{root}{DEBUG_ROOT}{host_dir}/{name}"]
    for cand in candidates:
        if (os.path.isfile(cand) and os.path.realpath(cand) != os.path.realpath(path)
                and build_id(cand, follow_symlinks=True) == bid):
            return cand
    return None
