"""The contract between the capture session and one tracer.

A tracer is a BPF object (bpf/<name>.bpf.c + bpf/<name>.h) plus this small
Python description: which record structs it emits, what read-only config it
takes before load, and how it attaches. The session owns the lifecycle:
open -> configure -> load -> attach -> drain `events` ring -> finish -> close.
"""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa

from uetrace.bpf import object_path
from uetrace.capture.btf import section_variables
from uetrace.capture.libbpf import BpfError, BpfObject, Link
from uetrace.capture.options import CaptureOptions
from uetrace.capture.snapshot.symbols import SymbolSnapshot


class NotAttached(Exception):
    """Raised by Tracer.check() when the tracer has nothing to do in this capture
    (e.g. lock tracer without a target); the message lands in the manifest."""


class Tracer:
    name: ClassVar[str]
    structs: ClassVar[list[str]]           # record structs, e.g. ["ue_sock_data", "ue_sock_conn"]
    description: ClassVar[str] = ""
    default: ClassVar[bool] = True          # part of the default tracer set
    cost: ClassVar[str] = ""                # said before attaching a tracer that slows its targets
    records_stacks: ClassVar[bool] = False  # its records name user stacks: it gets the capture's SymbolSnapshot
    ring_map: ClassVar[str] = "events"
    # Busy tracers give every record a fixed slot in the ring (see RingReader): the largest
    # record, payload included. Their configure() sets rodata["snaplen"], the payload bound.
    fixed_slot: ClassVar[bool] = False

    def __init__(self, opts: CaptureOptions, symbols: SymbolSnapshot | None = None):
        self.opts = opts
        # One per capture, shared by the tracers that record stacks, so an object two of them saw
        # is stored once. The session passes it to those (records_stacks); a tracer made alone gets its own.
        self.symbols = symbols if symbols is not None else SymbolSnapshot()
        self.obj: BpfObject | None = None
        self.failures: list[dict] = []      # attach points that failed: {"point", "error"}
        self.attached: list[str] = []
        self.after_attach = lambda: None    # the session drains the ring between attachments
        self.stats: dict[str, int] = {}     # tracer-specific counters for the manifest (set by finish)
        self.notes: list[str] = []          # what a reader of the manifest must know (e.g. which hook records lo)

    @property
    def object_file(self) -> str:
        return str(object_path(self.name))

    def check(self) -> None:
        """Raise NotAttached if this tracer should not run in this capture."""

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        """Add tracer-specific .rodata values and resize maps before load."""

    def attach(self, obj: BpfObject) -> None:
        """Attach every program by its section name; a failed program is recorded
        and skipped, and a tracer with no program attached fails as a whole."""
        for prog in obj.programs():
            self.try_attach(prog.section, prog.attach)
        if not self.attached:
            raise BpfError(f"attach {self.name}: no program attached", 95)

    def try_attach(self, point: str, fn, *args) -> Link | None:
        try:
            link = self.obj.keep(fn(*args))
        except BpfError as e:
            self.failures.append({"point": point, "error": str(e)})
            return None
        self.attached.append(point)
        self.after_attach()
        return link

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        """Turn raw columns into friendlier ones (e.g. addresses to text) before writing."""
        return table

    def tick(self, write_table) -> None:
        """Called from the capture loop at every stats interval (about 0.5 s) while
        recording: write periodic snapshots of map state, so a killed capture keeps
        them. write_table(kind, table) queues a table under symbols/. Keep it cheap."""

    def observe(self, kind: str, table: pa.Table, snapshotter) -> None:
        """See each decoded table on the writer thread (e.g. proc asks for exec snapshots)."""

    def stop(self) -> None:
        """Called before the session detaches the programs: stop any thread that
        attaches new points (e.g. the uprobe tracers' --comm watcher)."""

    def part_done(self, write_table) -> None:
        """--rotate: the part being written ends while the programs still run. Write what its
        records need offline and was not written yet (stacks, symbols) with write_table(kind, table):
        the next parts carry it too (capture/parts.py). Runs on the segment writer thread."""

    def finish(self, write_table) -> None:
        """Called once after the last drain, with the programs detached: dump map
        snapshots with write_table(kind, table)."""


def write_rodata(obj: BpfObject, values: dict[str, object]) -> None:
    """Set `const volatile` globals before load; names not in this object are ignored
    (every tracer gets the common filters, whichever of them it declares)."""
    vars_ = section_variables(obj.path, ".rodata")
    if not vars_:
        return
    image = obj.map(".rodata").initial_value()
    for name, value in values.items():
        if name not in vars_:
            continue
        off, size = vars_[name]
        if isinstance(value, (bytes, str)):
            raw = value.encode() if isinstance(value, str) else value
            raw = raw[:size].ljust(size, b"\0")
        else:
            raw = int(value).to_bytes(size, "little", signed=int(value) < 0)
        image[off:off + size] = raw

