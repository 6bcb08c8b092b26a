"""Network tracer: XDP on ingress and TC on egress of the chosen interfaces
(bpf/net.bpf.c), one record per packet, plus the kernel's flow table and
per-interface counters dumped at the end.

Attachment never disturbs a production NIC by default: XDP in generic (SKB)
mode unless --xdp-mode native; TC through a TCX link where the kernel has it
(>= 6.6), else a tagged clsact filter (see netlink_cleanup.py). Every
attachment except the clsact fallback is a bpf_link, gone with the process.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.capture import interfaces as ifsnap
from uetrace.capture import netlink_cleanup
from uetrace.capture.btf import Btf, StructLayout
from uetrace.capture.libbpf import BpfError, BpfObject, possible_cpus, tc_attach
from uetrace.capture.sock_tracer import addresses_to_text
from uetrace.capture.tracer import NotAttached, Tracer
from uetrace.errors import BadInputError

MAX_SNAPLEN = 4096       # NET_MAX_SNAPLEN in bpf/net.h
DEFAULT_SNAPLEN = 128
FLOW_ENTRIES = 65536
NET_L2_RAW_IP = 1        # enum ue_net_l2


class NetTracer(Tracer):
    name = "net"
    structs = ["ue_net_packet"]
    description = "packets at XDP ingress and TC egress: parsed headers, frame prefix, flow table"
    default = True           # generic XDP + TCX/clsact pass every packet: safe on every up interface

    def __init__(self, opts):
        super().__init__(opts)
        self.ifaces: list[ifsnap.Interface] = []
        self.attach_how: dict[int, dict[str, str]] = {}

    @property
    def _extra(self) -> dict:
        return self.opts.extra

    def check(self) -> None:
        wanted = list(self._extra.get("net_ifaces") or [])
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
        rodata["snaplen"] = min(int(self._extra.get("net_snaplen", DEFAULT_SNAPLEN)), MAX_SNAPLEN)
        obj.map("flows").set_max_entries(FLOW_ENTRIES)

    def attach(self, obj: BpfObject) -> None:
        native = self._extra.get("net_xdp_mode", "generic") == "native"
        tc_mode = self._extra.get("net_tc_attach", "auto")
        cfg = obj.map("iface_cfg")
        xdp, tc = obj.program("ue_net_xdp"), obj.program("ue_net_tc_egress")
        for i in self.ifaces:
            if i.raw_ip:
                cfg.update(i.ifindex.to_bytes(4, "little"), NET_L2_RAW_IP.to_bytes(4, "little"))
            how = self.attach_how.setdefault(i.ifindex, {"xdp": "", "tc": ""})
            # Loopback has no driver XDP: it is always generic.
            mode_native = native and not i.loopback
            mode = "native" if mode_native else "generic"
            if self.try_attach(f"xdp {mode} {i.name}", xdp.attach_xdp_mode, i.ifindex, mode_native):
                how["xdp"] = mode
            how["tc"] = self._attach_tc(tc, i, tc_mode)
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

    def finish(self, write_table) -> None:
        btf = Btf.from_object(self.object_file)
        ncpu = possible_cpus()
        write_table("net_flows", dump_flows(self.obj, btf, ncpu))
        write_table("net_iface_stats", dump_iface_stats(self.obj, btf, ncpu))
        write_table("interfaces", ifsnap.to_table(self.snapshot, self.attach_how))


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
    """The LRU flow table, one row per (interface, direction, 5-tuple), CPUs summed."""
    klay, vlay = btf.struct("ue_net_flow_key"), btf.struct("ue_net_flow_val")
    vdt = _struct_dtype(vlay, (vlay.size + 7) // 8 * 8)
    keys_raw, values = _percpu_rows(obj.map("flows"), vlay.size, ncpu)
    n = len(values)
    keys = np.frombuffer(keys_raw, dtype=_struct_dtype(klay), count=n)
    per_cpu = [np.frombuffer(v, dtype=vdt, count=ncpu) for v in values]
    packets = np.array([int(p["packets"].sum()) for p in per_cpu], dtype=np.uint64)
    nbytes = np.array([int(p["bytes"].sum()) for p in per_cpu], dtype=np.uint64)
    first = np.array([int(p["first_ts"][p["packets"] > 0].min(initial=2**64 - 1)) for p in per_cpu], dtype=np.uint64)
    last = np.array([int(p["last_ts"].max()) for p in per_cpu], dtype=np.uint64)
    flags = np.array([int(np.bitwise_or.reduce(p["tcp_flags"])) for p in per_cpu], dtype=np.uint8)
    version = keys["ip_version"] if n else np.zeros(0, np.uint8)

    def addr(field: str) -> list[str]:
        raw = [bytes(x) for x in keys[field]] if n else []
        return ["" if v == 0 else str(ipaddress.ip_address(b[:4] if v == 4 else b)) for b, v in zip(raw, version)]

    return pa.table({
        "ifindex": pa.array(keys["ifindex"] if n else [], pa.uint32()),
        "direction": pa.array(keys["direction"] if n else [], pa.uint8()),
        "ip_version": pa.array(version, pa.uint8()),
        "protocol": pa.array(keys["protocol"] if n else [], pa.uint8()),
        "saddr": pa.array(addr("saddr"), pa.string()), "sport": pa.array(keys["sport"] if n else [], pa.uint16()),
        "daddr": pa.array(addr("daddr"), pa.string()), "dport": pa.array(keys["dport"] if n else [], pa.uint16()),
        "packets": pa.array(packets, pa.uint64()), "bytes": pa.array(nbytes, pa.uint64()),
        "first_ts": pa.array(first, pa.uint64()), "last_ts": pa.array(last, pa.uint64()),
        "tcp_flags": pa.array(flags, pa.uint8()),
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
