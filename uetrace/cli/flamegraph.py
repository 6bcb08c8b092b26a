"""`trace flamegraph`: a flame graph (SVG, folded stacks or speedscope JSON) from the stack samples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from uetrace.cli.options import archives_argument
from uetrace.cli.output_options import output_file_options
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
@archives_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write, 0600 unless --mode (default: flamegraph.svg / .folded / "
              ".speedscope.json; '-' for stdout).")
@click.option("--format", "fmt", type=click.Choice(["svg", "folded", "speedscope"]), default="svg",
              show_default=True, help="svg: interactive flame graph; folded: flamegraph.pl/inferno input; "
              "speedscope: https://www.speedscope.app JSON.")
@click.option("-p", "--pid", "pids", type=int, multiple=True, help="Only these processes (repeatable).")
@click.option("-t", "--tid", "tids", type=int, multiple=True, help="Only these threads (repeatable).")
@click.option("-c", "--comm", "comms", multiple=True, help="Only threads with this name (repeatable).")
@click.option("--from", "start", type=Seconds(), default=None, help="Window start, from the capture start (2s).")
@click.option("--to", "end", type=Seconds(), default=None, help="Window end, from the capture start (10s).")
@click.option("--offcpu", is_flag=True, help="Off-CPU time (captured with --offcpu) instead of CPU samples.")
@click.option("--request", "request_ids", multiple=True, metavar="ID",
              help="Only the samples of the thread that served this request, inside its window (repeatable; "
              "ids from `trace requests --json`).")
@click.option("--endpoint", "endpoints", multiple=True, metavar="'METHOD /path'",
              help="Only samples inside the windows of this endpoint's requests (repeatable).")
@click.option("--diff", "diff", default=None, metavar="OTHER",
              help="Differential flame graph (svg, folded): OTHER is an endpoint of this capture or another "
              "archive drawn with the same filters; frames coloured by the change of their share.")
@click.option("--title", default=None, help="SVG title.")
@output_file_options
def command(archives, output, fmt, pids, tids, comms, start, end, offcpu, title, request_ids, endpoints, diff,
            force, mode):
    """Draw the stack samples of a capture (offline, no root needed).

    Several archives (or a quoted pattern): the samples of all captures in
    one graph, under a [host NAME] frame per host when there are several
    hosts; --from/--to count from each capture's own start; --request and
    --diff take one archive.

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
      trace flamegraph run.tar.zst --request 42 -o slow-request.svg
      trace flamegraph run.tar.zst --endpoint "GET /search" --diff "GET /health" -o diff.svg
      trace flamegraph new.tar.zst --endpoint "GET /search" --diff old.tar.zst -o regression.svg
      trace flamegraph front.tar.zst back.tar.zst -o both-hosts.svg
    """
    from uetrace.analyze.stacks import samples
    from uetrace.analyze.text import printable
    from uetrace.errors import BadInputError
    from uetrace.output_files import check_target, write_output

    output = output or Path({"svg": "flamegraph.svg", "folded": "flamegraph.folded",
                             "speedscope": "flamegraph.speedscope.json"}[fmt])
    if str(output) != "-":
        check_target(output, force)   # before the work
    kind = "offcpu" if offcpu else "cpu"
    flt = samples.SampleFilter(pids=pids, tids=tids, comms=comms, start_s=start, end_s=end, kind=kind)
    what = "off-CPU intervals (capture with --offcpu)" if offcpu else "stack samples (capture with -t stack)"
    if diff is not None and fmt == "speedscope":
        raise BadInputError("--diff draws svg or folded output")
    other_archive = Path(diff) if diff is not None and Path(diff).is_file() else None
    if diff is not None and other_archive is None and diff.endswith((".zst", ".tar")):
        raise BadInputError(f"--diff {diff}: no such archive")
    before = None
    if len(archives) > 1:
        if request_ids or diff is not None:
            raise BadInputError("--request and --diff take one archive (request ids are per capture)")
        stacks, name = _several(archives, flt, endpoints, kind, what), f"{len(archives)} archives"
    else:
        stacks, before = _one(archives[0], flt, request_ids, endpoints, diff, other_archive, kind, what)
        name = archives[0].name
    if not stacks.total:
        raise BadInputError("no samples match the filters")
    label = "Off-CPU" if offcpu else "CPU"
    if before is not None:
        from uetrace.analyze.stacks import diff as stack_diff
        if fmt == "folded":
            text = stack_diff.render_diff_folded(stacks, before)
        else:
            text = stack_diff.render_diff_svg(stacks, before, title or f"{label} differential flame graph: "
                                              f"{name} against {diff}")
    else:
        text = render(stacks, fmt, title or f"{label} flame graph: {name}")
    if str(output) == "-":
        click.echo(printable(text, keep_lines=True) if sys.stdout.isatty() else text, nl=False)
    else:
        try:
            write_output(output, text, force=force, mode=mode)
        except OSError as e:
            raise BadInputError(f"cannot write {output}: {e.strerror}") from None
        click.echo(f"wrote {output}: {stacks.total:,} {stacks.unit}, {len(stacks.stacks):,} distinct stacks",
                   err=True)


def _one(archive: Path, flt, request_ids, endpoints, diff, other_archive, kind: str, what: str):
    """(stacks, the --diff baseline or None) of one archive, as before several were taken."""
    from uetrace.analyze.stacks import samples
    from uetrace.cli.reading import reading

    before = None
    with reading(archive, lambda db: samples.available(db, kind), f"no {what}") as db:
        stacks = samples.load(db, _selected(db, flt, request_ids, endpoints))
        if diff is not None and other_archive is None:
            before = samples.load(db, _selected(db, flt, (), (diff,)))
    if other_archive is not None:
        with reading(other_archive, lambda db: samples.available(db, kind), f"no {what}") as db:
            before = samples.load(db, _selected(db, flt, request_ids, endpoints))
    return stacks, before


def _several(archives: tuple[Path, ...], flt, endpoints, kind: str, what: str):
    """The samples of every capture that has them, combined (a host frame at the root per host)."""
    from uetrace.analyze.stacks import samples
    from uetrace.analyze.stacks.combine import combine
    from uetrace.cli.reading import reading_set

    with reading_set(archives, applies=lambda db: samples.available(db, kind), missing=f"no {what}") as cs:
        return combine([(c.host, samples.load(c.db, _selected(c.db, flt, (), endpoints)))
                        for c in cs.captures if samples.available(c.db, kind)])


def _selected(db, flt, request_ids, endpoints):
    """flt narrowed to the serving windows of the chosen requests (flt itself when none is chosen)."""
    if not request_ids and not endpoints:
        return flt
    from dataclasses import replace

    from uetrace.analyze import correlate
    from uetrace.analyze.correlate.selection import select, serving_windows
    from uetrace.errors import BadInputError
    if not correlate.applies(db):
        raise BadInputError("--request/--endpoint need socket records (capture with the sock tracer)")
    return replace(flt, windows=serving_windows(select(correlate.correlate(db), request_ids, endpoints)))


def render(stacks, fmt: str, title: str) -> str:
    if fmt == "folded":
        from uetrace.analyze.stacks import folded
        return folded.render(folded.fold(stacks))
    if fmt == "speedscope":
        from uetrace.analyze.stacks.speedscope import to_speedscope
        return json.dumps(to_speedscope(stacks, title), separators=(",", ":")) + "\n"
    from uetrace.analyze.stacks.svg import render_svg
    return render_svg(stacks, title)
