"""`trace request`: one request's story across tracers."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument, json_option
from uetrace.cli.output import echo_json


@click.command("request")
@archive_argument
@click.argument("request_id", metavar="ID")
@json_option("The story as JSON: spans, evidence, timeline events, stacks.")
def command(archive: Path, request_id: str, as_json: bool):
    """Tell one request's story (offline, no root needed): the thread that served it and its time
    window, what happened on that thread meanwhile (socket syscalls, lock waits, allocations,
    off-CPU stretches, outgoing calls, each a child span), the functions on-CPU and where it blocked.

    ID is the request id of `trace requests --json` (or one of its span ids). The more tracers the
    capture ran (-t +lock,+alloc, --offcpu), the fuller the story.

    \b
    Examples:
      trace request run.tar.zst 42
      trace request run.tar.zst 42 --json
    """
    from uetrace.analyze import correlate
    from uetrace.analyze.correlate.selection import find_request
    from uetrace.analyze.correlate.story import build_story
    from uetrace.cli.reading import reading

    missing = "no socket records (capture with the sock tracer: -t sock,proc)"
    with reading(archive, correlate.applies, missing) as db:
        result = correlate.correlate(db)
        story = build_story(db, result, find_request(result, request_id))
    if as_json:
        echo_json(story.to_json())
    else:
        click.echo(story.to_text())
