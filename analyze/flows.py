"""Flows: the net tracer's packets grouped per 5-tuple and interface.

For each flow: packets, frame bytes and L4 payload bytes sent by each side,
first/last seen, the TCP handshake RTT (first SYN to first SYN-ACK as seen on
that interface), resets, FINs, retransmissions (a segment whose sequence range
starts before the highest sequence already sent in that direction) and how the
flow closed. Plus bandwidth over time per interface and the top talkers.

The "initiator" of a flow is the sender of its first SYN, or of its first packet
when no SYN was captured. On a loopback interface every packet passes the TC
egress hook and then the XDP ingress hook; only the egress copy is counted.
SQL over the `net_packet` view, but for the retransmissions (retransmissions.py, in numpy: a flow's
segments in order, a group of flows at a time); the result is the `flows` table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.analyzer import ResultRendering
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.chunks import packed
from uetrace.analyze.render import human_bytes
from uetrace.analyze.retransmissions import retransmissions

NAME = "flows"
VIEWS: tuple[str, ...] = ("flows", "net_observed")

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


@dataclass(frozen=True)
class FlowsParams:
    top: int = 0  # only the N flows with the most bytes (0: all); top talkers: N, else 10


# Packets to count: IP only, and on loopback interfaces the egress copy only.
_OBSERVED = """
CREATE OR REPLACE TEMP VIEW net_observed AS
SELECT p.*,
       (p.saddr < p.daddr OR (p.saddr = p.daddr AND p.sport <= p.dport)) AS from_lo
FROM net_packet p
WHERE p.ip_version IN (4, 6)
  AND NOT (p.direction = {ingress} AND p.ifindex IN ({loopbacks}))
"""

# The flows' packets keyed by their flow's 5-tuple read low address first, with the sequence space each
# TCP segment takes (SYN and FIN count one).
_KEYED = """
CREATE OR REPLACE TEMP VIEW _flow_keyed AS
SELECT *,
       CASE WHEN from_lo THEN saddr ELSE daddr END AS lo_addr,
       CASE WHEN from_lo THEN sport ELSE dport END AS lo_port,
       CASE WHEN from_lo THEN daddr ELSE saddr END AS hi_addr,
       CASE WHEN from_lo THEN dport ELSE sport END AS hi_port,
       CASE WHEN protocol = 6 THEN payload_len
                                 + CASE WHEN tcp_flags & 2 <> 0 THEN 1 ELSE 0 END
                                 + CASE WHEN tcp_flags & 1 <> 0 THEN 1 ELSE 0 END END AS seg_len
FROM net_observed
"""
_FLOW = "ifindex, ip_version, protocol, lo_addr, lo_port, hi_addr, hi_port"
# One row per flow, numbered: which side initiated it (the first SYN's sender, else the first packet's).
_FLOW_IDS = f"""
CREATE OR REPLACE TEMP TABLE _flow_ids AS
SELECT {_FLOW},
       coalesce(arg_min(from_lo, ts) FILTER (WHERE protocol = 6 AND tcp_flags & 18 = 2),
                arg_min(from_lo, ts)) AS init_from_lo,
       count(*) AS packets, (row_number() OVER () - 1)::BIGINT AS flow
