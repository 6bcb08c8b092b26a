"""Rendering analyzer results as text (rich tables captured to a string)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console

from uetrace.output import render_table


def text_table(title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=False, color_system=None).print(
        render_table(columns, rows, title))
    return buf.getvalue().rstrip("\n")
