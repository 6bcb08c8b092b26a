"""Rendering analyzer results as text: rich tables, captured to a string. No click here: the library
renders, the CLI prints."""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from uetrace.analyze.text import printable
from uetrace.units import human_bytes

__all__ = ["human_bytes", "jsonable", "printable", "render_table", "report_width", "safe_cell", "text_table"]


def jsonable(v):
    """A cell as JSON and CSV carry it: bytes as hex."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return v


def render_table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> Table:
    t = Table(title=escape(printable(title)) if title else None, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(safe_cell(c), overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else safe_cell(jsonable(v)) for v in r))
    return t


def safe_cell(v: object) -> str:
    """A table cell from archive data: not markup ("[truncated]" or "[link=...]" print as written),
    control characters escaped."""
    return escape(printable(str(v)))


def report_width() -> int:
    """The terminal's width; on a pipe or file, wide enough that addresses and
    names are never folded across lines (grep and tests read them whole)."""
    if sys.stdout.isatty():
        return max(80, shutil.get_terminal_size().columns)
    return 240


def text_table(title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=report_width(), force_terminal=False, color_system=None).print(
        render_table(columns, rows, title))
    return buf.getvalue().rstrip("\n")
