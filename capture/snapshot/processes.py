"""Process snapshot: who each pid was, and what it had mapped.

Taken when a pid first appears in any record and again at each exec, on a
thread of its own so the drain loop never waits on /proc. Rows go to the
`processes` and `mappings` tables under symbols/ in the archive. Build ids
come from each mapped file's NT_GNU_BUILD_ID note (pyelftools), read through
/proc/<pid>/root so that containers' files are found, cached per inode.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import pyarrow as pa
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

CLK_TCK = os.sysconf("SC_CLK_TCK")

PROCESS_SCHEMA = pa.schema([
    ("ts", pa.uint64()), ("reason", pa.string()), ("pid", pa.uint32()), ("ppid", pa.uint32()),
    ("comm", pa.string()), ("cmdline", pa.string()), ("exe", pa.string()), ("cgroup", pa.string()),
    ("start_time_ns", pa.uint64()), ("uid", pa.uint32()),
])
MAPPING_SCHEMA = pa.schema([
    ("ts", pa.uint64()), ("pid", pa.uint32()), ("start", pa.uint64()), ("end", pa.uint64()),
    ("file_offset", pa.uint64()), ("perms", pa.string()), ("path", pa.string()),
    ("build_id", pa.string()), ("inode", pa.uint64()),
])


def _read(path: str, binary: bool = False) -> bytes | str | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data if binary else data.decode(errors="replace")


def read_process(pid: int) -> dict | None:
    """One row of the processes table, or None if the process is gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    comm = stat[stat.index("(") + 1: stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    cmdline = _read(f"/proc/{pid}/cmdline", binary=True) or b""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    status = _read(f"/proc/{pid}/status") or ""
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), 0)
    return {"pid": pid, "ppid": int(fields[1]), "comm": comm,
            "cmdline": cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"),
            "exe": exe, "cgroup": (_read(f"/proc/{pid}/cgroup") or "").strip(),
            "start_time_ns": int(fields[19]) * 1_000_000_000 // CLK_TCK, "uid": uid}


_build_ids: dict[tuple[int, int, int], str] = {}


def build_id(path: str) -> str:
    """Hex NT_GNU_BUILD_ID of an ELF file, or "" when it has none or is unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if key not in _build_ids:
        _build_ids[key] = _read_build_id(path)
    return _build_ids[key]


def _read_build_id(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_NOTE":
                    continue
                for note in seg.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
    except (OSError, ELFError, ValueError):
        pass
    return ""


def read_mappings(pid: int) -> list[dict]:
    """Executable file mappings of a process, with build ids."""
    maps = _read(f"/proc/{pid}/maps")
    if not maps:
        return []
    rows = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        path = parts[5].removesuffix(" (deleted)")
        rows.append({"pid": pid, "start": start, "end": end, "file_offset": int(parts[2], 16),
                     "perms": parts[1], "path": path, "inode": int(parts[4]),
                     "build_id": build_id(f"/proc/{pid}/root{path}")})
    return rows


class ProcessSnapshotter:
    """Snapshots pids handed to it, once per pid and again at each exec."""

    def __init__(self, emit):
        self._emit = emit  # emit(kind, table)
        self._seen: set[int] = set()
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="uetrace-snapshot", daemon=True)
        self._thread.start()
        self.count = 0

    def saw(self, pids) -> None:
        """Pids seen in records; only new ones are snapshotted."""
        for pid in pids:
            pid = int(pid)
            if pid and pid not in self._seen:
                self._seen.add(pid)
                self._q.put((pid, "first_seen"))

    def exec(self, pid: int) -> None:
        self._seen.add(pid)
        self._q.put((pid, "exec"))

    def scan_all(self) -> None:
        """Every process alive now (the capture's starting point)."""
        self.saw(int(p) for p in os.listdir("/proc") if p.isdigit())

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()

    def _run(self) -> None:
        procs: list[dict] = []
        maps: list[dict] = []
        while True:
            item = self._q.get()
            if item is not None:
                pid, reason = item
                ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                row = read_process(pid)
                if row is not None:
                    procs.append({"ts": ts, "reason": reason, **row})
                    maps.extend({"ts": ts, **m} for m in read_mappings(pid))
                    self.count += 1
            if procs and (item is None or len(procs) >= 256 or self._q.empty()):
                self._emit("processes", pa.Table.from_pylist(procs, schema=PROCESS_SCHEMA))
                if maps:
                    self._emit("mappings", pa.Table.from_pylist(maps, schema=MAPPING_SCHEMA))
                procs, maps = [], []
            if item is None:
                return
