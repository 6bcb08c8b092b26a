"""`trace query`: DuckDB SQL over the archive's tables."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument, format_option
from uetrace.cli.output import print_rows


@click.command("query")
@archive_argument
@click.argument("sql", required=False)
@click.option("--tables", is_flag=True, help="List the tables (views) and their columns.")
@format_option
def command(archive: Path, sql: str | None, tables: bool, fmt: str):
    """Run DuckDB SQL over the recorded tables.

    Every record kind is a view (sock_data, sock_conn, proc, processes,
    mappings, ...) plus derived ones (connections, ...).

    \b
    Examples:
      trace query run.tar.zst --tables
      trace query run.tar.zst "SELECT pid, sum(bytes) FROM sock_data GROUP BY pid"
      trace query run.tar.zst "SELECT * FROM connections" --format csv
    """
    import duckdb

    from uetrace.analyze.query_views import open_for_query
    from uetrace.cli.reading import reading
    from uetrace.errors import BadInputError

    if not sql and not tables:
        raise BadInputError("give a SQL statement, or --tables to list the tables")
    with reading(archive, opener=lambda path, limits: open_for_query(path, sql, tables, limits)) as cap:
        if tables:
            rows = cap.query("SELECT table_name, string_agg(column_name || ' ' || data_type, ', ') "
                             "FROM information_schema.columns GROUP BY table_name ORDER BY table_name")
            print_rows(("table", "columns"), rows, fmt)
            return
        try:
            cur = cap.con.execute(sql)
            rows = cur.fetchall()
        except duckdb.Error as e:
            raise BadInputError(f"query failed: {str(e).splitlines()[0]}") from None
        cols = [d[0] for d in cur.description] if cur.description else []
        print_rows(cols, rows, fmt)
