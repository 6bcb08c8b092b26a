"""`trace flows`: per 5-tuple flows of the net tracer's packets."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console


@click.command("flows")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--top", type=click.IntRange(0), default=0, show_default=True,
              help="Only the N flows with the most bytes (0: all).")
def command(archive: Path, as_json: bool, top: int):
    """Flows seen by the net tracer: packets and bytes per direction, handshake
    RTT, resets, retransmissions, close; bandwidth per interface; top talkers.

    The same table is the `flows` view of `trace query`.

    \b
    Examples:
      trace flows run.tar.zst
      trace flows run.tar.zst --json | jq '.flows[] | select(.resets > 0)'
      trace query run.tar.zst "SELECT * FROM flows WHERE retransmissions > 0"
    """
    from uetrace.analyze import flows
    from uetrace.analyze.capture import open_capture
    from uetrace.errors import BadInputError

    with open_capture(archive) as cap:
        for w in cap.warnings:
            Console(stderr=True).print(f"[yellow]warning:[/] {w}")
        if not flows.applies(cap):
            raise BadInputError(f"{archive}: no packets recorded (capture with the net tracer: -t net)")
        result = flows.run(cap, {"top": top})
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1, default=str))
    else:
        click.echo(result.to_text())
