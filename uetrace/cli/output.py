"""Printing rows: as a rich table, CSV or JSON (the --format of every command that prints rows)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence

import click
from rich.console import Console

from uetrace.analyze.render import jsonable, render_table


def print_rows(columns: Sequence[str], rows: Sequence[Sequence], fmt: str = "table", title: str | None = None,
               console: Console | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps([{c: jsonable(v) for c, v in zip(columns, r)} for r in rows], default=str,
                              indent=1))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for r in rows:
            w.writerow([jsonable(v) for v in r])
    else:
        console = console or Console()
        console.print(render_table(columns, rows, title))


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=1, default=str))
