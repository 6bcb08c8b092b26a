"""`trace leaks`: heap blocks not freed by the end of a capture with the alloc tracer."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import Duration, archive_argument, json_option


class Age(Duration):
    """A duration that may also be 0 (keep every outstanding block)."""

    def convert(self, value, param, ctx):
        return 0.0 if str(value).strip() in ("0", "0s", "0.0") else super().convert(value, param, ctx)


@click.command("leaks")
@archive_argument
@json_option()
@click.option("--min-age", type=Age(), default=1.0, show_default=True,
              help="Leave out blocks younger than this at the end (500ms, 2s).")
@click.option("--top", type=click.IntRange(1), default=20, show_default=True, help="Stacks to list.")
def command(archive: Path, as_json: bool, min_age: float, top: int):
    """Allocations never freed, grouped by allocating stack: bytes, blocks, age, growth.

    Needs a capture with the alloc tracer; figures are scaled by --alloc-sample.

    \b
    Examples:
      sudo trace capture -d 60s -t proc,alloc --pid 1234 -o run.tar.zst
      trace leaks run.tar.zst --min-age 5s
    """
    from uetrace.analyze.leaks import ANALYZER, LeaksParams
    from uetrace.cli.output import echo_json
    from uetrace.cli.reading import reading

    with reading(archive, ANALYZER.applies, "no alloc records (capture with the alloc tracer and --pid/--comm)") as db:
        report = ANALYZER.run(db, LeaksParams(min_age_s=min_age, top=top))
    if as_json:
        echo_json(ANALYZER.to_json(report))
    else:
        click.echo(printable(ANALYZER.render(report), keep_lines=True))
