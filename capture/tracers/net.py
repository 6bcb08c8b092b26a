"""Network tracer: XDP on ingress and TC on egress of the chosen interfaces
(bpf/net.bpf.c), one record per packet, plus the kernel's flow table and
per-interface counters dumped at the end.

The flow table (table `net_flows`) is also dumped about every --segment-seconds
while the capture runs (tick()), so a capture killed with SIGKILL still holds
the flow table as of its last closed segment. Every dump is a complete
snapshot: rows carry `snapshot_ts`, and the latest snapshot is the final state
(counts are cumulative; a flow evicted by the LRU is absent from later ones).

Attachment never disturbs a production NIC by default: XDP in generic (SKB)
mode unless --xdp-mode native; TC through a TCX link where the kernel has it
(>= 6.6), else a tagged clsact filter (see netlink_cleanup.py). Every
attachment except the clsact fallback is a bpf_link, gone with the process.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.capture.btf import Btf, StructLayout
from uetrace.capture.libbpf import BpfError, BpfObject, possible_cpus, tc_attach
from uetrace.capture.options import NET_SNAPLEN
from uetrace.capture.snapshot import interfaces as ifsnap
from uetrace.capture.tracers import netlink_cleanup
from uetrace.capture.tracers.contract import NotAttached, Tracer
from uetrace.capture.tracers.sock import addresses_to_text
from uetrace.errors import BadInputError

FLOW_ENTRIES = 65536
NET_L2_RAW_IP = 1        # enum ue_net_l2


class NetTracer(Tracer):
    name = "net"
    structs = ["ue_net_packet"]
    fixed_slot = True
    description = "packets at XDP ingress and TC egress: parsed headers, frame prefix, flow table"
    default = True           # generic XDP + TCX/clsact pass every packet: safe on every up interface

    def __init__(self, opts):
        super().__init__(opts)
        self.ifaces: list[ifsnap.Interface] = []
        self.attach_how: dict[int, dict[str, str]] = {}
        self._btf: Btf | None = None
        self._next_snapshot = 0.0
        self._dumper: threading.Thread | None = None
        self._interfaces_written = False

    def check(self) -> None:
        wanted = list(self.opts.net.ifaces)
        all_ifaces = ifsnap.snapshot()
        self.snapshot = all_ifaces
        if wanted:
            by_name = {i.name: i for i in all_ifaces}
            unknown = [n for n in wanted if n not in by_name]
            if unknown:
                raise BadInputError(f"--iface {unknown[0]}: no such interface "
                                    f"(have: {', '.join(sorted(by_name))})")
            self.ifaces = [by_name[n] for n in dict.fromkeys(wanted)]
        else:
            self.ifaces = [i for i in all_ifaces if i.up]
        if not self.ifaces:
            raise NotAttached("no network interface is up")
        try:
            for line in netlink_cleanup.remove_leftovers():
                self.failures.append({"point": "cleanup", "error": f"removed a filter left by a crashed "
                                                                   f"capture: {line}"})
        except BpfError as e:
            self.failures.append({"point": "cleanup", "error": str(e)})

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        rodata["snaplen"] = NET_SNAPLEN.clamp(self.opts.net.snaplen)
        obj.map("flows").set_max_entries(FLOW_ENTRIES)
        rodata["any_raw_ip"] = int(any(i.raw_ip for i in self.ifaces))

    def attach(self, obj: BpfObject) -> None:
        native = self.opts.net.xdp_mode == "native"
        tc_mode = self.opts.net.tc_attach
        cfg = obj.map("iface_cfg")
        xdp, tc = obj.program("ue_net_xdp"), obj.program("ue_net_tc_egress")
        for i in self.ifaces:
            if i.raw_ip:
                cfg.update(i.ifindex.to_bytes(4, "little"), NET_L2_RAW_IP.to_bytes(4, "little"))
            how = self.attach_how.setdefault(i.ifindex, {"xdp": "", "tc": ""})
            how["tc"] = self._attach_tc(tc, i, tc_mode)
            if i.loopback:
                # Every loopback packet leaves and re-enters lo: egress alone records each
                # one once, as `tcpdump -i lo` does, and spares generic XDP's cost per packet
                # (measured: 4 records per HTTP exchange on lo with both hooks, 2 with one).
                self.notes.append(f"{i.name}: loopback, each packet recorded once at TC egress (no XDP)")
                continue
            mode_native = native
            mode = "native" if mode_native else "generic"
            if self.try_attach(f"xdp {mode} {i.name}", xdp.attach_xdp_mode, i.ifindex, mode_native):
                how["xdp"] = mode
        if not self.attached:
            raise BpfError(f"attach {self.name}: no program attached", 95)

    def _attach_tc(self, prog, iface: ifsnap.Interface, mode: str) -> str:
        if mode in ("auto", "tcx"):
            try:
                self.obj.keep(prog.attach_tcx(iface.ifindex, egress=True))
                self.attached.append(f"tcx egress {iface.name}")
                return "tcx"
            except BpfError as e:
                if mode == "tcx":
                    self.failures.append({"point": f"tcx egress {iface.name}", "error": str(e)})
                    return ""
        if self.try_attach(f"clsact egress {iface.name}", tc_attach, prog.fd, iface.ifindex, True,
                           netlink_cleanup.TC_HANDLE, netlink_cleanup.TC_PRIORITY):
            return "clsact"
        return ""

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        version = table.column("ip_version").to_numpy()
        for col in ("saddr", "daddr"):
            text = addresses_to_text(table.column(col), np.where(version == 4, 2, 10))
            text = pc.if_else(pa.array(version == 0), "", text)
            table = table.set_column(table.schema.get_field_index(col), col, text)
        for col in ("src_mac", "dst_mac"):
            table = table.set_column(table.schema.get_field_index(col), col, macs_to_text(table.column(col)))
        return table

    @property
    def btf(self) -> Btf:
        if self._btf is None:
            self._btf = Btf.from_object(self.object_file)
        return self._btf

    def tick(self, write_table) -> None:
        """Snapshot the flow table into `net_flows` every --segment-seconds. The
        session calls this from its drain loop, so the dump (two syscalls per flow,
        ~0.1 s per 10 K flows) runs on a thread of its own; a snapshot still
        running when the next is due delays that one."""
        now = time.monotonic()
        if now < self._next_snapshot or (self._dumper and self._dumper.is_alive()):
            return
        self._next_snapshot = now + self.opts.segment_seconds
        btf, ncpu = self.btf, possible_cpus()
        self._dumper = threading.Thread(target=lambda: write_table("net_flows", dump_flows(self.obj, btf, ncpu)),
                                        name="uetrace-net-flows", daemon=True)
        self._dumper.start()

    def finish(self, write_table) -> None:
        if self._dumper:
            self._dumper.join()
        ncpu = possible_cpus()
        write_table("net_flows", dump_flows(self.obj, self.btf, ncpu))
        write_table("net_iface_stats", dump_iface_stats(self.obj, self.btf, ncpu))
        if not self._interfaces_written:
            write_table("interfaces", ifsnap.to_table(self.snapshot, self.attach_how))

    def part_done(self, write_table) -> None:
        """The interfaces as attached, once (the next parts carry them), and the flow table as the
        part ends (each part keeps its own snapshots: capture/parts.py PER_PART_TABLES)."""
        if not self._interfaces_written:
            self._interfaces_written = True
            write_table("interfaces", ifsnap.to_table(self.snapshot, self.attach_how))
        write_table("net_flows", dump_flows(self.obj, self.btf, possible_cpus()))


def macs_to_text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """6-byte MAC fields to "aa:bb:cc:dd:ee:ff", formatting each distinct MAC once."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    raw = np.frombuffer(col.buffers()[1], dtype=np.uint8, count=n * 6).reshape(n, 6)
    packed = np.zeros((n, 8), np.uint8)
    packed[:, :6] = raw
    uniq, inverse = np.unique(packed.view("<u8").reshape(n), return_inverse=True)
    texts = [":".join(f"{b:02x}" for b in int(u).to_bytes(8, "little")[:6]) for u in uniq]
    return pa.array(np.array(texts, dtype=object)[inverse.reshape(-1)], type=pa.string())


