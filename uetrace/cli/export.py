"""`trace export`: write recorded packets in a format other tools read."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console


@click.command("export")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["pcapng"]), default="pcapng", show_default=True,
              help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write.")
def command(archive: Path, fmt: str, output: Path):
    """Export the net tracer's packets (Wireshark, tshark, tcpdump -r).

    One interface block per interface, the captured bytes and original length
    of each packet, and per-interface statistics with the tracer's drop counts.

    \b
    Example:
      trace export run.tar.zst --format pcapng -o run.pcapng
    """
    from uetrace.analyze.capture import open_capture
    from uetrace.analyze.pcapng import ExportError, export_file

    err = Console(stderr=True)
    with open_capture(archive) as cap:
        for w in cap.warnings:
            err.print(f"[yellow]warning:[/] {w}")
        try:
            res = export_file(cap, output)
        except ExportError:
            output.unlink(missing_ok=True)
            raise
    err.print(f"wrote {output}: {res['packets']:,} packets on {res['interfaces']} interfaces")
