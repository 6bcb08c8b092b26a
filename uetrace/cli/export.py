"""`trace export`: write what an archive recorded in a format other tools read."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archives_argument
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options
from uetrace.errors import BadInputError


@click.command("export")
@archives_argument
@click.option("--format", "fmt", type=click.Choice(["pcapng", "parquet"]), default="pcapng", show_default=True,
              help="pcapng: the net tracer's packets (one archive). parquet: every table of every archive "
                   "as a Hive-partitioned dataset in a folder.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="File to write (pcapng: 0600 unless --mode, refused if it exists unless --force) or "
                   "folder (parquet: files --mode, an existing dataset gains the captures).")
@output_file_options
def command(archives: tuple[Path, ...], fmt: str, output: Path, force: bool, mode: int):
    """Export recorded data for other tools.

    pcapng (Wireshark, tshark, tcpdump -r): one interface block per interface,
    the captured bytes and original length of each packet, and per-interface
    statistics with the tracer's drop counts.

    parquet (Spark, Trino, DuckDB, also on object storage): every table, raw and
    derived (connections, http_exchanges, flows, stack_profile), as
    OUTPUT/<table>/capture_id=<id>/part-0.parquet with a host column and
    OUTPUT/_schema.json. Exporting into an existing dataset adds the captures
    (a capture exported again replaces its partition). See docs/dataset.md.

    \b
    Examples:
      trace export run.tar.zst --format pcapng -o run.pcapng
      trace export client.tar.zst server.tar.zst --format parquet -o dataset/
    """
    err = make_console(stderr=True)
    if fmt == "parquet":
        _export_parquet(archives, output, mode, err)
        return
    if len(archives) != 1:
        raise BadInputError("--format pcapng takes one archive")
    from uetrace.analyze.pcapng import export_file
    from uetrace.cli.reading import reading
    from uetrace.output_files import check_target

    check_target(output, force)   # before reading the archive
    with reading(archives[0]) as db:
        try:
            res = export_file(db, output, force=force, mode=mode)
        except OSError as e:
            raise BadInputError(f"cannot write {output}: {e.strerror}") from None
    err.print(f"wrote {output}: {res['packets']:,} packets on {res['interfaces']} interfaces",
              markup=False, highlight=False)


def _export_parquet(archives: tuple[Path, ...], output: Path, mode: int, err) -> None:
    from uetrace.analyze.dataset import export_dataset
    from uetrace.analyze.query_views import open_for_query
    from uetrace.cli.reading import reading

    if output.exists() and not output.is_dir():
        raise BadInputError(f"{output}: not a folder")

    def opener(path: Path):
        return reading(path, opener=lambda p, limits: open_for_query(p, all_views=True, limits=limits))

    try:
        res = export_dataset(list(archives), output, opener=opener, mode=mode)
    except OSError as e:
        raise BadInputError(f"cannot write {output}: {e.strerror}") from None
    tables = sum(1 for n in res.rows.values() if n)
    err.print(f"wrote {output}: {len(res.captures)} capture(s), {tables} tables with rows, "
              f"{sum(res.rows.values()):,} rows", markup=False, highlight=False)
