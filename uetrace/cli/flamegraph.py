"""`trace flamegraph`: a flame graph (SVG, folded stacks or speedscope JSON) from the stack samples."""

from __future__ import annotations

import json
from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.durations import parse_duration


class Seconds(click.ParamType):
    """A time from the capture start: 0, 2.5, 500ms, 1m."""

    name = "time"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command("flamegraph")
@archive_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: flamegraph.svg / .folded / .speedscope.json; '-' for stdout).")
@click.option("--format", "fmt", type=click.Choice(["svg", "folded", "speedscope"]), default="svg",
              show_default=True, help="svg: interactive flame graph; folded: flamegraph.pl/inferno input; "
              "speedscope: https://www.speedscope.app JSON.")
@click.option("-p", "--pid", "pids", type=int, multiple=True, help="Only these processes (repeatable).")
@click.option("-t", "--tid", "tids", type=int, multiple=True, help="Only these threads (repeatable).")
@click.option("-c", "--comm", "comms", multiple=True, help="Only threads with this name (repeatable).")
@click.option("--from", "start", type=Seconds(), default=None, help="Window start, from the capture start (2s).")
@click.option("--to", "end", type=Seconds(), default=None, help="Window end, from the capture start (10s).")
@click.option("--offcpu", is_flag=True, help="Off-CPU time (captured with --offcpu) instead of CPU samples.")
@click.option("--title", default=None, help="SVG title.")
def command(archive, output, fmt, pids, tids, comms, start, end, offcpu, title):
    """Draw the stack samples of a capture (offline, no root needed).

    Frames are named from the symbols stored in the archive, so the result is
    the same on any machine. Kernel frames are marked (orange in the SVG,
    `_[k]` in folded stacks), and so are Python functions of CPython 3.10 - 3.12
    processes (green, `_[py]`, named `function (file.py:line)`); stacks that
    frame pointers could not walk to the end sit under a
    [truncated user stack: module] frame.

    \b
    Examples:
      trace flamegraph run.tar.zst -o cpu.svg
      trace flamegraph run.tar.zst --pid 1234 --from 5s --to 15s -o slow.svg
      trace flamegraph run.tar.zst --format folded -o - | inferno-flamegraph > out.svg
      trace flamegraph run.tar.zst --format speedscope -o run.speedscope.json
    """
    from uetrace.analyze.stacks import samples
    from uetrace.cli.reading import reading
    from uetrace.errors import BadInputError

    kind = "offcpu" if offcpu else "cpu"
    flt = samples.SampleFilter(pids=pids, tids=tids, comms=comms, start_s=start, end_s=end, kind=kind)
    what = "off-CPU intervals (capture with --offcpu)" if offcpu else "stack samples (capture with -t stack)"
    with reading(archive, lambda db: samples.available(db, kind), f"no {what}") as db:
        stacks = samples.load(db, flt)
    if not stacks.total:
        raise BadInputError("no samples match the filters")
    text = render(stacks, fmt, title or f"{'Off-CPU' if offcpu else 'CPU'} flame graph: {archive.name}")
    output = output or Path({"svg": "flamegraph.svg", "folded": "flamegraph.folded",
                             "speedscope": "flamegraph.speedscope.json"}[fmt])
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}: {stacks.total:,} {stacks.unit}, {len(stacks.stacks):,} distinct stacks",
                   err=True)


def render(stacks, fmt: str, title: str) -> str:
    if fmt == "folded":
        from uetrace.analyze.stacks import folded
        return folded.render(folded.fold(stacks))
    if fmt == "speedscope":
        from uetrace.analyze.stacks.speedscope import to_speedscope
        return json.dumps(to_speedscope(stacks, title), separators=(",", ":")) + "\n"
    from uetrace.analyze.stacks.svg import render_svg
    return render_svg(stacks, title)
