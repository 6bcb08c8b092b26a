"""Printing tables: as a rich table, CSV or JSON (one shared option for every reading command)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

FORMATS = ("table", "csv", "json")


def format_option(f):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format.")(f)


def _jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v


def print_rows(columns: Sequence[str], rows: Sequence[Sequence], fmt: str = "table", title: str | None = None,
               console: Console | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps([{c: _jsonable(v) for c, v in zip(columns, r)} for r in rows], default=str,
                              indent=1))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for r in rows:
            w.writerow([_jsonable(v) for v in r])
    else:
        console = console or Console()
        console.print(render_table(columns, rows, title))


def render_table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(str(c), overflow="fold")
    for r in rows:
        # Cells are data, not markup: "[truncated]" or "[k]" must print as written.
        t.add_row(*("" if v is None else escape(str(_jsonable(v))) for v in r))
    return t


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
