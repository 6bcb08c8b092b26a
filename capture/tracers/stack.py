"""Stack tracer: cpu-clock sampling on every online CPU (bpf/stack.bpf.c), and
off-CPU intervals from sched_switch with --offcpu.

Options: CaptureOptions.stack (capture/options.py).

Samples carry their frames (bpf/stack.h); postprocess() turns them into ids of
the `stacks` table, so `stack_sample` keeps the columns it always had. Off-CPU
records use the stack map. At finish the interned stacks and the stack map are
written to `stacks` (capture/tracers/stack_maps.py) and the objects mapped by every
sampled process are snapshotted (capture/snapshot/symbols.py), so the archive
alone names every frame.
"""

from __future__ import annotations

import os

import pyarrow as pa

from uetrace.capture.btf import Btf
from uetrace.capture.libbpf import BpfError, BpfObject, Link
from uetrace.capture.procfs import live_pids, read_comm
from uetrace.capture.tracers.contract import Tracer
from uetrace.capture.tracers.perf_event import online_cpus, open_cpu_clock
from uetrace.capture.tracers.python_frames import PythonFrames
from uetrace.capture.tracers.stack_maps import StackInterner, dump_stacks, size_stack_map, unwritten

SAMPLE_DEPTH = 127  # UE_SAMPLE_DEPTH in bpf/stack.h


class StackTracer(Tracer):
    name = "stack"
    structs = ["ue_stack_sample", "ue_offcpu"]
    description = "cpu-clock stack samples on every CPU (and off-CPU intervals with --offcpu)"
    # In the default set, although closing the capture costs seconds of symbol snapshot
    # (an ELF read per mapped object, DWARF line tables within a budget).
    default = True
    records_stacks = True

    def __init__(self, opts, symbols=None):
        super().__init__(opts, symbols)
        self.freq = opts.stack.freq
        self.offcpu = opts.stack.offcpu
        self.perf_fds: list[int] = []  # ours; each link holds a dup, which libbpf closes on detach
        self.interned = StackInterner(SAMPLE_DEPTH)
        self.python = PythonFrames(None, None, None)
        self._stacks_written: set[int] = set()

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        if self.freq <= 0:
            raise BpfError(f"stack sampling at {self.freq} Hz", 22)
        obj.map("events").set_max_entries(min(self.opts.ring_size, 2 << 20))
        size_stack_map(obj, self.opts.stack.stack_entries)
        rodata["min_offcpu_ns"] = int(self.opts.stack.min_offcpu_us * 1000)
        obj.program("ue_offcpu").set_autoload(self.offcpu)
        btf = Btf.from_object(self.object_file)
        self.python = PythonFrames(obj, btf.struct("ue_py_proc"), btf.struct("ue_py_frame"))

    def attach(self, obj: BpfObject) -> None:
        self.python.preload(self._targets())
        prog = obj.program("ue_stack_sample")
        for cpu in online_cpus():
            point = f"perf_event cpu-clock {self.freq} Hz cpu {cpu}"
            try:
                fd = open_cpu_clock(cpu, self.freq)
            except BpfError as e:
                self.failures.append({"point": point, "error": str(e)})
                continue
            self.perf_fds.append(fd)
            self.try_attach(point, _attach_dup, prog, fd)
        if self.offcpu:
            self.try_attach("tp_btf/sched_switch", obj.program("ue_offcpu").attach)
        if not self.attached:
            raise BpfError(f"attach {self.name}: no perf event attached", 95)

    def _targets(self) -> list[int]:
        """Live processes this capture samples (--pid, else --comm, else all): the ones running
        Python get their frames from the first sample; later ones from the first batch of
        samples that names them (a quarter second or more later)."""
        if self.opts.pids:
            return list(self.opts.pids)
        comms = {c[:15] for c in self.opts.comms}
        return [p for p in live_pids() if not comms or read_comm(p) in comms]

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        """Samples: frames -> stack ids (a few hundred rows a second: a Python step per row is fine)."""
        if kind != "stack_sample":
            return table
        frames = table.column("frames").to_pylist()
        kframes = table.column("kframes").to_pylist()
        uframes = table.column("uframes").to_pylist()
        pyframes, pids = table.column("pyframes").to_pylist(), table.column("pid").to_pylist()
        kids, uids = table.column("kstack_id").to_pylist(), table.column("ustack_id").to_pylist()
        pyids = [-1] * len(frames)
        user, py = SAMPLE_DEPTH * 8, 2 * SAMPLE_DEPTH * 8
        # The processes of these samples first, so that a new one's code objects are read below.
        self.python.saw(pids, table.column("comm").to_pylist())
        for i, raw in enumerate(frames):
            if kids[i] == 0:
                kids[i] = self.interned.intern(raw[:kframes[i] * 8])
            if uids[i] == 0:
                uids[i] = self.interned.intern(raw[user:user + uframes[i] * 8])
            if pyframes[i]:
                pyids[i] = self.python.intern(pids[i], raw[py:py + pyframes[i] * self.python.frame.itemsize])
        table = table.set_column(table.schema.get_field_index("kstack_id"), "kstack_id", pa.array(kids, pa.int32()))
        table = table.set_column(table.schema.get_field_index("ustack_id"), "ustack_id", pa.array(uids, pa.int32()))
        # pystack_id: the row of py_stacks holding the sample's Python frames, -1 when none were recorded.
        table = table.append_column("pystack_id", pa.array(pyids, pa.int32()))
        return table.drop_columns(["kframes", "uframes", "pyframes", "frames"])

    def tick(self, write_table) -> None:
        for kind, t in self.python.take_tables().items():
            write_table(kind, t)

    def observe(self, kind: str, table: pa.Table, snapshotter) -> None:
        pairs = table.select(["pid", "comm"]).group_by(["pid", "comm"]).aggregate([])
        self.symbols.saw(pairs.column("pid").to_numpy(), pairs.column("comm").to_numpy(zero_copy_only=False))

    def part_done(self, write_table) -> None:
        self.tick(write_table)
        self._write_stacks(write_table)
        self.symbols.write(write_table, only_changed=True)

    def _write_stacks(self, write_table) -> None:
        mapped, interned = dump_stacks(self.obj, self.name), self.interned.dump(self.name)
        table = pa.concat_tables([interned.table, mapped.table])
        self.stats.update({"stacks": table.num_rows, "stack_max_depth": mapped.max_depth,
                           "stacks_truncated_at_max_depth": mapped.truncated_at_max_depth
                           + interned.truncated_at_max_depth})
        table = unwritten(table, self._stacks_written)
        if table.num_rows:
            write_table("stacks", table)

    def finish(self, write_table) -> None:
        self.python.sweep()
        self.tick(write_table)
        self.stats.update(self.python.stats)
        self.notes.extend(self.python.notes())
        try:
            self._write_stacks(write_table)
        finally:
            for fd in self.perf_fds:
                os.close(fd)
            self.perf_fds = []
        self.symbols.write(write_table)
        self.stats.update({f"symbols_{k}": v for k, v in self.symbols.stats.items()})


def _attach_dup(prog, fd: int) -> Link:
    """Attach to a dup of fd: the link owns (and on detach closes) the dup, we keep fd."""
    dup = os.dup(fd)
    try:
        return prog.attach_perf_event(dup)
    except BpfError:
        os.close(dup)
        raise
