"""`trace analyze`: run every analyzer that applies and print a report."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console


@click.command("analyze")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--only", default=None, metavar="LIST", help="Comma-separated sections to run (e.g. summary,http).")
@click.option("--top", type=int, default=10, show_default=True, help="Rows in top-N tables.")
def command(archive: Path, as_json: bool, only: str | None, top: int):
    """Analyze a capture offline (no root needed): every section that applies.

    \b
    Examples:
      trace analyze run.tar.zst
      trace analyze run.tar.zst --json > report.json
    """
    from uetrace.analyze.capture import open_capture
    from uetrace.analyze.registry import analyzers
    from uetrace.errors import BadInputError

    mods = analyzers()
    wanted = [s.strip() for s in only.split(",")] if only else None
    if wanted:
        unknown = set(wanted) - {m.NAME for m in mods}
        if unknown:
            raise BadInputError(f"unknown section {sorted(unknown)[0]!r}; choose from "
                                + ", ".join(m.NAME for m in mods))
    err = Console(stderr=True)
    with open_capture(archive) as cap:
        for w in cap.warnings:
            err.print(f"[yellow]warning:[/] {w}")
        report = {}
        for mod in mods:
            if (wanted and mod.NAME not in wanted) or not mod.applies(cap):
                continue
            with err.status(f"analyzing {mod.NAME}...") if err.is_terminal else _null():
                result = mod.run(cap, {"top": top})
            if as_json:
                report[mod.NAME] = result.to_json()
            else:
                click.echo(f"== {mod.NAME} ==")
                click.echo(result.to_text())
                click.echo()
        if as_json:
            click.echo(json.dumps(report, indent=1, default=str))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