FROM _flow_keyed GROUP BY ALL
"""
_SIDED = f"""
SELECT k.*, i.flow, i.init_from_lo, (k.from_lo = i.init_from_lo) AS fwd
FROM _flow_keyed k JOIN _flow_ids i USING ({_FLOW})"""
# The TCP segments of flows lo <= flow < hi, for retransmissions.py.
_SEGMENTS = f"SELECT flow, fwd::BIGINT, ts::BIGINT, seq::BIGINT, seg_len::BIGINT FROM ({_SIDED}) " \
            "WHERE protocol = 6 AND flow >= {lo} AND flow < {hi}"
_FLOWS = f"""
CREATE OR REPLACE TEMP TABLE flows AS
WITH per_flow AS (
    SELECT flow, {_FLOW},
           CASE WHEN any_value(init_from_lo) THEN lo_addr ELSE hi_addr END AS init_addr,
           CASE WHEN any_value(init_from_lo) THEN lo_port ELSE hi_port END AS init_port,
           CASE WHEN any_value(init_from_lo) THEN hi_addr ELSE lo_addr END AS resp_addr,
           CASE WHEN any_value(init_from_lo) THEN hi_port ELSE lo_port END AS resp_port,
           count(*) FILTER (WHERE fwd) AS init_packets,
           coalesce(sum(len) FILTER (WHERE fwd), 0)::UBIGINT AS init_bytes,
           coalesce(sum(payload_len) FILTER (WHERE fwd), 0)::UBIGINT AS init_payload,
           count(*) FILTER (WHERE NOT fwd) AS resp_packets,
           coalesce(sum(len) FILTER (WHERE NOT fwd), 0)::UBIGINT AS resp_bytes,
           coalesce(sum(payload_len) FILTER (WHERE NOT fwd), 0)::UBIGINT AS resp_payload,
           min(ts) AS first_ts, max(ts) AS last_ts, max(ts) - min(ts) AS duration_ns,
           min(ts) FILTER (WHERE fwd AND protocol = 6 AND tcp_flags & 18 = 2) AS syn_ts,
           min(ts) FILTER (WHERE NOT fwd AND protocol = 6 AND tcp_flags & 18 = 18) AS synack_ts,
           CASE WHEN synack_ts >= syn_ts THEN synack_ts - syn_ts END AS handshake_rtt_ns,
           count(*) FILTER (WHERE tcp_flags & 4 <> 0) AS resets,
           count(*) FILTER (WHERE tcp_flags & 1 <> 0) AS fins,
           bit_or(tcp_flags) AS tcp_flags,
           CASE WHEN protocol <> 6 THEN ''
                WHEN count(*) FILTER (WHERE tcp_flags & 4 <> 0) > 0 THEN 'rst'
                WHEN count(*) FILTER (WHERE fwd AND tcp_flags & 1 <> 0) > 0
                 AND count(*) FILTER (WHERE NOT fwd AND tcp_flags & 1 <> 0) > 0 THEN 'fin'
                WHEN count(*) FILTER (WHERE tcp_flags & 1 <> 0) > 0 THEN 'half-closed'
                ELSE 'open' END AS close
    FROM ({_SIDED}) GROUP BY flow, {_FLOW}
)
SELECT ifindex, ip_version, protocol, init_addr, init_port, resp_addr, resp_port, init_packets, init_bytes,
       init_payload, resp_packets, resp_bytes, resp_payload, first_ts, last_ts, duration_ns, syn_ts, synack_ts,
       handshake_rtt_ns, resets, fins, r.retransmissions, tcp_flags, close
