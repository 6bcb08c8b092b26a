"""`trace export`: write recorded packets in a format other tools read."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console


@click.command("export")
@archive_argument
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
    from uetrace.analyze.pcapng import ExportError, export_file
    from uetrace.cli.reading import reading
    from uetrace.errors import BadInputError

    err = make_console(stderr=True)
    with reading(archive) as db:
        try:
            res = export_file(db, output)
        except ExportError:
            output.unlink(missing_ok=True)
            raise
        except OSError as e:
            raise BadInputError(f"cannot write {output}: {e.strerror}") from None
    err.print(f"wrote {output}: {res['packets']:,} packets on {res['interfaces']} interfaces")
