"""`trace leaks`: heap blocks not freed by the end of a capture with the alloc tracer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from uetrace.durations import Duration


class Age(Duration):
    """A duration that may also be 0 (keep every outstanding block)."""

    def convert(self, value, param, ctx):
        return 0.0 if str(value).strip() in ("0", "0s", "0.0") else super().convert(value, param, ctx)


@click.command("leaks")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
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
    from uetrace.analyze import leaks
    from uetrace.analyze.capture import open_capture
    from uetrace.errors import BadInputError

    with open_capture(archive) as cap:
        if not leaks.applies(cap):
            raise BadInputError(f"{archive}: no alloc records (capture with the alloc tracer and --pid/--comm)")
        report = leaks.run(cap, {"min_age": min_age, "top": top})
    click.echo(json.dumps(report.to_json(), indent=1, default=str) if as_json else report.to_text())