FROM per_flow JOIN _flow_retransmissions r USING (flow)
"""
# Packets read for the retransmissions at once (flows whole): bounded memory, whatever the capture.
SEGMENTS_PER_QUERY = 1_000_000  # ~130 bytes each while they are sorted


@dataclass
class FlowsResult:
    flows: list[dict] = field(default_factory=list)
    total_flows: int = 0
    bandwidth: list[dict] = field(default_factory=list)     # per interface and time bucket
    bucket_s: float = 1.0
    top_talkers: list[dict] = field(default_factory=list)
    interfaces: list[dict] = field(default_factory=list)   # per interface: packets seen, recorded, dropped

    def to_json(self) -> dict:
        return self.__dict__.copy()

    def to_text(self) -> str:
        from uetrace.analyze.render import text_table
        out = []
        if self.interfaces:
            out.append(text_table("interfaces", ("interface", "recorded", "seen by hooks", "dropped"),
                                  [(i["iface"], f"{i['recorded']:,}", f"{i['seen']:,}", f"{i['dropped']:,}")
                                   for i in self.interfaces]))
        shown = f" (top {len(self.flows)} of {self.total_flows} by bytes)" if len(self.flows) < self.total_flows \
            else f" ({self.total_flows})"
        out.append(text_table("flows" + shown, ("iface", "proto", "initiator", "responder", "pkts >", "pkts <",
                                                "bytes >", "bytes <", "rtt", "retx", "rst", "close"),
                              [(f["iface"], f["proto"], _ep(f["init_addr"], f["init_port"]),
                                _ep(f["resp_addr"], f["resp_port"]), f["init_packets"], f["resp_packets"],
                                human_bytes(f["init_bytes"]), human_bytes(f["resp_bytes"]),
                                _ms(f["handshake_rtt_ns"]), f["retransmissions"], f["resets"], f["close"])
                               for f in self.flows]))
        if self.top_talkers:
            out.append(text_table("top talkers", ("address", "sent", "received", "packets sent", "flows"),
                                  [(t["addr"], human_bytes(t["bytes_sent"]), human_bytes(t["bytes_received"]),
                                    t["packets_sent"], t["flows"]) for t in self.top_talkers]))
        if self.bandwidth:
            out.append(text_table(f"bandwidth per interface ({self.bucket_s:g} s buckets)",
                                  ("time", "iface", "in", "out", "in bit/s", "out bit/s"),
                                  [(b["time"], b["iface"], human_bytes(b["bytes_in"]), human_bytes(b["bytes_out"]),
                                    _rate(b["bytes_in"] * 8 / self.bucket_s), _rate(b["bytes_out"] * 8 / self.bucket_s))
                                   for b in self.bandwidth]))
        return "\n".join(out)


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _ms(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e6:.3f} ms"


def _rate(bps: float) -> str:
    for unit in ("", "k", "M", "G"):
        if bps < 1000 or unit == "G":
            return f"{bps:.0f} {unit}bit/s" if not unit else f"{bps:.1f} {unit}bit/s"
        bps /= 1000
    return ""


def applies(cap: ArchiveDb) -> bool:
    return cap.has("net_packet")


def _loopbacks(cap: ArchiveDb) -> str:
    if cap.has("interfaces"):
        ids = [r[0] for r in cap.query("SELECT ifindex FROM interfaces WHERE loopback")]
    else:
        ids = [1]  # the kernel always gives lo ifindex 1
    return ", ".join(str(int(i)) for i in ids) or "NULL"


def _directions(cap: ArchiveDb) -> tuple[int, int]:
    """(egress, ingress) values of net_packet.direction in this archive."""
    return (cap.enums.value("net_packet", "ue_net_direction", "NET_EGRESS"),
            cap.enums.value("net_packet", "ue_net_direction", "NET_INGRESS"))


def register_views(cap: ArchiveDb) -> None:
    if cap.cache.get("flows.views"):  # the views are built once per archive
        return
    con = cap.con
    con.execute(_OBSERVED.format(loopbacks=_loopbacks(cap), ingress=int(_directions(cap)[1])))
    con.execute(_KEYED)
    con.execute(_FLOW_IDS)
    packets = np.array([n for n, in con.execute("SELECT packets FROM _flow_ids ORDER BY flow").fetchall()], np.int64)
    retx = np.zeros(len(packets), np.int64)
    for group in packed(range(len(packets)), lambda f: int(packets[f]), SEGMENTS_PER_QUERY):
        lo, hi = group[0], group[-1] + 1
        got = con.sql(_SEGMENTS.format(lo=int(lo), hi=int(hi))).to_arrow_table()
        flow, fwd, ts, seq, seg_len = (pc.fill_null(c, 0).to_numpy().astype(np.int64, copy=False) for c in got.columns)
        del got
        hit = retransmissions(flow, np.zeros_like(flow), fwd, ts, seq, seg_len).astype(bool)
        retx[lo:hi] += np.bincount(flow[hit] - lo, minlength=hi - lo)
    counts = pa.table({"flow": np.arange(len(retx), dtype=np.int64), "retransmissions": retx})
    con.register("_flow_retransmissions", counts)
    try:
        con.execute(_FLOWS)
    finally:
        con.unregister("_flow_retransmissions")
    con.execute("DROP TABLE _flow_ids")
    cap.cache["flows.views"] = True


def iface_names(cap: ArchiveDb) -> dict[int, str]:
    if not cap.has("interfaces"):
        return {}
    return {int(i): n for i, n in cap.query("SELECT ifindex, any_value(name) FROM interfaces GROUP BY ifindex")}


def wall_clock(cap: ArchiveDb):
    """CLOCK_MONOTONIC ns -> aware UTC datetime, from the manifest's clock anchors."""
    offset = cap.info.realtime_offset_ns
    return lambda ts: dt.datetime.fromtimestamp((ts + offset) / 1e9, dt.timezone.utc) if ts is not None else None


def combine(results: Sequence[tuple[str, str, FlowsResult]]) -> FlowsResult:
    """The flows of several captures, (capture_id, host, result) each: every row names its capture and
    host; flows stay each capture's top N, in byte order over all."""
    out = FlowsResult(bucket_s=results[0][2].bucket_s if results else 1.0)
    for cid, host, r in results:
        tag = {"capture_id": cid, "host": host}
        out.flows += [{**tag, **f} for f in r.flows]
        out.bandwidth += [{**tag, **b} for b in r.bandwidth]
        out.top_talkers += [{**tag, **t} for t in r.top_talkers]
        out.interfaces += [{**tag, **i} for i in r.interfaces]
        out.total_flows += r.total_flows
    out.flows.sort(key=lambda f: -((f.get("init_bytes") or 0) + (f.get("resp_bytes") or 0)))
    return out


