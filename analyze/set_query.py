"""One DuckDB connection over a set of captures (`trace query A B SQL`): every table is the union of
the captures' tables (`UNION ALL BY NAME`: a column one capture lacks is NULL in its rows) with
`capture_id` and `host` columns first (a table's own column of that name stays: http_exchanges.host is
the Host header, as in the Parquet dataset).

Timestamps stay each capture's own CLOCK_MONOTONIC; `wall_offset_ns` (a column of the `captures`
table) adds to them for that host's wall clock, and `clock_offset_ns`, when the caller measured it
(cross_host), is what to subtract after that to put every host on the first capture's clock.

Recorded tables are read from their Parquet segments as the single-capture views are (nothing is
loaded); derived ones (connections, http_exchanges, flows, ...) are results already in memory.
"""

from __future__ import annotations

import duckdb

from uetrace.analyze.archive import TABLE_NAME
from uetrace.analyze.capture_set import CaptureSet

SET_TABLE = "captures"  # one row per capture: id, host, archives, wall offset, window
REGISTERED = "_capture"  # prefix of the per-capture tables the unions read (not for users)
IDS = f"{REGISTERED}_ids"  # capture index -> capture_id, host
TABLES_SQL = ("SELECT table_name, string_agg(column_name || ' ' || data_type, ', ') FROM information_schema.columns "
              f"WHERE NOT starts_with(table_name, '{REGISTERED}') GROUP BY table_name ORDER BY table_name")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_set_query(cs: CaptureSet, clock_offsets: list[int] | None = None,
                   sql: str | None = None) -> duckdb.DuckDBPyConnection:
    """The union connection (the caller closes it before the set). `clock_offsets`: per capture, from
    cross_host, to fill the captures table's clock_offset_ns (NULL when not measured). `sql`: the
    statement to serve; derived tables it does not name are left out (each is copied out of its
    capture's connection), all of them when None."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    # Host names are archive text: they reach SQL as bound values in this table, never in a statement.
    con.execute(f"CREATE TABLE {IDS} (idx INTEGER, capture_id VARCHAR, host VARCHAR)")
    con.executemany(f"INSERT INTO {IDS} VALUES (?, ?, ?)",
                    [[i, c.capture_id, c.host] for i, c in enumerate(cs.captures)])
    selects: dict[str, list[str]] = {}
    for i, c in enumerate(cs.captures):
        names = [r[0] for r in c.db.query("SELECT DISTINCT table_name FROM information_schema.tables "
                                          "ORDER BY table_name")]
        for name in names:
            # Names are archive text (or an analyzer's): only table names of ours meet SQL.
            if not TABLE_NAME.fullmatch(name) or name == SET_TABLE:
                continue
            cols = {r[0] for r in c.db.query(f"DESCRIBE {_ident(name)}")}
            # A table's own column of the name stays (http_exchanges.host is the request's Host header),
            # as the Parquet dataset does it: the `captures` table names the capture's host.
            added = [f"k.{k}" for k in ("capture_id", "host") if k not in cols]
            derived = name not in c.db.view_files
            if derived and sql is not None and name not in sql:
                continue
            if not derived:
                files = ", ".join(_string(str(f)) for f in c.db.view_files[name])
                source = f"read_parquet([{files}], union_by_name=true)"
            else:
                reg = f"{REGISTERED}{i}_{name}"
                con.register(reg, c.db.con.sql(f"SELECT * FROM {_ident(name)}").to_arrow_table())
                source = _ident(reg)
            selects.setdefault(name, []).append(
                f"SELECT {', '.join([*added, 't.*'])} FROM {source} AS t "
                f"CROSS JOIN (SELECT capture_id, host FROM {IDS} WHERE idx = {int(i)}) AS k")
    for name, parts in selects.items():
        con.execute(f"CREATE VIEW {_ident(name)} AS " + " UNION ALL BY NAME ".join(parts))
    con.execute(f"CREATE TABLE {SET_TABLE} (capture_id VARCHAR, host VARCHAR, archives VARCHAR, "
                "wall_offset_ns BIGINT, clock_offset_ns BIGINT, start_wall_ns BIGINT, stop_wall_ns BIGINT)")
    for i, c in enumerate(cs.captures):
        window = c.window_wall_ns()
        con.execute(f"INSERT INTO {SET_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [c.capture_id, c.host, ", ".join(str(p) for p in c.paths), c.wall_offset_ns,
                     clock_offsets[i] if clock_offsets else None,
                     window[0] if window else None, window[1] if window else None])
    return con
