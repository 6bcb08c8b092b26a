"""Process snapshot: who each pid was, and what it had mapped.

Taken when a pid first appears in any record and again at each exec, on a
thread of its own so the drain loop never waits on /proc. Rows go to the
`processes` and `mappings` tables under symbols/ in the archive. Build ids
come from each mapped file's NT_GNU_BUILD_ID note (capture/elf.py), read through
/proc/<pid>/root so that containers' files are found, cached per inode.
"""

from __future__ import annotations

import os
import queue
import threading
import time

import pyarrow as pa

from uetrace.capture.elf import build_id
from uetrace.capture.procfs import live_pids, read_bytes, read_maps, read_text, root_path

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


def read_process(pid: int) -> dict | None:
    """One row of the processes table, or None if the process is gone."""
    stat = read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    comm = stat[stat.index("(") + 1: stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    cmdline = read_bytes(f"/proc/{pid}/cmdline") or b""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    status = read_text(f"/proc/{pid}/status") or ""
    uid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), 0)
    return {"pid": pid, "ppid": int(fields[1]), "comm": comm,
            "cmdline": cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"),
            "exe": exe, "cgroup": (read_text(f"/proc/{pid}/cgroup") or "").strip(),
            "start_time_ns": int(fields[19]) * 1_000_000_000 // CLK_TCK, "uid": uid}


def read_mappings(pid: int) -> list[dict]:
    """Executable file mappings of a process, with build ids."""
    return [{**m, "build_id": build_id(root_path(pid, m["path"]))} for m in read_maps(pid)]


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
        self.saw(live_pids())

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every pid handed over so far is read and its rows emitted (a part of a
        rotated capture ends: its processes go into it). False if that took longer than timeout."""
        done = threading.Event()
        self._q.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what is pending and stop. With a timeout, a thread still stuck after it (a
        read of a hung filesystem) is left behind, a daemon: the capture ends without it."""
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        procs: list[dict] = []
        maps: list[dict] = []
        while True:
            item = self._q.get()
            flushed = item if isinstance(item, threading.Event) else None
            if flushed is not None:
                item = False
            if item:
                pid, reason = item
                ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                row = read_process(pid)
                if row is not None:
                    procs.append({"ts": ts, "reason": reason, **row})
                    maps.extend({"ts": ts, **m} for m in read_mappings(pid))
                    self.count += 1
            if procs and (not item or len(procs) >= 256 or self._q.empty()):
                self._emit("processes", pa.Table.from_pylist(procs, schema=PROCESS_SCHEMA))
                if maps:
                    self._emit("mappings", pa.Table.from_pylist(maps, schema=MAPPING_SCHEMA))
                procs, maps = [], []
            if flushed is not None:
                flushed.set()
            if item is None:
                return
