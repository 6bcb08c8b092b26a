"""Python frames of a tracer's records (stack samples; lock and alloc records through
capture/tracers/python_stackmap.py): which processes run CPython (handed to the BPF
walk through the `py_procs` map), the Python stacks the records carry (interned into
`py_stacks`), and the names of their code objects (`py_code`,
read from each process's memory as soon as a code object first shows up in a sample,
so a process that exits later keeps its names).

Tables, under symbols/:

    python_processes  pid, version, build_id, path, recorded (offsets known: frames walked)
    py_stacks         tracer, pystack_id (the column of that tracer's records), code,
                      checksum, lasti: the Python frames innermost first (archives
                      before lock and alloc had them have no tracer: all are "stack");
                      lasti carries UE_PY_ENTRY (bpf/python.h)
                      on each frame a _PyEval_EvalFrameDefault call started with
    py_code           see capture/snapshot/python_code.py

Runs on the segment writer thread (postprocess/observe): a new process costs one ELF
symbol read per interpreter build (cached), a new code object five small reads of
/proc/<pid>/mem.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa

from uetrace.capture.btf import StructLayout
from uetrace.capture.libbpf import BpfError, BpfObject
from uetrace.capture.procfs import read_comm
from uetrace.capture.snapshot.python_code import PY_CODE_SCHEMA, read_code
from uetrace.capture.snapshot.python_offsets import bpf_code_read, bpf_frame_read
from uetrace.capture.snapshot.python_runtime import PyRuntime, find_runtime

PY_MAP = "py_procs"

PY_STACKS_SCHEMA = pa.schema([
    ("tracer", pa.string()), ("pystack_id", pa.int32()), ("code", pa.list_(pa.uint64())),
    ("checksum", pa.list_(pa.uint32())), ("lasti", pa.list_(pa.uint32())),
])
PY_PROCESS_SCHEMA = pa.schema([
    ("ts", pa.uint64()), ("pid", pa.uint32()), ("version", pa.string()), ("build_id", pa.string()),
    ("path", pa.string()), ("recorded", pa.bool_()),
])


def frame_dtype(layout: StructLayout) -> np.dtype:
    """struct ue_py_frame (bpf/stack.h, from the object's BTF) as a numpy dtype."""
    return np.dtype({"names": [f.name for f in layout.fields], "formats": [f"<u{f.size}" for f in layout.fields],
                     "offsets": [f.offset for f in layout.fields], "itemsize": layout.size})


class PythonFrames:
    """Per capture: CPython processes seen in samples and the Python stacks of those samples."""

    def __init__(self, obj: BpfObject | None, proc_layout: StructLayout | None, frame_layout: StructLayout | None,
                 tracer: str = "stack"):
        self.obj = obj
        self.tracer = tracer                   # whose records' pystack_id the py_stacks rows are
        self.layout = proc_layout              # struct ue_py_proc, from the object's BTF
        self.frame = frame_dtype(frame_layout) if frame_layout else None  # struct ue_py_frame
        self._lock = threading.Lock()          # the capture loop's tick() takes tables while the writer adds
        self._checked: set[tuple[int, str]] = set()  # (pid, comm) pairs looked at: an exec changes the comm
        self._runtimes: dict[int, PyRuntime] = {}  # in py_procs (when offsets are known)
        self._announced: set[int] = set()          # in python_processes
        self._stacks: dict[bytes, int] = {}
        self._stacks_written = 0
        self._code_seen: set[tuple[int, int, int]] = set()
        self._code_missing: set[tuple[int, int, int]] = set()
        self._code_rows: list[dict] = []
        self._process_rows: list[dict] = []
        self.unknown_versions: set[str] = set()
        self._seen: dict[tuple[str, str, bool], list[int]] = {}  # (version, path, recorded) -> pids
        self.stats = {"python_processes": 0, "python_processes_recorded": 0, "py_code": 0,
                      "py_code_unreadable": 0}

    def saw(self, pids, comms) -> None:
        """Pids and comms of new samples: check each pid once per comm it shows (threads that
        name themselves cost a check each, once)."""
        with self._lock:
            for pair in {(int(p), str(c)) for p, c in zip(pids, comms)} - self._checked:
                self._checked.add(pair)
                if pair[0]:
                    self._check(pair[0], announce=True)

    def preload(self, pids) -> None:
        """Processes running before the first sample (the capture's targets): their frames are
        walked from the first sample on instead of a batch later; they are listed in
        python_processes only once sampled."""
        with self._lock:
            for pid in pids:
                self._check(int(pid), announce=False)

    def announce(self, pid: int) -> None:
        """A process this tracer records (a uprobe target), listed in python_processes now."""
        with self._lock:
            self._check(pid, announce=True)

    def _check(self, pid: int, announce: bool) -> None:
        rt = find_runtime(pid)
        known = self._runtimes.get(pid)
        if rt is None:
            if known is not None and read_comm(pid) is not None:  # exec'd into something else
                self._runtimes.pop(pid)
                self._announced.discard(pid)
                self._map_delete(pid)
            return
        if known is None or known.build_id != rt.build_id or known.runtime_addr != rt.runtime_addr:
            self._runtimes[pid] = rt
            self._announced.discard(pid)
            if rt.offsets is not None:
                self._map_update(pid, rt)
        if not announce or pid in self._announced:
            return
        self._announced.add(pid)
        self.stats["python_processes"] += 1
        self._process_rows.append({"ts": time.clock_gettime_ns(time.CLOCK_MONOTONIC), "pid": pid,
                                   "version": rt.version, "build_id": rt.build_id, "path": rt.path,
                                   "recorded": rt.offsets is not None})
        self._seen.setdefault((rt.version, rt.path, rt.offsets is not None), []).append(pid)
        if rt.offsets is None:
            self.unknown_versions.add(".".join(rt.version.split(".")[:2]))
        else:
            self.stats["python_processes_recorded"] += 1

    def _map_update(self, pid: int, rt: PyRuntime) -> None:
        if self.obj is None or self.layout is None:
            return
        value = bytearray(self.layout.size)
        fields = {f.name: f for f in self.layout.fields}
        o = rt.offsets
        values = {"runtime": rt.runtime_addr, **vars(o), "frame_read": bpf_frame_read(o), "code_read": bpf_code_read(o)}
        for name, f in fields.items():
            if name in values:
                value[f.offset:f.offset + f.size] = int(values[name]).to_bytes(f.size, "little")
        try:
            self.obj.map(PY_MAP).update(pid.to_bytes(4, "little"), bytes(value))
        except BpfError:
            self.stats["py_procs_full"] = self.stats.get("py_procs_full", 0) + 1  # sampled natively

    def _map_delete(self, pid: int) -> None:
        if self.obj is not None:
            self.obj.map(PY_MAP).delete(pid.to_bytes(4, "little"))

    def intern(self, pid: int, raw: bytes) -> int:
        """A sample's Python frames (struct ue_py_frame[]) -> pystack_id; reads new code objects."""
        with self._lock:
            return self._intern(pid, raw)

    def _intern(self, pid: int, raw: bytes) -> int:
        sid = self._stacks.get(raw)
        if sid is None:
            sid = self._stacks[raw] = len(self._stacks)
        rt = self._runtimes.get(pid)
        for code, check, _lasti in np.frombuffer(raw, dtype=self.frame).tolist():
            key = (pid, code, check)
            if key in self._code_seen:
                continue
            self._code_seen.add(key)
            if not self._read(rt, key):
                self._code_missing.add(key)
        return sid

    def _read(self, rt: PyRuntime | None, key: tuple[int, int, int]) -> bool:
        row = read_code(rt, key[1]) if rt is not None else None
        if row is None or row["checksum"] != key[2]:
            return False  # gone, or freed and its address reused: the sweep may still find it
        self._code_rows.append(row)
        self.stats["py_code"] += 1
        return True

    def sweep(self) -> None:
        """Read the code objects whose first read failed (the processes that still live)."""
        with self._lock:
            for key in list(self._code_missing):
                if self._read(self._runtimes.get(key[0]), key):
                    self._code_missing.discard(key)
            self.stats["py_code_unreadable"] = len(self._code_missing)

    def take_tables(self) -> dict[str, pa.Table]:
        """Rows gathered since the last call (written at every tick, so a killed capture keeps them)."""
        with self._lock:
            return self._take_tables()

    def _take_tables(self) -> dict[str, pa.Table]:
        out = {}
        if self._code_rows:
            out["py_code"] = pa.Table.from_pylist(self._code_rows, schema=PY_CODE_SCHEMA)
            self._code_rows = []
        if self._process_rows:
            out["python_processes"] = pa.Table.from_pylist(self._process_rows, schema=PY_PROCESS_SCHEMA)
            self._process_rows = []
        items = list(self._stacks.items())[self._stacks_written:]
        if items:
            frames = [np.frombuffer(raw, dtype=self.frame) for raw, _ in items]
            out["py_stacks"] = pa.table({
                "tracer": pa.array([self.tracer] * len(items), pa.string()),
                "pystack_id": pa.array([sid for _, sid in items], pa.int32()),
                "code": pa.array([f["code"].tolist() for f in frames], pa.list_(pa.uint64())),
                "checksum": pa.array([f["check"].tolist() for f in frames], pa.list_(pa.uint32())),
                "lasti": pa.array([f["lasti"].tolist() for f in frames], pa.list_(pa.uint32())),
            }, schema=PY_STACKS_SCHEMA)
            self._stacks_written += len(items)
        return out

    def notes(self) -> list[str]:
        """For the manifest (trace info prints them): each interpreter seen, and each version whose
        frames could not be recorded, once."""
        out = []
        for (version, path, recorded), pids in sorted(self._seen.items()):
            shown = ", ".join(str(p) for p in pids[:8]) + (", ..." if len(pids) > 8 else "")
            out.append(f"python {version} ({path}): {len(pids)} process{'es' if len(pids) > 1 else ''} "
                       f"(pid {shown}), frames {'recorded' if recorded else 'not recorded'}")
        out.extend(f"python {v}: frames not recorded (no offsets for this version)"
                   for v in sorted(self.unknown_versions))
        return out
