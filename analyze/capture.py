"""A capture opened for analysis: the extracted archive plus a DuckDB
connection with one view per table.

Every folder events/<kind>/ and symbols/<kind>/ becomes a view named <kind>
over its Parquet segments, so a new tracer's records are queryable without
any change here. Analyzers take a Capture and read through `con`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from uetrace.analyze.archive import ExtractedArchive, extract
from uetrace.archive_format import EVENTS_DIR, SYMBOLS_DIR


class Capture:
    def __init__(self, archive: ExtractedArchive):
        self.archive = archive
        self.manifest = archive.manifest
        self.warnings = archive.warnings
        self.con = duckdb.connect(":memory:")
        self.views: dict[str, Path] = {}
        for area in (EVENTS_DIR, SYMBOLS_DIR):
            base = archive.root / area
            if not base.is_dir():
                continue
            for kind_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                if not any(kind_dir.glob("*.parquet")):
                    continue
                glob = str(kind_dir / "*.parquet").replace("'", "''")
                self.con.execute(f'CREATE VIEW "{kind_dir.name}" AS SELECT * FROM '
                                 f"read_parquet('{glob}', union_by_name=true)")
                self.views[kind_dir.name] = kind_dir
        self._extra_views()

    def _extra_views(self) -> None:
        """Friendlier views over the raw tables (names as users search for them)."""
        if "sock_data" in self.views:
            self.con.execute("""
                CREATE VIEW connections AS
                SELECT sock_id, pid, any_value(fd) AS fd, any_value(laddr) AS laddr, any_value(lport) AS lport,
                       any_value(raddr) AS raddr, any_value(rport) AS rport,
                       any_value(protocol) AS protocol,
                       sum(CASE WHEN direction = 0 THEN bytes ELSE 0 END) AS bytes_sent,
                       sum(CASE WHEN direction = 1 THEN bytes ELSE 0 END) AS bytes_received,
                       count(*) AS syscalls, min(ts_enter) AS first_ts, max(ts_exit) AS last_ts
                FROM sock_data GROUP BY sock_id, pid""")

    def has(self, view: str) -> bool:
        return view in self.views

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def close(self) -> None:
        self.con.close()
        self.archive.cleanup()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_capture(path: str | Path) -> Capture:
    """Open an archive for analysis (raises ArchiveError with a one-line message)."""
    return Capture(extract(path))
