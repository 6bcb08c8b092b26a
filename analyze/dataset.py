"""A Hive-partitioned Parquet dataset of one or more archives, for engines users already run (Spark,
Trino, DuckDB, also over object storage): `DIR/<table>/capture_id=<id>/part-0.parquet`.

Every table of every archive is written, raw (sock_data, net_packet, ...) and derived (connections,
http_exchanges, flows, stack_profile with resolved frames), with a `host` column; `capture_id` comes
from the partition path, as Hive-style readers expect (a column of the same name inside the files
would clash with it in Spark). Exporting a capture again replaces its partition and keeps the others,
so a dataset grows one capture at a time.

Types are the ones every engine reads: Parquet's unsigned integers are widened to the next signed type
(Trino and Spark handle unsigned poorly), a 64-bit unsigned column becomes BIGINT when it holds times
or durations (nanoseconds fit) and DECIMAL(20,0) otherwise (kernel addresses such as sock_id use the
top bit). `_schema.json` lists tables, columns and captures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.analyze import heap
from uetrace.analyze.archive_db import ArchiveDb, segment_digest
from uetrace.analyze.capture_identity import capture_identity
from uetrace.analyze.query_views import open_for_query
from uetrace.analyze.stacks import samples
from uetrace.analyze.stacks.folded import frame_name
from uetrace.archive_format import SYMBOLS_DIR
from uetrace.errors import BadInputError
from uetrace.output_files import write_output

ROW_GROUP_ROWS = 1 << 20
# ...or this many bytes, whichever comes first: a row group of payloads is buffered whole before it is
# written, and 1 M rows of them would not fit the archive's DuckDB memory limit (~128 MB row groups are
# what engines read well).
ROW_GROUP_BYTES = "64MB"
# flows' per-packet helper view: net_packet holds the same rows.
LEFT_OUT = frozenset({"net_observed"})
WIDER = {"UTINYINT": "SMALLINT", "USMALLINT": "INTEGER", "UINTEGER": "BIGINT", "HUGEINT": "BIGINT"}
SCHEMA_FILE = "_schema.json"


@dataclass
class DatasetResult:
    out_dir: Path
    captures: list[dict] = field(default_factory=list)  # capture_id, host, archive
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written (all captures)


def export_dataset(archives: Sequence[Path], out_dir: Path,
                   opener: Callable[[Path], ArchiveDb] | None = None, mode: int = 0o600) -> DatasetResult:
    """Write each archive's tables into out_dir (files `mode`, folders 0700); returns what was written."""
    opener = opener or (lambda p: open_for_query(p, all_views=True))
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    schema = _read_schema(out_dir)
    result = DatasetResult(out_dir)
    seen: dict[str, Path] = {}
    parts: dict[str, int] = {}  # capture_id -> parts written in this run
    # capture_id -> symbols segments exported: each part of a rotated set carries those of the parts before
    carried: dict[str, set[tuple[str, str]]] = {}
    for archive in archives:
        with opener(archive) as db:
            ident = capture_identity(db.manifest)
            # Parts of one capture (a rotated set names one capture_id in each) go into its one
            # partition as part-0, part-1, ...; the same part twice is an error, not more rows.
            key = json.dumps([ident.capture_id, db.manifest.get("segments")], sort_keys=True, default=str)
            if key in seen:
                raise BadInputError(f"{archive}: the same capture as {seen[key]}")
            seen[key] = archive
            part = parts.get(ident.capture_id, 0)
            parts[ident.capture_id] = part + 1
            _add_stack_profile(db)
            # The analyses' results are DuckDB tables now: held in Python too, they would count in the
            # peak of the writes (the HTTP exchanges of a 10 M-record capture: 240 MB).
            db.cache.clear()
            heap.release()
            sources = _symbols_sources(db, carried.setdefault(ident.capture_id, set()))
            for table in _tables(db):
                source = sources.get(table, _quote(table))
                if source is None:
                    continue   # every segment of it was exported with an earlier part
                n, columns = _write_table(db, table, out_dir / table / f"capture_id={ident.capture_id}",
                                           ident.host, mode, part, source)
                result.rows[table] = result.rows.get(table, 0) + n
                schema["tables"][table] = {"columns": columns, "partitioned_by": ["capture_id"]}
            entry = {"capture_id": ident.capture_id, "host": ident.host, "archive": archive.name,
                     "start_realtime_ns": (db.info.start_ns or 0) + db.info.realtime_offset_ns
                     if db.info.start_ns is not None else None,
                     "tool_version": db.manifest.get("tool_version"), "complete": db.info.complete}
            if part:
                first = next(c for c in result.captures if c["capture_id"] == ident.capture_id)
                first["parts"] = part + 1
                first["complete"] = first["complete"] and entry["complete"]
                continue
            schema["captures"] = [c for c in schema["captures"] if c["capture_id"] != ident.capture_id] + [entry]
            result.captures.append(entry)
    write_output(out_dir / SCHEMA_FILE, json.dumps(schema, indent=1, sort_keys=True).encode(), force=True, mode=mode)
    return result


def _tables(db: ArchiveDb) -> list[str]:
    names = [r[0] for r in db.query("SELECT table_name FROM information_schema.tables ORDER BY table_name")]
    return [n for n in names if n not in LEFT_OUT and not n.startswith("_")]