def _struct_dtype(layout: StructLayout, itemsize: int | None = None) -> np.dtype:
    """A numpy view of a BTF struct; itemsize is the per-CPU stride for map values."""
    fmt = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}
    names, formats, offsets = [], [], []
    for f in layout.fields:
        if f.name.startswith("_pad"):
            continue
        names.append(f.name)
        offsets.append(f.offset)
        formats.append(fmt[f.size] if f.kind == "int" and f.count == 1 else f"V{f.size}")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": itemsize or layout.size})


def _percpu_rows(m, value_size: int, ncpu: int) -> tuple[bytes, list[bytes]]:
    """Every key of a per-CPU hash, and each key's values for all CPUs, as raw bytes."""
    stride = (value_size + 7) // 8 * 8
    keys, values = [], []
    for key in list(m.keys()):
        raw = m.lookup(key, stride * ncpu)
        if raw is not None:
            keys.append(key)
            values.append(raw)
    return b"".join(keys), values


def dump_flows(obj: BpfObject, btf: Btf, ncpu: int) -> pa.Table:
    """The LRU flow table, one row per (interface, direction, 5-tuple), CPUs summed,
    each row stamped with snapshot_ts (CLOCK_MONOTONIC ns before the dump started).
    Two syscalls per flow (libbpf 1.1 binding has no batch lookup), the rest vectorized."""
    snapshot_ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    klay, vlay = btf.struct("ue_net_flow_key"), btf.struct("ue_net_flow_val")
    vdt = _struct_dtype(vlay, (vlay.size + 7) // 8 * 8)
    keys_raw, values = _percpu_rows(obj.map("flows"), vlay.size, ncpu)
    n = len(values)
    keys = np.frombuffer(keys_raw, dtype=_struct_dtype(klay), count=n)
    vals = np.frombuffer(b"".join(values), dtype=vdt, count=n * ncpu).reshape(n, ncpu)
    seen = vals["packets"] > 0
    first = np.where(seen, vals["first_ts"], np.uint64(2**64 - 1)).min(axis=1, initial=2**64 - 1)
    family = np.where(keys["ip_version"] == 4, 2, np.where(keys["ip_version"] == 6, 10, 0))

    def addr(field: str) -> pa.Array:
        raw = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(
            np.ascontiguousarray(keys[field]).tobytes())])
        return addresses_to_text(raw, family)

    return pa.table({
        "snapshot_ts": pa.array(np.full(n, snapshot_ts, np.uint64), pa.uint64()),
        "ifindex": pa.array(keys["ifindex"], pa.uint32()),
        "direction": pa.array(keys["direction"], pa.uint8()),
        "ip_version": pa.array(keys["ip_version"], pa.uint8()),
        "protocol": pa.array(keys["protocol"], pa.uint8()),
        "saddr": addr("saddr"), "sport": pa.array(keys["sport"], pa.uint16()),
        "daddr": addr("daddr"), "dport": pa.array(keys["dport"], pa.uint16()),
        "packets": pa.array(vals["packets"].sum(axis=1, dtype=np.uint64), pa.uint64()),
        "bytes": pa.array(vals["bytes"].sum(axis=1, dtype=np.uint64), pa.uint64()),
        "first_ts": pa.array(first, pa.uint64()),
        "last_ts": pa.array(vals["last_ts"].max(axis=1, initial=0), pa.uint64()),
        "tcp_flags": pa.array(np.bitwise_or.reduce(vals["tcp_flags"], axis=1), pa.uint8()),
    })


def dump_iface_stats(obj: BpfObject, btf: Btf, ncpu: int) -> pa.Table:
    """Per interface and direction: packets the hook saw and records it could not deliver."""
    vlay = btf.struct("ue_net_iface_stat")
    vdt = _struct_dtype(vlay, (vlay.size + 7) // 8 * 8)
    keys_raw, values = _percpu_rows(obj.map("iface_stats"), vlay.size, ncpu)
    keys = np.frombuffer(keys_raw, dtype="<u4", count=len(values))
    per_cpu = [np.frombuffer(v, dtype=vdt, count=ncpu) for v in values]
    return pa.table({
        "ifindex": pa.array(keys >> 1, pa.uint32()), "direction": pa.array(keys & 1, pa.uint8()),
        "packets": pa.array([int(p["packets"].sum()) for p in per_cpu], pa.uint64()),
        "dropped": pa.array([int(p["dropped"].sum()) for p in per_cpu], pa.uint64()),
    })
