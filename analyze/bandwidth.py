"""Bytes per second per interface and direction over the capture, in equal time buckets (the HTML
report's chart, Perfetto's counter tracks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from uetrace.analyze.archive_db import ArchiveDb


@dataclass
class Bandwidth:
    t0_ns: int = 0  # CLOCK_MONOTONIC ns of the first bucket's start
    bucket_ns: int = 1
    series: dict[str, list[float]] = field(default_factory=dict)  # "lo in" -> bytes/s per bucket


def bandwidth(db: ArchiveDb, buckets: int = 120) -> Bandwidth:
    if not db.has("net_packet"):
        return Bandwidth()
    lo, hi = db.query("SELECT min(ts), max(ts) FROM net_packet")[0]
    if lo is None:
        return Bandwidth()
    width = max(1, (hi - lo) // buckets + 1)
    if db.has("interfaces"):
        rows = db.query("""
            SELECT i.name, n.direction, (n.ts - ?) // ? AS b, sum(n.len)
            FROM net_packet n LEFT JOIN (SELECT DISTINCT ifindex, name FROM interfaces) i USING (ifindex)
            GROUP BY ALL ORDER BY ALL""", [lo, width])
    else:
        rows = db.query("""SELECT CAST(ifindex AS VARCHAR), direction, (ts - ?) // ? AS b, sum(len)
                           FROM net_packet GROUP BY ALL ORDER BY ALL""", [lo, width])
    ingress = db.enums.value("net_packet", "ue_net_direction", "NET_INGRESS")
    out = Bandwidth(int(lo), int(width))
    for name, direction, bucket, nbytes in rows:
        key = f"{name or '?'} {'in' if direction == ingress else 'out'}"
        out.series.setdefault(key, [0.0] * buckets)[min(int(bucket), buckets - 1)] += int(nbytes) / (width / 1e9)
    return out
