"""Count packets per flow in a classic pcap file (what tcpdump -w writes), with
its own minimal Ethernet/IPv4/IPv6/TCP/UDP parsing, independent of uetrace."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from pathlib import Path


def flow_key(proto: int, src: str, sport: int, dst: str, dport: int) -> tuple:
    """Direction-free flow identity: the two endpoints as a sorted pair."""
    return (proto, *sorted([(src, sport), (dst, dport)]))


def read_pcap(path: str | Path) -> list[tuple[int, bytes]]:
    """(original length, captured bytes) of each packet."""
    data = Path(path).read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    pos, out = 24, []
    while pos + 16 <= len(data):
        _s, _us, caplen, origlen = struct.unpack_from(endian + "IIII", data, pos)
        out.append((origlen, data[pos + 16: pos + 16 + caplen]))
        pos += 16 + caplen
    return out


def skip_ipv6_ext(frame: bytes, nh: int, off: int) -> tuple[int, int]:
    """(upper-layer protocol, its offset) after the IPv6 extension headers at off;
    offset 0 for a fragment other than the first, which carries no L4 header."""
    while nh in (0, 43, 44, 51, 60):
        if nh == 44:
            nh, frag_off = frame[off], struct.unpack_from("!H", frame, off + 2)[0]
            if frag_off & 0xFFF8:
                return nh, 0
            off += 8
        else:
            nh, off = frame[off], off + ((frame[off + 1] + 2) * 4 if nh == 51 else (frame[off + 1] + 1) * 8)
    return nh, off


def count_flows(path: str | Path) -> Counter:
    counts: Counter = Counter()
    for _len, frame in read_pcap(path):
        ethertype, off = struct.unpack_from("!H", frame, 12)[0], 14
        if ethertype == 0x0800:
            proto, l4 = frame[off + 9], off + (frame[off] & 0xF) * 4
            src, dst = str(ipaddress.IPv4Address(frame[off + 12: off + 16])), \
                str(ipaddress.IPv4Address(frame[off + 16: off + 20]))
        elif ethertype == 0x86DD:
            proto, l4 = skip_ipv6_ext(frame, frame[off + 6], off + 40)
            src, dst = str(ipaddress.IPv6Address(frame[off + 8: off + 24])), \
                str(ipaddress.IPv6Address(frame[off + 24: off + 40]))
        else:
            continue
        sport, dport = struct.unpack_from("!HH", frame, l4) if proto in (6, 17) and l4 else (0, 0)
        counts[flow_key(proto, src, sport, dst, dport)] += 1
    return counts
