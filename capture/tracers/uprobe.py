"""What the lock and alloc tracers share: uprobes on C library functions,
attached per target process (capture/tracers/uprobe_targets.py), never system-wide unless
the user passed --all-processes.

Each uprobe link is bound to one process (perf_event_open with its pid), so
the breakpoints are only written into that process's memory: other processes
calling malloc or pthread_mutex_lock pay nothing.

A target running CPython also gets the Python frames of each call recorded
(capture/tracers/python_stackmap.py): records carry `pystack_id` next to `ustack_id`.
"""

from __future__ import annotations

import os
import threading
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from uetrace.capture.libbpf import BpfError, BpfObject
from uetrace.capture.tracers import uprobe_targets as tg
from uetrace.capture.tracers.contract import NotAttached, Tracer
from uetrace.capture.tracers.function_probes import attach_functions
from uetrace.capture.tracers.python_stackmap import PyStackMap
from uetrace.capture.tracers.stack_maps import dump_stacks, unwritten
from uetrace.capture.tracers.uprobe_offsets import function_offsets
from uetrace.errors import UetraceError


class UprobeTracer(Tracer):
    # (BPF program, C library function, is a return probe), in attach order:
    # return probes after their entry probes, so no return is seen without its entry.
    probes: ClassVar[list[tuple[str, str, bool]]]
    # Each call of a probed function traps into the kernel: never switched on by a filter.
    default = False
    records_stacks = True

    def __init__(self, opts, symbols=None):
        super().__init__(opts, symbols)
        self.targets: list[tg.Target] = []
        self.libraries: list[str] = []       # --all-processes: one attachment per library file
        self._watcher: tg.CommWatcher | None = None
        self._attach_lock = threading.Lock()
        self._stopped = False
        self._stacks_written: set[int] = set()
        self.python = PyStackMap(None, None, self.name)

    @property
    def all_processes(self) -> bool:
        return self.opts.uprobe.all_processes

    def check(self) -> None:
        if not (self.opts.pids or self.opts.comms or self.all_processes):
            raise NotAttached(f"no target process: pass --pid or --comm (or --all-processes; it costs {self.cost})")

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        # Each link is bound to its target process already; the kernel-side comm
        # filter would compare thread names, which threads may rename.
        rodata["filter_pids"] = 0
        rodata["filter_comm"] = 0
        self.python = PyStackMap(obj, self.object_file, self.name)
        obj.use_uprobe_multi()

    def attach(self, obj: BpfObject) -> None:
        me = os.getpid()
        if self.all_processes:
            self.libraries = tg.system_libraries(exclude=me)
            for lib in self.libraries:
                self._attach_binary(obj, lib, -1)
            if not self.attached:
                raise BpfError(f"attach {self.name}: no C library found to probe", 2)
            return
        found, problems = tg.resolve(self.opts.pids, self.opts.comms, exclude=me)
        self.failures.extend(problems)
        for target in found:
            self._attach_target(obj, target)
        if self.opts.comms:
            # Processes started later are attached as they appear; none now is fine.
            self._watcher = tg.CommWatcher(self.opts.comms, [t.pid for t in found], self._attach_new,
                                           exclude=me)
            self._watcher.start()
        elif not self.attached:
            raise BpfError(f"attach {self.name}: " + (problems[0]["error"] if problems else "no target"), 3)

    def _attach_target(self, obj: BpfObject, target: tg.Target) -> None:
        before = len(self.attached)
        self.python.target(target.pid)   # before its first record: its Python frames are in all
        self._attach_binary(obj, target.library, target.pid)
        if len(self.attached) > before:
            self.targets.append(target)
            self.snapshot_target(target.pid)

    def snapshot_target(self, pid: int) -> None:
        """Read what naming this target's records needs offline now, while it is alive:
        it may exit long before the capture ends."""
        self.symbols.saw([pid])

    def _attach_binary(self, obj: BpfObject, binary: str, pid: int) -> None:
        try:
            offsets = function_offsets(binary)
        except (OSError, UetraceError) as e:
            self.failures.append({"point": f"{binary} pid {pid}", "error": str(e)})
            return
        attach_functions(self, obj, self.probes, binary, offsets, pid)

    def _attach_new(self, pid: int) -> None:
        target, problem = tg.describe(pid)
        with self._attach_lock:
            if self._stopped:
                return
            if target is None:
                self.failures.append({"point": f"pid {pid}", "error": problem})
            else:
                self._attach_target(self.obj, target)

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        """The records' Python stack keys -> pystack_id (capture/tracers/python_stackmap.py)."""
        return self.python.postprocess(table)

    def tick(self, write_table) -> None:
        self.python.write(write_table)   # a killed capture keeps the names read so far

    def observe(self, kind: str, table: pa.Table, snapshotter) -> None:
        self.symbols.saw(pc.unique(table.column("pid")).to_numpy())

    def part_done(self, write_table) -> None:
        self._write_stacks(write_table)
        self.python.write(write_table)
        self.symbols.write(write_table, only_changed=True)

    def _write_stacks(self, write_table) -> None:
        dump = dump_stacks(self.obj, self.name)
        self.stats.update(dump.stats())
        table = unwritten(dump.table, self._stacks_written)
        if table.num_rows:
            write_table("stacks", table)

    def finish(self, write_table) -> None:
        """The user stacks that the records' ustack_id point to, and the symbols to name them."""
        self._write_stacks(write_table)
        self.stats["targets"] = [{"pid": t.pid, "comm": t.comm, "library": t.library} for t in self.targets]
        self.python.finish(write_table, self.stats, self.notes)
        self.symbols.write(write_table)

    def stop(self) -> None:
        """Stop attaching new processes: the session detaches everything next."""
        with self._attach_lock:
            self._stopped = True
        if self._watcher:
            self._watcher.stop()
