"""Rendering analyzer results as text (rich tables captured to a string)."""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Sequence

from rich.console import Console

from uetrace.output import render_table


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
