"""`trace export`: write recorded packets in a format other tools read."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options


@click.command("export")
@archive_argument
@click.option("--format", "fmt", type=click.Choice(["pcapng"]), default="pcapng", show_default=True,
              help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write (0600 unless --mode; refused if it exists unless --force).")
@output_file_options
def command(archive: Path, fmt: str, output: Path, force: bool, mode: int):
    """Export the net tracer's packets (Wireshark, tshark, tcpdump -r).

    One interface block per interface, the captured bytes and original length
    of each packet, and per-interface statistics with the tracer's drop counts.

    \b
    Example:
      trace export run.tar.zst --format pcapng -o run.pcapng
    """
    from uetrace.analyze.pcapng import export_file
    from uetrace.cli.reading import reading
    from uetrace.output_files import check_target

    err = make_console(stderr=True)
    check_target(output, force)   # before reading the archive
    with reading(archive) as db:
        res = export_file(db, output, force=force, mode=mode)
    err.print(f"wrote {output}: {res['packets']:,} packets on {res['interfaces']} interfaces")
