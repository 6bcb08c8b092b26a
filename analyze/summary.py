"""Summary: per-tracer counts and losses, top processes and connections by bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from uetrace.analyze.analyzer import ResultRendering
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.manifest_info import as_count
from uetrace.analyze.render import human_bytes

NAME = "summary"
VIEWS: tuple[str, ...] = ()


@dataclass(frozen=True)
class SummaryParams:
    top: int = 10  # processes and connections listed


@dataclass
class Summary:
    duration_s: float | None
    complete: bool
    tracers: list[dict] = field(default_factory=list)
    top_processes: list[dict] = field(default_factory=list)
    top_connections: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()

    def to_text(self) -> str:
        from uetrace.analyze.render import text_table
        out = [f"recorded {self.duration_s:.2f}s" if self.duration_s is not None else "recording time unknown"]
        if not self.complete:
            out.append("warning: the capture did not finish; figures cover the segments it completed")
        out.append(text_table("tracers", ("tracer", "attached", "records", "lost", "note"),
                              [(t["tracer"], "yes" if t["attached"] else "no", f"{t['records']:,}",
                                f"{t['lost']:,}", t["note"]) for t in self.tracers]))
        if self.top_processes:
            out.append(text_table("top processes by socket bytes", ("pid", "comm", "sent", "received",
                                                                     "connections"),
                                  [(p["pid"], p["comm"], human_bytes(p["bytes_sent"]),
                                    human_bytes(p["bytes_received"]), p["connections"])
                                   for p in self.top_processes]))
        if self.top_connections:
            out.append(text_table("top connections by bytes", ("pid", "local", "remote", "sent", "received"),
                                  [(c["pid"], f"{c['laddr']}:{c['lport']}", f"{c['raddr']}:{c['rport']}",
                                    human_bytes(c["bytes_sent"]), human_bytes(c["bytes_received"]))
                                   for c in self.top_connections]))
        return "\n".join(out)


def applies(cap: ArchiveDb) -> bool:
    return True


def run(cap: ArchiveDb, params: SummaryParams = SummaryParams()) -> Summary:
    limit = params.top
    info = cap.info
    s = Summary(info.recording_seconds, info.complete, warnings=list(cap.warnings))
    for name, t in info.tracers.items():
        records = as_count(t.get("records")) or 0
        if not info.complete:
            kinds = t.get("kinds")
            # cap.has(k): only the archive's own view names reach SQL, never manifest text
            records = sum(cap.query(f'SELECT count(*) FROM "{k}"')[0][0]
                          for k in (kinds if isinstance(kinds, (dict, list)) else ())
                          if isinstance(k, str) and cap.has(k))
        s.tracers.append({"tracer": name, "attached": bool(t.get("attached")), "records": records,
                          "lost": as_count(t.get("lost")) or 0, "note": str(t.get("reason") or "")})
    if not info.complete and not s.tracers:
        for kind in cap.views:
            n = cap.query(f'SELECT count(*) FROM "{kind}"')[0][0]
            s.tracers.append({"tracer": kind, "attached": True, "records": n, "lost": 0,
                              "note": "from segments (no final manifest)"})
    if cap.has("sock_data"):
        names = cap.process_names()
        rows = cap.query("""
            SELECT pid, sum(bytes_sent), sum(bytes_received), count(*)
            FROM connections c GROUP BY pid ORDER BY sum(bytes_sent) + sum(bytes_received) DESC, pid LIMIT ?""",
                         [limit])
        s.top_processes = [{"pid": r[0], "comm": names.get(r[0], ""), "bytes_sent": int(r[1]),
                            "bytes_received": int(r[2]), "connections": r[3]} for r in rows]
        rows = cap.query("""
            SELECT pid, laddr, lport, raddr, rport, bytes_sent, bytes_received FROM connections
            ORDER BY bytes_sent + bytes_received DESC, pid, laddr, lport, raddr, rport LIMIT ?""", [limit])
        s.top_connections = [dict(zip(("pid", "laddr", "lport", "raddr", "rport", "bytes_sent",
                                       "bytes_received"), r)) for r in rows]
        for c in s.top_connections:
            c["bytes_sent"], c["bytes_received"] = int(c["bytes_sent"]), int(c["bytes_received"])
    return s


class SummaryAnalyzer(ResultRendering[Summary]):
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> SummaryParams:
        return SummaryParams(top=top)

    def run(self, db: ArchiveDb, params: SummaryParams) -> Summary:
        return run(db, params)


ANALYZER = SummaryAnalyzer()