def _columns(db: ArchiveDb, table: str) -> list[tuple[str, str]]:
    return db.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position", [table])


def _engine_type(column: str, dtype: str) -> str | None:
    """The type to cast to, or None to keep the column's type."""
    if dtype == "UBIGINT":
        timeish = column == "ts" or column.startswith("ts_") or column.endswith(("_ts", "_ns"))
        return "BIGINT" if timeish else "DECIMAL(20,0)"
    return WIDER.get(dtype)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _symbols_sources(db: ArchiveDb, carried: set[tuple[str, str]]) -> dict[str, str | None]:
    """For the symbols tables of a part whose segments an earlier part of its capture already gave (the
    same member, the same bytes: --rotate carries them into every part), what to read instead: its other
    segments, or None when there is none. `carried` gains this part's symbols segments."""
    out: dict[str, str | None] = {}
    if not isinstance(db.manifest.get("part"), dict):
        return out   # not a part of a rotated capture: nothing carried
    root = db.archive.root
    for table, files in db.view_files.items():
        if not files or files[0].parent.parent.name != SYMBOLS_DIR:
            continue
        keys = [(str(f.relative_to(root)), segment_digest(f)) for f in files]
        fresh = [f for f, k in zip(files, keys) if k not in carried]
        carried.update(keys)
        if len(fresh) < len(files):
            out[table] = ("read_parquet([" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in fresh)
                          + "], union_by_name = true)") if fresh else None
    return out


def _write_table(db: ArchiveDb, table: str, part_dir: Path, host: str, mode: int,
                 part: int = 0, source: str | None = None) -> tuple[int, list[dict]]:
    """`source`: what to read (SQL) when not the whole table."""
    cols = _columns(db, table)
    select = []
    for name, dtype in cols:
        cast = _engine_type(name, dtype)
        select.append(f"CAST({_quote(name)} AS {cast}) AS {_quote(name)}" if cast else _quote(name))
    if "host" not in {c for c, _ in cols}:
        select.append("CAST(? AS VARCHAR) AS host")
    part_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if part == 0:  # the capture exported again: its partition is replaced
        for old in part_dir.glob("*.parquet"):
            old.unlink()
    target = part_dir / f"part-{part}.parquet"
    tmp = part_dir / f".part-{part}.parquet.tmp"
    params = [host] if "host" not in {c for c, _ in cols} else []
    # COPY's target is a literal, never a parameter: the path is ours, escaped for a SQL string.
    path_sql = "'" + str(tmp).replace("'", "''") + "'"
    # Each thread writes its own row groups: the rows of a part are not in the archive's order (every
    # row has its times; engines promise no order anyway), and a table of payloads is written twice
    # as fast.
    db.con.execute("SET preserve_insertion_order = false")
    try:
        db.con.execute(f"COPY (SELECT {', '.join(select)} FROM {source or _quote(table)}) TO {path_sql} "
                       f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
                       f"ROW_GROUP_SIZE_BYTES '{ROW_GROUP_BYTES}')", params)
    finally:
        db.con.execute("RESET preserve_insertion_order")
    os.chmod(tmp, mode)
    os.replace(tmp, target)
    meta = pq.ParquetFile(target).metadata
    return meta.num_rows, [{"name": f.name, "type": str(f.type)} for f in meta.schema.to_arrow_schema()]


def _add_stack_profile(db: ArchiveDb) -> None:
    """stack_profile: one row per distinct (pid, comm, stack) with its weight and resolved frames, root
    first (kernel frames end in _[k], as in folded files), for engines that cannot symbolize."""
    rows: dict[str, list] = {k: [] for k in ("kind", "pid", "comm", "weight", "unit", "frames", "leaf")}
    for kind in samples.KIND_TABLES:
        if not samples.available(db, kind):
            continue
        stacks = samples.load(db, samples.SampleFilter(kind=kind))
        names = [frame_name(f) for f in stacks.frames]
        for path, w, pid, comm in zip(stacks.stacks, stacks.weights, stacks.pids, stacks.comms):
            frames = [names[i] for i in path]
            for k, v in zip(rows, (kind, pid, comm, w, stacks.unit, frames, frames[-1] if frames else "")):
                rows[k].append(v)
    if not rows["kind"]:
        return
    table = pa.table(rows, schema=pa.schema([("kind", pa.string()), ("pid", pa.int64()), ("comm", pa.string()),
                                             ("weight", pa.int64()), ("unit", pa.string()),
                                             ("frames", pa.list_(pa.string())), ("leaf", pa.string())]))
    db.con.register("_stack_profile_rows", table)
    db.con.execute("CREATE OR REPLACE TEMP TABLE stack_profile AS SELECT * FROM _stack_profile_rows")
    db.con.unregister("_stack_profile_rows")


def _read_schema(out_dir: Path) -> dict:
    path = out_dir / SCHEMA_FILE
    if not path.exists():
        if any(out_dir.iterdir()):
            raise BadInputError(f"{out_dir}: not empty and not a uetrace dataset (no {SCHEMA_FILE})")
        return {"format": "uetrace-dataset-1", "tables": {}, "captures": []}
    try:
        schema = json.loads(path.read_text())
        if schema.get("format") != "uetrace-dataset-1":
            raise ValueError("unknown format")
        return schema
    except (ValueError, OSError, AttributeError) as e:
        raise BadInputError(f"{path}: not a uetrace dataset schema ({e})") from None

