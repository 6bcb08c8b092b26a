"""Which processes the uprobe tracers (lock, alloc) attach to, and where their C library is.

A uprobe traps into the kernel on every call of the probed function (~0.6 us for
malloc, ~10 us for free and pthread_mutex_*, measured on the target machines),
in every process that maps the probed file. So these tracers attach per process:
--pid, and --comm resolved here to the matching processes, including the ones
that start (exec) while the capture runs (CommWatcher). Every process is traced
only with --all-processes.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from uetrace.capture.procfs import live_pids, read_comm, read_maps, root_path

# glibc >= 2.34 has everything in libc.so.6; older ones have the mutex functions in libpthread.
_LIBC_RE = re.compile(r"/(libc\.so\.6|libc-[0-9.]+\.so|libc\.musl-[^/]+\.so\.1|ld-musl-[^/]+\.so\.1)$")


@dataclass(frozen=True)
class Target:
    pid: int
    comm: str
    library: str   # the C library as this process maps it, openable from our mount namespace


def libc_path(pid: int) -> str | None:
    """The C library mapped by `pid`, as a path this process can open, or None
    (a static binary, or the process is gone). A process in another mount
    namespace (a container) is reached through /proc/<pid>/root."""
    for m in read_maps(pid):
        if _LIBC_RE.search(m["path"]):
            own = root_path(pid, m["path"])
            return m["path"] if _same_file(m["path"], own) else own
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def comm_matches(comm: str | None, comms: Iterable[str]) -> bool:
    """The kernel keeps 15 characters of a command name: compare that much."""
    return comm is not None and any(comm == c[:15] for c in comms)


def resolve(pids: Iterable[int], comms: Iterable[str], exclude: int) -> tuple[list[Target], list[dict]]:
    """Targets from --pid and --comm as the system is now, and the problems
    found on the way ({"point", "error"}, as manifests record attach failures)."""
    comms = list(comms)
    chosen = {int(p) for p in pids}
    if comms:
        chosen |= {p for p in live_pids() if comm_matches(read_comm(p), comms)}
    chosen.discard(exclude)
    targets, problems = [], []
    for pid in sorted(chosen):
        target, problem = describe(pid)
        if target:
            targets.append(target)
        else:
            problems.append({"point": f"pid {pid}", "error": problem})
    return targets, problems


def describe(pid: int) -> tuple[Target | None, str]:
    comm = read_comm(pid)
    if comm is None:
        return None, f"find process {pid}: no such process"
    lib = libc_path(pid)
    if lib is None:
        return None, f"find C library of process {pid} ({comm}): none mapped (statically linked?)"
    return Target(pid, comm, lib), ""


def system_libraries(exclude: int) -> list[str]:
    """Every distinct C library file mapped by a live process (for --all-processes)."""
    seen: dict[tuple[int, int], str] = {}
    for pid in live_pids():
        if pid == exclude:
            continue
        lib = libc_path(pid)
        if lib is None:
            continue
        try:
            st = os.stat(lib)
        except OSError:
            continue
        seen.setdefault((st.st_dev, st.st_ino), lib)
    return sorted(seen.values())


class CommWatcher:
    """Polls /proc for new processes whose command name matches, and hands each
    one to `on_new` once (on this watcher's thread). Polling, not exec events:
    it works whichever tracers are selected, and a process that execs into a
    matching name keeps its pid, so a pid seen earlier under another name is
    checked again at every poll until it matches."""

    def __init__(self, comms: list[str], known: Iterable[int], on_new: Callable[[int], None],
                 interval: float = 0.2, exclude: int = 0):
        self.comms, self.on_new, self.interval = comms, on_new, interval
        self._done = {int(p) for p in known} | {exclude}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uetrace-comm-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Returns once no on_new call is running or can start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def poll(self) -> None:
        for pid in live_pids():
            if pid not in self._done and comm_matches(read_comm(pid), self.comms):
                self._done.add(pid)
                self.on_new(pid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
