"""An archive opened for analysis: the extracted archive plus a DuckDB connection with one view per
table, typed reads of its manifest (`info`) and enums (`enums`), and the analyzers' cache.

Every folder events/<kind>/ and symbols/<kind>/ becomes a view named <kind> over its Parquet
segments, so a new tracer's records are queryable without any change here. Analyzers take an
ArchiveDb and read through `con`.

Folder names are archive text: only names of the form [a-z0-9_]+ become views (the extractor
already skips others; checked again here because this is where they meet SQL), always quoted.
The parts of a rotated capture (capture/parts.py) each carry every symbols/ segment written before
them: a symbols segment met again in a later part (same member, same bytes) is read once.
Each segment's decoded size is estimated from its Parquet metadata (parquet_limits) before any
row is read: the total is bounded like the unpacked archive (ReadLimits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from uetrace.analyze import heap
from uetrace.analyze.archive import TABLE_NAME, ArchiveError, ExtractedArchive, ReadLimits, extract
from uetrace.analyze.enums import Enums, read_enums
from uetrace.analyze.manifest_info import ManifestInfo
from uetrace.analyze.parquet_limits import SegmentError, estimate_bytes
from uetrace.analyze.text import printable
from uetrace.archive_format import EVENTS_DIR, SYMBOLS_DIR

# What DuckDB may hold in memory per opened archive before it spills (issue 13: every offline command
# within 1 GB on a 10 M-record capture, Python's share included).
DUCKDB_MEMORY_LIMIT = "256MB"
SPILL_DIR = ".duckdb-spill"


class ArchiveDb:
    def __init__(self, archive: ExtractedArchive, more: Sequence[ExtractedArchive] = (),
                 manifest: dict | None = None):
        """`more`: further parts of the same capture (a rotated set): their segments join each table.
        `manifest`: the capture's manifest when it is not the first part's own (capture_set merges them)."""
        self.archive = archive
        self.parts = [archive, *more]
        self.manifest = manifest if manifest is not None else archive.manifest
        self.info = ManifestInfo(self.manifest)
        self.enums: Enums = read_enums(archive.root)
        self.warnings = archive.warnings
        for part in more:
            self.warnings.extend(part.warnings)
        # Results that more than one caller needs (the http analysis feeds both its section and its SQL
        # tables), keyed by who computed them: an explicit place instead of attributes set on the handle.
        self.cache: dict[str, Any] = {}
        self._process_names: dict[int, str] | None = None
        heap.give_back_freed_memory()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET enable_progress_bar = false")  # it would print to stdout mid-report
        # DuckDB's allocator keeps what a query freed for the next one: ~200 MB after the flows table of a
        # 10 M-record capture, counted in the peak of every step after it. Its background threads give
        # freed memory back.
        self.con.execute("SET allocator_background_threads = true")
        self.views: dict[str, Path] = {}
        self.view_files: dict[str, list[Path]] = {}  # table -> the Parquet segments its view reads
        area_of: dict[str, str] = {}
        self._symbols_seen: set[tuple[str, str]] | None = set() if more else None
        for part in self.parts:
            self._collect(part, area_of)
        for name, files in self.view_files.items():
            paths = ", ".join(_sql_string(str(f)) for f in files)
            self.con.execute(f"CREATE VIEW {_sql_identifier(name)} AS SELECT * FROM "
                             f"read_parquet([{paths}], union_by_name=true)")
        self._extra_views()
        # Big captures: sorts and joins (the http reconstruction sorts every payload) spill to disk instead
        # of growing without bound, inside the archive's private folder (no member may have a name that
        # starts with a dot), so removed with it. DuckDB makes the folder only if it spills.
        self.con.execute(f"SET temp_directory = {_sql_string(str(archive.root / SPILL_DIR))}")
        self.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")

    def _collect(self, archive: ExtractedArchive, area_of: dict[str, str]) -> None:
        """One part's segments into view_files, each bounded by that part's decode limit."""
        budget = archive.limits.decode_limit(archive.size)
        decoded = 0
        for area in (EVENTS_DIR, SYMBOLS_DIR):
            base = archive.root / area
            if not base.is_dir():
                continue
            for kind_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                name = kind_dir.name
                if not TABLE_NAME.fullmatch(name) or area_of.get(name, area) != area:
                    why = "not a table name uetrace uses" if not TABLE_NAME.fullmatch(name) else \
                        "both under events/ and symbols/"
                    self.warnings.append(f"skipped table {area}/{printable(name)!r}: {why}")
                    continue
                files = []
                for seg in sorted(kind_dir.glob("*.parquet")):
                    if area == SYMBOLS_DIR and self._carried_before(seg, archive.root):
                        continue
                    try:
                        decoded += estimate_bytes(seg, budget - decoded)
                    except SegmentError as e:
                        problem = f"segment {area}/{name}/{seg.name}: {e}"
                        if archive.limits.strict:
                            raise ArchiveError(f"{archive.path}: {problem} (--strict)") from None
                        self.warnings.append(f"{problem}: skipped")
                        continue
                    files.append(seg)
                if decoded > budget:
                    raise ArchiveError(f"{archive.path}: its tables decode to more than {budget:,} bytes; refusing (a "
                                       "decompression bomb? raise the limit with --max-expand or UETRACE_MAX_EXPAND)")
                if not files:
                    continue
                area_of[name] = area
                self.view_files.setdefault(name, []).extend(files)
                self.views.setdefault(name, kind_dir)

    def _carried_before(self, seg: Path, root: Path) -> bool:
        """A symbols segment an earlier part of the set already gave (carried into this one)."""
        if self._symbols_seen is None:
            return False
        key = (str(seg.relative_to(root)), segment_digest(seg))
        if key in self._symbols_seen:
            return True
        self._symbols_seen.add(key)
        return False

    def _extra_views(self) -> None:
        """Friendlier views over the raw tables (names as users search for them)."""
        if "sock_data" in self.views:
            egress = self.enums.value("sock_data", "ue_sock_direction", "DIR_EGRESS")
            ingress = self.enums.value("sock_data", "ue_sock_direction", "DIR_INGRESS")
            self.con.execute(f"""
                CREATE VIEW connections AS
                SELECT sock_id, pid, any_value(fd) AS fd, any_value(laddr) AS laddr, any_value(lport) AS lport,
                       any_value(raddr) AS raddr, any_value(rport) AS rport,
                       any_value(protocol) AS protocol,
                       sum(CASE WHEN direction = {int(egress)} THEN bytes ELSE 0 END) AS bytes_sent,
                       sum(CASE WHEN direction = {int(ingress)} THEN bytes ELSE 0 END) AS bytes_received,
                       count(*) AS syscalls, min(ts_enter) AS first_ts, max(ts_exit) AS last_ts
                FROM sock_data GROUP BY sock_id, pid""")

    def has(self, view: str) -> bool:
        return view in self.views

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def process_names(self) -> dict[int, str]:
        """pid -> comm, from the process snapshot and the proc tracer's exec and exit records (a
        short-lived process, a curl run, may be gone before any snapshot). The latest row per pid wins:
        a pid that exec'd during the capture is named after what it became, which is what did the work
        in the usual fork+exec case."""
        if self._process_names is None:
            sources = []
            if self.has("processes"):
                sources.append("SELECT pid, comm, ts FROM processes")
            if self.has("proc"):
                ops = self.enums.sql_list("proc", "ue_proc_op", ("PROC_EXEC", "PROC_EXIT"))
                sources.append(f"SELECT pid, comm, ts FROM proc WHERE op IN ({ops}) AND pid = tid")
            self._process_names = dict(self.query(
                f"SELECT pid, arg_max(comm, ts) FROM ({' UNION ALL '.join(sources)}) WHERE comm <> '' "
                "GROUP BY pid")) if sources else {}
        return self._process_names

    def close(self) -> None:
        self.con.close()
        for part in self.parts:
            part.cleanup()

    def __enter__(self) -> ArchiveDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def segment_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_archive_db(path: str | Path, limits: ReadLimits | None = None) -> ArchiveDb:
    """Open an archive for analysis (raises ArchiveError with a one-line message)."""
    archive = extract(path, limits)
    try:
        return ArchiveDb(archive)
    except BaseException:
        archive.cleanup()
        raise
