"""`trace deadlocks`: lock-order cycles and real deadlocks of a capture with the lock tracer."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("deadlocks")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
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
    from uetrace.analyze import deadlock
    from uetrace.analyze.capture import open_capture
    from uetrace.errors import BadInputError

    with open_capture(archive) as cap:
        if not deadlock.applies(cap):
            raise BadInputError(f"{archive}: no lock records (capture with the lock tracer and --pid/--comm)")
        report = deadlock.run(cap, {"max_cycles": max_cycles})
    click.echo(json.dumps(report.to_json(), indent=1, default=str) if as_json else report.to_text())
