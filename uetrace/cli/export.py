"""`trace export`: write what was recorded in a format other tools read (packets, traces, datasets)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from uetrace.cli.options import archives_argument
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options
from uetrace.errors import BadInputError

FORMATS = ("pcapng", "otlp", "perfetto", "parquet")


@click.command("export")
@archives_argument
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="pcapng", show_default=True,
              help="pcapng: the net tracer's packets. otlp: the requests' spans as OTLP/JSON traces. perfetto: "
                   "a Perfetto trace. parquet: every table of every archive as a Hive-partitioned dataset.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="File to write (0600 unless --mode, refused if it exists unless --force) or, for parquet, "
                   "a folder (files --mode; an existing dataset gains the captures).")
@output_file_options
def command(archives: tuple[Path, ...], fmt: str, output: Path, force: bool, mode: int):
    """Export recorded data for other tools.

    \b
    pcapng    Wireshark, tshark, tcpdump -r: one interface block per interface,
              captured bytes and original length of each packet, per-interface
              statistics with the tracer's drop counts.
    otlp      OpenTelemetry Collector, Jaeger: an ExportTraceServiceRequest in
              OTLP/JSON, one span per exchange and captured end, linked as
              `trace request` shows them. Several archives: the captures'
              spans together, linked across hosts (server span under the
              client span), times on the first capture's clock.
    perfetto  ui.perfetto.dev: process and thread tracks, a slice per request
              and side with flow arrows client -> server, lock waits, CPU
              samples with their callstacks, bandwidth and heap counters.
    parquet   Spark, Trino, DuckDB (also on object storage): every table, raw and
              derived (connections, http_exchanges, flows, stack_profile), as
              OUTPUT/<table>/capture_id=<id>/part-0.parquet with a host column,
              and OUTPUT/_schema.json (see docs/dataset.md).

    \b
    Examples:
      trace export run.tar.zst --format pcapng -o run.pcapng
      trace export run.tar.zst --format otlp -o spans.json
      trace export run.tar.zst --format perfetto -o run.pftrace
      trace export client.tar.zst server.tar.zst --format parquet -o dataset/
      trace export client.tar.zst server.tar.zst --format otlp -o traces.json
    """
    if fmt == "parquet":
        _export_parquet(archives, output, mode)
        return
    if fmt == "otlp" and len(archives) > 1:
        from uetrace.output_files import check_target
        check_target(output, force)
        line = _export_otlp_set(archives, output, force, mode)
        make_console(stderr=True).print(f"wrote {output}: {line}", markup=False, highlight=False)
        return
    if len(archives) != 1:
        raise BadInputError(f"--format {fmt} takes one archive")
    from uetrace.output_files import check_target

    check_target(output, force)   # before reading the archive
    try:
        line = {"pcapng": _export_pcapng, "otlp": _export_otlp, "perfetto": _export_perfetto}[fmt](
            archives[0], output, force, mode)
    except OSError as e:
        raise BadInputError(f"cannot write {output}: {e.strerror}") from None
    make_console(stderr=True).print(f"wrote {output}: {line}", markup=False, highlight=False)


def _export_pcapng(archive: Path, output: Path, force: bool, mode: int) -> str:
    from uetrace.analyze.pcapng import export_file
    from uetrace.cli.reading import reading

    with reading(archive) as db:
        res = export_file(db, output, force=force, mode=mode)
    return f"{res['packets']:,} packets on {res['interfaces']} interfaces"


def _export_otlp(archive: Path, output: Path, force: bool, mode: int) -> str:
    from uetrace.analyze import correlate
    from uetrace.analyze.correlate.otlp import to_otlp
    from uetrace.cli.reading import reading
    from uetrace.output_files import write_output

    missing = "no socket records (capture with the sock tracer: -t sock,proc)"
    with reading(archive, correlate.applies, missing) as db:
        result = correlate.correlate(db)
        doc = to_otlp(db, result)
    write_output(output, json.dumps(doc, separators=(",", ":")) + "\n", force=force, mode=mode)
    spans = sum(len(s["spans"]) for rs in doc["resourceSpans"] for s in rs["scopeSpans"])
    return f"{spans:,} spans in {result.trace_count():,} traces"


def _export_otlp_set(archives: tuple[Path, ...], output: Path, force: bool, mode: int) -> str:
    """Several captures' spans in one request: linked across hosts, times on the first capture's clock."""
    from uetrace.analyze import correlate
    from uetrace.analyze.correlate.otlp import to_otlp
    from uetrace.analyze.cross_host import cross_host
    from uetrace.cli.reading import reading_set
    from uetrace.cli.requests_set import print_clock_notes
    from uetrace.output_files import write_output

    missing = "no socket records (capture with the sock tracer: -t sock,proc)"
    with reading_set(archives, applies=correlate.applies, missing=missing) as cs:
        xh = cross_host(cs.captures)
        print_clock_notes(xh.clock_notes())
        docs = [to_otlp(c.db, xh.results[i], c.wall_offset_ns - xh.clocks[i].offset_ns)
                for i, c in enumerate(cs.captures)]
    doc = {"resourceSpans": [rs for d in docs for rs in d["resourceSpans"]]}
    write_output(output, json.dumps(doc, separators=(",", ":")) + "\n", force=force, mode=mode)
    spans = sum(len(s["spans"]) for rs in doc["resourceSpans"] for s in rs["scopeSpans"])
    traces = len({s.trace_id for r in xh.results for s in r.spans})
    return f"{spans:,} spans in {traces:,} traces from {len(cs.captures)} captures, {len(xh.pairs)} paired across hosts"


def _export_perfetto(archive: Path, output: Path, force: bool, mode: int) -> str:
    from uetrace.analyze.perfetto_export import export_perfetto
    from uetrace.cli.reading import reading
    from uetrace.output_files import OutputFile

    with reading(archive) as db, OutputFile(output, force=force, mode=mode) as out:
        res = export_perfetto(db, out)
    return (f"{res.slices:,} slices, {res.flows:,} flows, {res.samples:,} CPU samples "
            f"({res.callstacks:,} callstacks), {len(res.counters)} counter tracks")


def _export_parquet(archives: tuple[Path, ...], output: Path, mode: int) -> None:
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
    make_console(stderr=True).print(f"wrote {output}: {len(res.captures)} capture(s), {tables} tables with rows, "
                                    f"{sum(res.rows.values()):,} rows", markup=False, highlight=False)
