"""`trace export`: write what was recorded in a format other tools read (packets, traces)."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.options import archive_argument
from uetrace.cli.output import make_console


@click.command("export")
@archive_argument
@click.option("--format", "fmt", type=click.Choice(["pcapng", "otlp"]), default="pcapng", show_default=True,
              help="pcapng: the net tracer's packets; otlp: the requests' spans as OTLP/JSON traces.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write.")
def command(archive: Path, fmt: str, output: Path):
    """Export the net tracer's packets (Wireshark, tshark, tcpdump -r), or the
    requests' spans as traces (OpenTelemetry Collector, Jaeger).

    pcapng: one interface block per interface, the captured bytes and original
    length of each packet, and per-interface statistics with the tracer's drop
    counts. otlp: an ExportTraceServiceRequest in OTLP/JSON, one span per
    exchange and captured end, linked as `trace request` shows them.

    \b
    Examples:
      trace export run.tar.zst --format pcapng -o run.pcapng
      trace export run.tar.zst --format otlp -o spans.json
    """
    from uetrace.cli.reading import reading

    err = make_console(stderr=True)
    if fmt == "otlp":
        _export_otlp(archive, output)
        return
    from uetrace.analyze.pcapng import ExportError, export_file
    with reading(archive) as db:
        try:
            res = export_file(db, output)
        except ExportError:
            output.unlink(missing_ok=True)
            raise
    err.print(f"wrote {output}: {res['packets']:,} packets on {res['interfaces']} interfaces")


def _export_otlp(archive: Path, output: Path) -> None:
    import json

    from uetrace.analyze import correlate
    from uetrace.analyze.correlate.otlp import to_otlp
    from uetrace.cli.reading import reading

    missing = "no socket records (capture with the sock tracer: -t sock,proc)"
    with reading(archive, correlate.applies, missing) as db:
        result = correlate.correlate(db)
        doc = to_otlp(db, result)
    output.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    spans = sum(len(s["spans"]) for rs in doc["resourceSpans"] for s in rs["scopeSpans"])
    make_console(stderr=True).print(f"wrote {output}: {spans:,} spans in {len({s.trace_id for s in result.spans}):,} "
                                    "traces")
