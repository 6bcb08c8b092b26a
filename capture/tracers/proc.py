"""Process tracer: exec, fork and exit from the scheduler tracepoints
(bpf/proc.bpf.c). Never filtered by --pid/--comm: children and execs of the
targets must stay visible, and the rate is low."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from uetrace.capture.libbpf import BpfObject
from uetrace.capture.tracers.contract import Tracer

OPS = {1: "exec", 2: "fork", 3: "exit", 4: "thread", 5: "thread_exit"}  # enum ue_proc_op


class ProcTracer(Tracer):
    name = "proc"
    structs = ["ue_proc"]
    description = "process lifecycle: exec, fork, exit"

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        obj.map("events").set_max_entries(min(self.opts.ring_size, 1 << 20))

    def observe(self, kind: str, table: pa.Table, snapshotter) -> None:
        for pid in pc.filter(table.column("pid"), pc.equal(table.column("op"), 1)).to_pylist():
            snapshotter.exec(pid)
