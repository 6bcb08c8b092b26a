"""`trace report`: one self-contained HTML file of the whole capture."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options
from uetrace.errors import BadInputError


@click.command("report")
@archive_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML file to write (0600 unless --mode; refused if it exists unless --force).")
@click.option("--title", default="", help="Page title (default: the archive's name).")
@output_file_options
def command(archive: Path, output: Path, title: str, force: bool, mode: int):
    """Write the capture as one self-contained HTML page to attach to a bug report.

    Summary and losses, HTTP endpoints (sortable, latency histograms), the
    slowest requests with the serving thread's samples, the CPU flame graph
    (click to zoom, search), flows and bandwidth, the lock-order graph with its
    cycles, leaks with their growth. Nothing is fetched from the network: open it
    anywhere, offline.

    \b
    Example:
      trace report run.tar.zst -o report.html
    """
    from uetrace.analyze.report_html import ReportParams, build, render_page
    from uetrace.cli.reading import reading
    from uetrace.output_files import check_target, write_output

    check_target(output, force)   # before the work
    title = title or f"uetrace: {archive.name}"
    with reading(archive) as db:
        page = render_page(build(db, ReportParams(title=title)), title)
    try:
        write_output(output, page, force=force, mode=mode)
    except OSError as e:
        raise BadInputError(f"cannot write {output}: {e.strerror}") from None
    make_console(stderr=True).print(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB)", markup=False,
                                    highlight=False)
