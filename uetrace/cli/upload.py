"""`trace upload`: send an archive to a remote endpoint over verified HTTPS."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from uetrace.cli.output import make_console


@click.command("upload")
# Named apart from the reading commands' ARCHIVE: the file is sent as it is, never opened as an archive.
@click.argument("path", metavar="ARCHIVE", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("url")
@click.option("--ca-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust this CA certificate (PEM) instead of the system's, e.g. a private CA.")
@click.option("--insecure", is_flag=True, help="Allow a plain http:// URL (the archive travels unencrypted).")
@click.option("--attempts", type=click.IntRange(1, 20), default=4, show_default=True,
              help="Attempts before giving up (network errors, 408/429/5xx); waits double from 1 s.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(path: Path, url: str, ca_cert: Path | None, insecure: bool, attempts: int, quiet: bool):
    """Send ARCHIVE to URL with an HTTPS PUT, then check what arrived.

    The server's certificate is always verified. A presigned S3 or GCS URL is
    such a PUT. After the upload the file is read back (length and sha256); a
    server that refuses reading back is checked by its ETag when that is an MD5.
    The URL's query (a presigned signature) is never printed.

    Exit codes: 0 uploaded and checked (or the server offered no check, said on
    stderr); 1 upload failed after its attempts, or what arrived differs; 2 bad
    URL, file or option.

    \b
    Examples:
      trace upload run.tar.zst https://files.example.com/bugs/1234/run.tar.zst
      trace upload run.tar.zst "$PRESIGNED_URL" --ca-cert corp-ca.pem
    """
    from uetrace.upload import UploadOptions, upload

    err = make_console(stderr=True)
    opts = UploadOptions(ca_cert=ca_cert, insecure=insecure, attempts=attempts)
    show = not quiet and err.is_terminal
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=err, disable=not show, transient=True) as progress:
        task = progress.add_task("upload", total=None)
        res = upload(path, url, opts, on_progress=lambda sent, total: progress.update(task, completed=sent,
                                                                                        total=total))
    how = {"read-back": "read back and matched", "etag": "the server's ETag matched"}.get(res.verified_by)
    line = f"uploaded {path} to {res.url}: {res.bytes:,} bytes, sha256 {res.sha256}"
    err.print(line + (f", {how}" if how else ""), markup=False, highlight=False)
    if not how:
        err.print("warning: the server allows no check of what arrived (no read-back, no MD5 ETag)",
                  markup=False, highlight=False)
