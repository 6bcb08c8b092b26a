"""Click pieces every reading command shares: the archive argument, --json, --format, and the
parameter types for durations as users type them."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.durations import parse_duration

FORMATS = ("table", "csv", "json")

archive_argument = click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))


def json_option(help: str = "Machine-readable report."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def format_option(f):
    """--format table|csv|json for commands that print rows (see output.print_rows)."""
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format.")(f)


class Duration(click.ParamType):
    """500ms, 10s, 2m, 1h, or plain seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
