"""`trace info`: what an archive holds."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from uetrace.cli.options import archive_argument, json_option
from uetrace.cli.output import make_console, print_rows
from uetrace.units import human_bytes


@click.command("info")
@archive_argument
@json_option("Print the manifest as JSON.")
def command(archive: Path, as_json: bool):
    """Show what is inside an archive: host, duration, tracers, counts, losses.

    \b
    Example:
      trace info run.tar.zst
    """
    from uetrace.analyze.archive import extract
    from uetrace.analyze.manifest_info import ManifestInfo, as_count
    from uetrace.analyze.text import printable
    from uetrace.cli.options import read_limits
    from uetrace.cli.reading import print_warnings

    ex = extract(archive, read_limits())  # the manifest and members only: no DuckDB views needed
    try:
        print_warnings(ex.warnings)
        info = ManifestInfo(ex.manifest)
        if as_json:
            click.echo(json.dumps(ex.manifest, indent=1))  # JSON escapes control characters itself
            return
        dur = info.recording_seconds
        console = make_console()
        # Every value here comes from the archive (or the user's path): printed as data, never as markup,
        # control characters escaped.
        console.print(Text.assemble((printable(str(archive)), "bold"),
                                    printable(f": uetrace {info.text('tool_version')} format "
                                              f"{info.text('format_version')}")))
        for line in (f"host {info.host_text('hostname')} kernel {info.host_text('kernel')} "
                     f"{info.host_text('arch')} {info.host_text('cpus')} CPUs",
                     f"recorded {dur:.2f}s" if dur is not None else "duration unknown (capture did not finish)",
                     "command: " + " ".join(info.command_line), info.redaction_text, *_part_line(ex.manifest)):
            console.print(printable(line), markup=False, highlight=False)
        rows = []
        for name, t in info.tracers.items():
            if not t.get("attached"):
                rows.append((name, "no", "", "", str(t.get("reason") or "")))
                continue
            failures = t.get("attach_failures")
            fails = len(failures) if isinstance(failures, list) else 0
            rows.append((name, "yes", f"{as_count(t.get('records')) or 0:,}", f"{as_count(t.get('lost')) or 0:,}",
                         f"{fails} attach points failed" if fails else ""))
        print_rows(("tracer", "attached", "records", "lost", "notes"), rows, console=console)
        for name, t in info.tracers.items():
            for note in t.get("notes", []) if isinstance(t.get("notes"), list) else []:
                console.print(printable(f"{name}: {note}"), markup=False, highlight=False)
        seg_rows: dict[str, list[int]] = {}
        for s in info.segments:
            k = seg_rows.setdefault(s["kind"], [0, 0, 0])
            k[0] += 1
            k[1] += s["rows"]
            k[2] += s["bytes"]
        if not info.complete:
            # The final manifest is missing: list what the archive really holds.
            seg_rows = {}
            for member in ex.members:
                parts = member.split("/")
                if len(parts) == 3 and parts[2].endswith(".parquet"):
                    k = seg_rows.setdefault(parts[1], [0, 0, 0])
                    k[0] += 1
                    k[2] += (ex.root / member).stat().st_size
        print_rows(("table", "segments", "rows", "size"),
                   [(k, v[0], f"{v[1]:,}" if v[1] else "?", human_bytes(v[2])) for k, v in sorted(seg_rows.items())],
                   console=console)
    finally:
        ex.cleanup()


def _part_line(manifest: dict) -> list[str]:
    """A part of a --rotate capture: which one, of which capture (the offline commands take the set)."""
    part = manifest.get("part")
    number = part.get("number") if isinstance(part, dict) else None
    if not isinstance(number, int):
        return []
    return [f"part {number} of capture {manifest.get('capture_id')} (a --rotate set: give every part, "
            "e.g. 'NAME-*.tar.zst', to read it whole)"]

