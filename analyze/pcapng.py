"""Export the net tracer's packets as pcapng, for Wireshark and tshark.

Layout (draft-ietf-opsawg-pcapng): one Section Header Block; one Interface
Description Block per interface that has packets (or had a hook attached),
with its name, MAC and nanosecond timestamps; one Enhanced Packet Block per
packet, in time order, with the captured bytes, the original length and the
direction flag; and at the end one Interface Statistics Block per interface
with the packets its hooks saw (isb_ifrecv), the records lost because the ring
buffer was full (isb_ifdrop) and the packets written (isb_usrdeliv).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from uetrace import __version__
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.errors import BadInputError
from uetrace.output_files import DEFAULT_MODE, OutputFile

# Block types and option codes from the pcapng specification.
SHB, IDB, EPB, ISB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000005
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_COMMENT = 0, 1
SHB_OS, SHB_USERAPPL = 3, 4
IF_NAME, IF_DESCRIPTION, IF_MACADDR, IF_TSRESOL = 2, 3, 6, 9
EPB_FLAGS = 2
ISB_STARTTIME, ISB_ENDTIME, ISB_IFRECV, ISB_IFDROP, ISB_USRDELIV = 2, 3, 4, 5, 8
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
EPB_INBOUND, EPB_OUTBOUND = 1, 2
RAW_IP_LINK_TYPES = (519, 768, 769, 776, 0xFFFE)  # capture/snapshot/interfaces.py ARPHRD_RAW_IP
BATCH = 65536


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * _pad4(len(value))


def _options(opts: list[tuple[int, bytes]]) -> bytes:
    if not opts:
        return b""
    return b"".join(_option(c, v) for c, v in opts) + struct.pack("<HH", OPT_END, 0)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def section_header(os_name: str) -> bytes:
    body = struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(SHB, body + _options([(SHB_OS, os_name.encode()),
                                        (SHB_USERAPPL, f"uetrace {__version__}".encode())]))


def interface_description(linktype: int, snaplen: int, name: str, mac: str, description: str) -> bytes:
    opts = [(IF_NAME, name.encode()), (IF_TSRESOL, bytes([9]))]   # 10^-9 s: nanoseconds
    if description:
        opts.append((IF_DESCRIPTION, description.encode()))
    if mac and len(mac.split(":")) == 6:
        opts.append((IF_MACADDR, bytes(int(x, 16) for x in mac.split(":"))))
    return _block(IDB, struct.pack("<HHI", linktype, 0, snaplen) + _options(opts))


def enhanced_packet(if_id: int, ts_ns: int, data: bytes, orig_len: int, inbound: bool) -> bytes:
    caplen = len(data)
    body = (struct.pack("<IIIII", if_id, ts_ns >> 32 & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, caplen, orig_len)
            + data + b"\0" * _pad4(caplen)
            + _options([(EPB_FLAGS, struct.pack("<I", EPB_INBOUND if inbound else EPB_OUTBOUND))]))
    return _block(EPB, body)


def interface_statistics(if_id: int, ts_ns: int, start_ns: int, received: int, dropped: int,
                         delivered: int) -> bytes:
    def ts(v: int) -> bytes:
        return struct.pack("<II", v >> 32 & 0xFFFFFFFF, v & 0xFFFFFFFF)
    opts = [(ISB_STARTTIME, ts(start_ns)), (ISB_ENDTIME, ts(ts_ns)), (ISB_IFRECV, struct.pack("<Q", received)),
            (ISB_IFDROP, struct.pack("<Q", dropped)), (ISB_USRDELIV, struct.pack("<Q", delivered))]
    return _block(ISB, struct.pack("<III", if_id, ts_ns >> 32 & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF) + _options(opts))


class ExportError(BadInputError):
    """The capture cannot be exported (e.g. it holds no packets)."""


def _interfaces(cap: ArchiveDb) -> list[dict]:
    """Interfaces to describe: those with packets, plus those a hook was attached to."""
    with_packets = {int(r[0]) for r in cap.query("SELECT DISTINCT ifindex FROM net_packet")}
    known: dict[int, dict] = {}
    if cap.has("interfaces"):
        cur = cap.con.execute("SELECT * FROM interfaces")
        cols = [d[0] for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(cols, row))
            if r["ifindex"] in with_packets or r.get("xdp_attach") or r.get("tc_attach"):
                known[int(r["ifindex"])] = r
    for i in with_packets - set(known):
        known[i] = {"ifindex": i, "name": f"if{i}", "mac": "", "link_type": 1, "kind": ""}
    return [known[i] for i in sorted(known)]


def _stats(cap: ArchiveDb) -> dict[int, tuple[int, int]]:
    if not cap.has("net_iface_stats"):
        return {}
    return {int(i): (int(p), int(d)) for i, p, d in cap.query(
        "SELECT ifindex, sum(packets), sum(dropped) FROM net_iface_stats GROUP BY 1")}


def _packets(cap: ArchiveDb) -> Iterator[tuple[int, int, bytes, int, bool]]:
    reader = cap.con.sql("SELECT ifindex, ts, payload, len, direction FROM net_packet ORDER BY ts") \
        .to_arrow_reader(BATCH)
    for batch in reader:
        cols = [batch.column(i).to_pylist() for i in range(5)]
        yield from zip(*cols)


def export(cap: ArchiveDb, out: BinaryIO) -> dict:
    """Write the capture's packets as pcapng to `out`; returns counts per interface."""
    if not cap.has("net_packet"):
        raise ExportError("the capture has no packets (was the net tracer attached?)")
    offset = _offset(cap)
    snaplen = cap.info.net_snaplen
    if not snaplen:
        snaplen = int(cap.query("SELECT max(captured) FROM net_packet")[0][0] or 0)
    ifaces = _interfaces(cap)
    ids = {int(i["ifindex"]): n for n, i in enumerate(ifaces)}
    out.write(section_header(cap.info.host_text("kernel") or "Linux"))
    for i in ifaces:
        linktype = LINKTYPE_RAW if int(i.get("link_type") or 1) in RAW_IP_LINK_TYPES else LINKTYPE_ETHERNET
        desc = f"{i.get('kind') or 'device'}; XDP {i.get('xdp_attach') or '-'}, TC {i.get('tc_attach') or '-'}"
        out.write(interface_description(linktype, snaplen, i["name"], i.get("mac") or "", desc))
    written = dict.fromkeys(ids, 0)
    first = last = None
    ingress = cap.enums.value("net_packet", "ue_net_direction", "NET_INGRESS")
    for ifindex, ts, data, length, direction in _packets(cap):
        ts_wall = ts + offset
        first = ts_wall if first is None else first
        last = ts_wall
        out.write(enhanced_packet(ids[ifindex], ts_wall, data or b"", length, direction == ingress))
        written[ifindex] += 1
    stats = _stats(cap)
    end = last or _offset(cap)
    for ifindex, if_id in ids.items():
        seen, dropped = stats.get(ifindex, (written[ifindex], 0))
        out.write(interface_statistics(if_id, end, first or end, seen, dropped, written[ifindex]))
    return {"interfaces": len(ids), "packets": sum(written.values()), "per_interface": written}


def _offset(cap: ArchiveDb) -> int:
    """Add to a CLOCK_MONOTONIC ns timestamp to get ns since the Unix epoch."""
    return cap.info.realtime_offset_ns


def export_file(cap: ArchiveDb, path: str | Path, *, force: bool = False, mode: int = DEFAULT_MODE) -> dict:
    """Write the export to `path` (uetrace/output_files.py: 0600, in place only once complete;
    nothing is left behind if it fails)."""
    with OutputFile(path, force=force, mode=mode) as out, open(out.fd, "wb", closefd=False) as fh:
        return export(cap, fh)
