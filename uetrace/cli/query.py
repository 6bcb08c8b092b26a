"""`trace query`: DuckDB SQL over the archive's tables (over several captures' tables at once)."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archives_and_statement_argument, format_option, split_statement
from uetrace.cli.output import print_rows


@click.command("query")
@archives_and_statement_argument
@click.option("--tables", is_flag=True, help="List the tables (views) and their columns.")
@format_option
def command(archives: tuple[str, ...], tables: bool, fmt: str):
    """Run DuckDB SQL over the recorded tables.

    Every record kind is a view (sock_data, sock_conn, proc, processes,
    mappings, ...) plus derived ones (connections, ...).

    Several archives (or a quoted pattern, 'run-*.tar.zst'): every table is
    the union of the captures' tables with `capture_id` and `host` columns
    first (http_exchanges keeps its own `host`, the Host header: join
    `captures`); archives of one capture (rotated parts) are one capture. Timestamps
    stay each capture's own clock (CLOCK_MONOTONIC ns): the `captures` table
    gives per capture `wall_offset_ns` (add it for that host's wall time) and,
    when the statement names it, `clock_offset_ns` (the host's clock minus the
    first capture's, estimated from exchanges seen at both ends; subtract it
    after adding wall_offset_ns to align hosts; see `trace requests --json`).
    The SQL is the last argument.

    \b
    Examples:
      trace query run.tar.zst --tables
      trace query run.tar.zst "SELECT pid, sum(bytes) FROM sock_data GROUP BY pid"
      trace query run.tar.zst "SELECT * FROM connections" --format csv
      trace query a.tar.zst b.tar.zst "SELECT capture_id, host, count(*) FROM sock_data GROUP BY ALL"
      trace query 'run-*.tar.zst' "SELECT count(*) FROM sock_data"
    """
    from uetrace.errors import BadInputError

    paths, sql = split_statement(archives)
    if not sql and not tables:
        raise BadInputError("give a SQL statement, or --tables to list the tables")
    if len(paths) == 1:
        _one(paths[0], sql, tables, fmt)
    else:
        _several(paths, sql, tables, fmt)


_TABLES_SQL = ("SELECT table_name, string_agg(column_name || ' ' || data_type, ', ') "
               "FROM information_schema.columns GROUP BY table_name ORDER BY table_name")


def _run(con, sql: str, fmt: str) -> None:
    import duckdb

    from uetrace.errors import BadInputError
    try:
        cur = con.execute(sql)
        rows = cur.fetchall()
    except duckdb.Error as e:
        raise BadInputError(f"query failed: {str(e).splitlines()[0]}") from None
    cols = [d[0] for d in cur.description] if cur.description else []
    print_rows(cols, rows, fmt)


def _one(archive: Path, sql: str | None, tables: bool, fmt: str) -> None:
    from uetrace.analyze.query_views import open_for_query
    from uetrace.cli.reading import reading

    with reading(archive, opener=lambda path, limits: open_for_query(path, sql, tables, limits)) as cap:
        if tables:
            print_rows(("table", "columns"), cap.query(_TABLES_SQL), fmt)
            return
        _run(cap.con, sql or "", fmt)


def _several(archives: tuple[Path, ...], sql: str | None, tables: bool, fmt: str) -> None:
    from uetrace.analyze.query_views import add_query_views
    from uetrace.analyze.set_query import TABLES_SQL, open_set_query
    from uetrace.cli.reading import reading_set

    with reading_set(archives, prepare=lambda db: add_query_views(db, sql, tables)) as cs:
        offsets = None
        if sql and "clock_offset_ns" in sql:  # pairing costs the http analysis of every capture
            from uetrace.analyze.cross_host import cross_host
            offsets = [c.offset_ns for c in cross_host(cs.captures).clocks]
        con = open_set_query(cs, offsets, None if tables else sql)
        try:
            if tables:
                print_rows(("table", "columns"), con.execute(TABLES_SQL).fetchall(), fmt)
                return
            _run(con, sql or "", fmt)
        finally:
            con.close()
