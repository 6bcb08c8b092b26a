"""Printing rows: as a rich table, CSV or JSON (the --format of every command that prints rows)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence

import click
from rich.console import Console

from uetrace.analyze.render import jsonable, printable, render_table, report_width


def make_console(stderr: bool = False) -> Console:
    """The CLI's console: lines are never folded (a path or a host name longer than the terminal
    stays on one line, whole for grep), and off a terminal tables are as wide as report_width()."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else report_width()
    return Console(stderr=stderr, soft_wrap=True, width=width)


def print_rows(columns: Sequence[str], rows: Sequence[Sequence], fmt: str = "table", title: str | None = None,
               console: Console | None = None) -> None:
    if fmt == "json":
        click.echo(json.dumps([{c: jsonable(v) for c, v in zip(columns, r)} for r in rows], default=str,
                              indent=1))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        # CSV is data for programs, kept as is; on a terminal it is read by a person: escaped.
        cell = (lambda v: printable(str(jsonable(v))) if v is not None else "") if sys.stdout.isatty() else jsonable
        for r in rows:
            w.writerow([cell(v) for v in r])
    else:
        console = console or make_console()
        console.print(render_table(columns, rows, title))


def echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


def echo_json_list(items: Iterable[object]) -> None:
    """echo_json(list(items)), byte for byte, an item at a time: a big capture's rows never exist all
    at once as Python objects. (JSON escapes newlines within strings, so each line can be indented.)"""
    first = True
    for item in items:
        text = json.dumps(item, indent=1, default=str).replace("\n", "\n ")
        click.echo(("[\n" if first else ",\n") + " " + text, nl=False)
        first = False
    click.echo("[]" if first else "\n]")
