"""Printing rows: as a rich table, CSV or JSON (the --format of every command that prints rows)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

import click
from rich.console import Console

from uetrace.analyze.render import jsonable, printable, render_table, report_width

if TYPE_CHECKING:
    import pyarrow as pa


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


def echo_json_tables(tables: Iterable[pa.Table | pa.RecordBatch]) -> None:
    """echo_json of the list of the tables' rows as dicts (a key per column, in the tables' column
    order), byte for byte, formatted a column at a time (analyze/json_text.py: ~15 times faster than a
    dict per row) and written as it is made: a big capture's rows never exist all at once as Python
    objects, nor their whole text."""
    from uetrace.analyze.json_text import json_item_blocks, text_bytes
    out = click.get_text_stream("stdout")
    first = True
    for table in tables:
        for block in json_item_blocks(table, ",\n "):  # rows after the first: after a comma
            raw = text_bytes(block)
            if not len(raw):
                continue
            if first:
                out.write("[")
                raw = raw[1:]
                first = False
            _write_ascii(out, raw)
    out.write("[]\n" if first else "\n]\n")
    out.flush()


def _write_ascii(out: TextIO, raw: memoryview) -> None:
    """ASCII text (JSON with ensure_ascii) as it is to a text stream's bytes, not decoded and encoded
    again (half the time of making it), when the stream's encoding writes ASCII as ASCII."""
    buffer = getattr(out, "buffer", None)
    encoding = getattr(out, "encoding", None) or "ascii"
    if buffer is not None and "[".encode(encoding) == b"[":
        out.flush()
        buffer.write(raw)
    else:
        out.write(bytes(raw).decode("ascii"))
