"""`trace redact`: mask secrets in a copy of an archive."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options


@click.command("redact")
@archive_argument
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The redacted archive to write (refused if it exists, unless --force).")
@output_file_options
@click.option("--redact-header", "redact_headers", multiple=True, metavar="NAME",
              help="Also mask the values of this HTTP header (repeatable).")
@click.option("--keep-header", "keep_headers", multiple=True, metavar="NAME",
              help="Do not mask this HTTP header, though it is on the deny list (repeatable).")
def command(archive: Path, output: Path, force: bool, mode: int, redact_headers, keep_headers):
    """Write a copy of an archive with secrets masked, as a capture does by default: HTTP header
    values such as Authorization and Cookie, URL query values and userinfo (in socket, TLS and
    packet payloads, HTTP/2 literals included), and secret-looking command-line arguments. Masking
    keeps every length, so offsets, sequence numbers and the pcapng export stay valid.

    \b
    Example:
      trace redact raw.tar.zst -o shareable.tar.zst
    """
    from uetrace.analyze.text import printable
    from uetrace.cli.options import read_limits
    from uetrace.cli.reading import print_warnings
    from uetrace.redaction.archive_copy import redact_archive
    from uetrace.redaction.policy import RedactionPolicy

    if output.resolve() == archive.resolve():
        from uetrace.errors import BadInputError
        raise BadInputError(f"-o {output}: the output must not be the archive read")
    res = redact_archive(archive, output, RedactionPolicy.make(redact_headers, keep_headers), limits=read_limits(),
                         force=force, mode=mode, on_warnings=print_warnings)
    masked = ", ".join(f"{n:,} in {k}" for k, n in res.masked.items()) or "nothing to mask"
    make_console(stderr=True).print(printable(f"wrote {res.output}: {res.rewritten} segments redacted "
                                              f"({masked}), {res.copied} members copied"),
                                    markup=False, highlight=False)
