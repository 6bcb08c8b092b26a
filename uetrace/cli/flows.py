"""`trace flows`: per 5-tuple flows of the net tracer's packets."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.analyze.text import printable
from uetrace.cli.options import archives_argument, json_option


@click.command("flows")
@archives_argument
@json_option("Machine-readable output.")
@click.option("--top", type=click.IntRange(0), default=0, show_default=True,
              help="Only the N flows with the most bytes (0: all).")
def command(archives: tuple[Path, ...], as_json: bool, top: int):
    """Flows seen by the net tracer: packets and bytes per direction, handshake
    RTT, resets, retransmissions, close; bandwidth per interface; top talkers.

    The same table is the `flows` view of `trace query`.

    Several archives (or a quoted pattern): each capture's flows, titled by
    host/capture; with --json one report whose every row has capture_id and
    host (--top applies per capture).

    \b
    Examples:
      trace flows run.tar.zst
      trace flows run.tar.zst --json | jq '.flows[] | select(.resets > 0)'
      trace query run.tar.zst "SELECT * FROM flows WHERE retransmissions > 0"
    """
    from uetrace.analyze.flows import ANALYZER, FlowsParams
    from uetrace.cli.output import echo_json
    from uetrace.cli.reading import reading

    missing = "no packets recorded (capture with the net tracer: -t net)"
    if len(archives) > 1:
        from uetrace.analyze.flows import combine
        from uetrace.cli.reading import reading_set
        with reading_set(archives, applies=ANALYZER.applies, missing=missing) as cs:
            results = [(c, ANALYZER.run(c.db, FlowsParams(top=top))) for c in cs.captures if ANALYZER.applies(c.db)]
        if as_json:
            echo_json(ANALYZER.to_json(combine([(c.capture_id, c.host, r) for c, r in results])))
            return
        for c, r in results:
            click.echo(f"== {printable(c.label)} ==")
            click.echo(printable(ANALYZER.render(r), keep_lines=True))
            click.echo()
        return
    with reading(archives[0], ANALYZER.applies, missing) as db:
        result = ANALYZER.run(db, FlowsParams(top=top))
    if as_json:
        echo_json(ANALYZER.to_json(result))
    else:
        click.echo(printable(ANALYZER.render(result), keep_lines=True))