def run(cap: ArchiveDb, params: FlowsParams = FlowsParams()) -> FlowsResult:
    limit = params.top
    register_views(cap)
    names = iface_names(cap)
    wall = wall_clock(cap)
    res = FlowsResult()
    res.total_flows = cap.query("SELECT count(*) FROM flows")[0][0]
    cur = cap.con.execute("SELECT * FROM flows ORDER BY init_bytes + resp_bytes DESC, first_ts"
                          + (f" LIMIT {limit}" if limit else ""))
    cols = [d[0] for d in cur.description]
    for row in cur.fetchall():
        f = dict(zip(cols, row))
        f["iface"] = names.get(f["ifindex"], str(f["ifindex"]))
        f["proto"] = PROTOCOLS.get(f["protocol"], str(f["protocol"]))
        f["first_seen"], f["last_seen"] = wall(f["first_ts"]).isoformat(), wall(f["last_ts"]).isoformat()
        res.flows.append(f)
    res.top_talkers = [dict(zip(("addr", "bytes_sent", "packets_sent", "bytes_received", "flows"), r)) for r in
                       cap.query("""
        WITH s AS (SELECT saddr AS addr, sum(len) AS sent, count(*) AS pkts FROM net_observed GROUP BY 1),
             r AS (SELECT daddr AS addr, sum(len) AS recv FROM net_observed GROUP BY 1),
             f AS (SELECT addr, count(*) AS n FROM (SELECT init_addr AS addr FROM flows
                                                    UNION ALL SELECT resp_addr FROM flows) GROUP BY 1)
        SELECT s.addr, s.sent::UBIGINT, s.pkts, coalesce(r.recv, 0)::UBIGINT, coalesce(f.n, 0)
        FROM s LEFT JOIN r USING (addr) LEFT JOIN f USING (addr)
        ORDER BY s.sent DESC LIMIT ?""", [limit or 10])]
    res.bucket_s, res.bandwidth = _bandwidth(cap, names, wall)
    res.interfaces = _interfaces(cap, names)
    return res


def _bandwidth(cap: ArchiveDb, names: dict[int, str], wall) -> tuple[float, list[dict]]:
    """Bytes in and out per interface per time bucket; at most ~60 buckets of whole seconds."""
    lo, hi = cap.query("SELECT min(ts), max(ts) FROM net_packet")[0]
    if lo is None:
        return 1.0, []
    bucket_ns = max(1, -(-(hi - lo) // (60 * 10**9))) * 10**9
    egress, ingress = _directions(cap)
    rows = cap.query("""
        SELECT ifindex, (ts - ?) // ? AS b,
               coalesce(sum(len) FILTER (WHERE direction = ?), 0)::UBIGINT,
               coalesce(sum(len) FILTER (WHERE direction = ?), 0)::UBIGINT,
               count(*)
        FROM net_packet GROUP BY ALL ORDER BY b, ifindex""", [lo, bucket_ns, ingress, egress])
    return bucket_ns / 1e9, [{"time": wall(lo + b * bucket_ns).isoformat(timespec="seconds"),
                              "iface": names.get(i, str(i)), "ifindex": i, "bytes_in": bin_, "bytes_out": bout,
                              "packets": n} for i, b, bin_, bout, n in rows]


def _interfaces(cap: ArchiveDb, names: dict[int, str]) -> list[dict]:
    """Records written vs packets the hooks saw, from the kernel's per-interface counters."""
    recorded = {int(i): n for i, n in cap.query("SELECT ifindex, count(*) FROM net_packet GROUP BY 1")}
    seen = {}
    if cap.has("net_iface_stats"):
        seen = {int(i): (int(p), int(d)) for i, p, d in cap.query(
            "SELECT ifindex, sum(packets), sum(dropped) FROM net_iface_stats GROUP BY 1")}
    return [{"ifindex": i, "iface": names.get(i, str(i)), "recorded": recorded.get(i, 0),
             "seen": seen.get(i, (0, 0))[0], "dropped": seen.get(i, (0, 0))[1]}
            for i in sorted(set(recorded) | set(seen))]


class FlowsAnalyzer(ResultRendering[FlowsResult]):
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> FlowsParams:
        return FlowsParams(top=top)

    def run(self, db: ArchiveDb, params: FlowsParams) -> FlowsResult:
        return run(db, params)

    def register_views(self, db: ArchiveDb) -> None:
        register_views(db)


ANALYZER = FlowsAnalyzer()
