"""`trace flows`: per 5-tuple flows of the net tracer's packets."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import archive_argument, json_option


@click.command("flows")
@archive_argument
@json_option("Machine-readable output.")
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
    from uetrace.analyze.flows import ANALYZER, FlowsParams
    from uetrace.cli.output import echo_json
    from uetrace.cli.reading import reading

    with reading(archive, ANALYZER.applies, "no packets recorded (capture with the net tracer: -t net)") as db:
        result = ANALYZER.run(db, FlowsParams(top=top))
    if as_json:
        echo_json(ANALYZER.to_json(result))
    else:
        click.echo(printable(ANALYZER.render(result), keep_lines=True))
