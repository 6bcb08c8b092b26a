"""`trace analyze`: run every analyzer that applies and print a report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import archive_argument, json_option
from uetrace.cli.output import make_console


@click.command("analyze")
@archive_argument
@json_option()
@click.option("--only", default=None, metavar="LIST", help="Comma-separated sections to run (e.g. summary,http).")
@click.option("--top", type=int, default=10, show_default=True, help="Rows in top-N tables.")
def command(archive: Path, as_json: bool, only: str | None, top: int):
    """Analyze a capture offline (no root needed): every section that applies.

    \b
    Examples:
      trace analyze run.tar.zst
      trace analyze run.tar.zst --json > report.json
    """
    from uetrace.analyze.sections import analyzers
    from uetrace.cli.reading import reading
    from uetrace.errors import BadInputError

    sections = analyzers()
    wanted = [s.strip() for s in only.split(",")] if only else None
    if wanted:
        unknown = set(wanted) - {a.name for a in sections}
        if unknown:
            raise BadInputError(f"unknown section {sorted(unknown)[0]!r}; choose from "
                                + ", ".join(a.name for a in sections))
    err = make_console(stderr=True)
    with reading(archive) as db:
        report = {}
        for a in sections:
            if (wanted and a.name not in wanted) or not a.applies(db):
                continue
            with err.status(f"analyzing {a.name}...") if err.is_terminal else contextlib.nullcontext():
                result = a.run(db, a.report_params(top))
            if as_json:
                report[a.name] = a.to_json(result)
            else:
                click.echo(f"== {a.name} ==")
                click.echo(printable(a.render(result), keep_lines=True))
                click.echo()
        if as_json:
            click.echo(json.dumps(report, indent=1, default=str))
