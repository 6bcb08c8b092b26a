"""`trace analyze`: run every analyzer that applies and print a report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import archives_argument, json_option
from uetrace.cli.output import make_console


@click.command("analyze")
@archives_argument
@json_option()
@click.option("--only", default=None, metavar="LIST", help="Comma-separated sections to run (e.g. summary,http).")
@click.option("--top", type=int, default=10, show_default=True, help="Rows in top-N tables.")
def command(archives: tuple[Path, ...], as_json: bool, only: str | None, top: int):
    """Analyze a capture offline (no root needed): every section that applies.

    Several archives (or a quoted pattern): first a captures section (each
    capture's host, id and window, the clock offsets between hosts estimated
    from exchanges seen at both ends, the exchanges paired across hosts),
    then every section per capture, titled by host/capture. With --json:
    {"captures": {"captures", "clocks", "cross_host_pairs"}, "per_capture":
    {capture_id: {section: ...}}}. Archives of one capture (rotated parts)
    are one capture.

    \b
    Examples:
      trace analyze run.tar.zst
      trace analyze run.tar.zst --json > report.json
      trace analyze client.tar.zst server.tar.zst
      trace analyze 'run-*.tar.zst'
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
    if len(archives) > 1:
        _several(archives, sections, wanted, as_json, top)
        return
    with reading(archives[0]) as db:
        report = _sections(db, sections, wanted, as_json, top)
        if as_json:
            click.echo(json.dumps(report, indent=1, default=str))


def _sections(db, sections, wanted: list[str] | None, as_json: bool, top: int, title: str = "") -> dict:
    """Run (and, for text, print) every section that applies; the JSON report of those run."""
    from uetrace.analyze import heap
    from uetrace.analyze.sections import done_with

    err = make_console(stderr=True)
    report = {}
    chosen = [a for a in sections if not (wanted and a.name not in wanted) and a.applies(db)]
    for i, a in enumerate(chosen):
        with err.status(f"analyzing {a.name}...") if err.is_terminal else contextlib.nullcontext():
            result = a.run(db, a.report_params(top))
        if as_json:
            report[a.name] = a.to_json(result)
        else:
            click.echo(f"== {a.name}{title} ==")
            click.echo(printable(a.render(result), keep_lines=True))
            click.echo()
        del result
        unused = done_with(db.cache, {b.name for b in chosen[:i + 1]}, {b.name for b in chosen[i + 1:]})
        for key in unused:
            del db.cache[key]
        if unused:
            heap.release()
    return report


def _several(archives: tuple[Path, ...], sections, wanted: list[str] | None, as_json: bool, top: int) -> None:
    from uetrace.analyze.cross_host import cross_host
    from uetrace.cli.reading import reading_set

    with reading_set(archives) as cs:
        # First: the correlation of each capture is cached with its spans linked across hosts, so the
        # sections below report the cross-host traces.
        xh = cross_host(cs.captures)
        if not as_json:
            click.echo("== captures ==")
            click.echo(printable(xh.to_text(), keep_lines=True))
            click.echo()
        per = {c.capture_id: _sections(c.db, sections, wanted, as_json, top, f" [{printable(c.label)}]")
               for c in cs.captures}
        if as_json:
            click.echo(json.dumps({"captures": xh.to_json(), "per_capture": per}, indent=1, default=str))
