"""`trace report`: one self-contained HTML file of the whole capture."""

from __future__ import annotations

import os
from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console
from uetrace.errors import UetraceError


@click.command("report")
@archive_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML file to write (created 0600: captures may hold secrets).")
@click.option("--title", default="", help="Page title (default: the archive's name).")
def command(archive: Path, output: Path, title: str):
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

    title = title or f"uetrace: {archive.name}"
    with reading(archive) as db:
        page = render_page(build(db, ReportParams(title=title)), title)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise UetraceError(f"write {output}: {e.strerror}") from None
    make_console(stderr=True).print(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB)", markup=False,
                                    highlight=False)
