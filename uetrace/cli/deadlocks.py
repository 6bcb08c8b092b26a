"""`trace deadlocks`: lock-order cycles and real deadlocks of a capture with the lock tracer."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import archive_argument, json_option


@click.command("deadlocks")
@archive_argument
@json_option()
@click.option("--max-cycles", type=click.IntRange(1), default=50, show_default=True,
              help="Stop looking for lock-order cycles after this many.")
def command(archive: Path, as_json: bool, max_cycles: int):
    """Potential deadlocks (cycles in the lock order) and threads deadlocked at the end.

    Needs a capture with the lock tracer (--pid or --comm of the program).

    \b
    Examples:
      sudo trace capture -d 30s -t proc,lock --pid 1234 -o run.tar.zst
      trace deadlocks run.tar.zst
      trace deadlocks run.tar.zst --json
    """
    from uetrace.analyze.deadlock import ANALYZER, DeadlockParams
    from uetrace.cli.output import echo_json
    from uetrace.cli.reading import reading

    with reading(archive, ANALYZER.applies, "no lock records (capture with the lock tracer and --pid/--comm)") as db:
        report = ANALYZER.run(db, DeadlockParams(max_cycles=max_cycles))
    if as_json:
        echo_json(ANALYZER.to_json(report))
    else:
        click.echo(printable(ANALYZER.render(report), keep_lines=True))
