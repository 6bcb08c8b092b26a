"""`trace redact`: a copy of an archive with the redaction policy applied, for sharing one taken
with --no-redact. The source is read as untrusted input (analyze/archive.py's bounded extraction);
each segment of a table that can hold secrets is decoded, masked by the same TableRedactor as a live
capture, and written again (new sha256 and size in the manifest); every other member is copied.
Segments of one table are processed in their order in the archive, which is their order in time:
a header split across two segments is still seen whole.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from uetrace.analyze.archive import ReadLimits, extract
from uetrace.analyze.parquet_limits import estimate_bytes
from uetrace.archive_format import MANIFEST
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.errors import BadInputError
from uetrace.output_files import DEFAULT_MODE
from uetrace.redaction.policy import RedactionPolicy
from uetrace.redaction.tables import PAYLOAD_KINDS, TableRedactor

REDACTED_KINDS = (*PAYLOAD_KINDS, "net_packet", "processes")


@dataclass
class RedactResult:
    output: Path
    rewritten: int          # segments decoded and written again
    copied: int             # members copied as they were
    masked: dict[str, int]  # values masked, per table


def redact_archive(src: str | Path, dst: str | Path, policy: RedactionPolicy | None = None, *,
                   limits: ReadLimits | None = None, force: bool = False, mode: int = DEFAULT_MODE,
                   on_warnings: Callable[[list[str]], None] | None = None) -> RedactResult:
    """Write `dst`: `src` with `policy` applied. Raises BadInputError (one line) on an unreadable source;
    the reader's warnings (a truncated source, a sha256 mismatch) go to `on_warnings`."""
    ex = extract(src, limits)
    if on_warnings:
        on_warnings(ex.warnings)
    redactor = TableRedactor(policy or RedactionPolicy())
    try:
        manifest = copy.deepcopy(ex.manifest)
        entries = {s["member"]: s for s in manifest.get("segments") or []
                   if isinstance(s, dict) and isinstance(s.get("member"), str)}
        out = ArchiveWriter(dst, force=force, mode=mode)
        rewritten = copied = 0
        try:
            out.add_bytes(MANIFEST, _manifest_bytes(manifest))
            for name in ex.members:
                if name == MANIFEST:
                    continue
                path = ex.root / name
                kind = name.split("/")[1] if name.count("/") == 2 else ""
                if name.endswith(".parquet") and kind in REDACTED_KINDS:
                    path = _redact_segment(path, kind, redactor, ex.limits.expand_limit(ex.size))
                    rewritten += 1
                    entry = entries.get(name)
                    if entry is not None:
                        entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
                        entry["bytes"] = path.stat().st_size
                else:
                    copied += 1
                out.add_file(name, path)
            prior = manifest.get("redaction")
            manifest["redaction"] = {**redactor.to_manifest(), "applied_by": "trace redact",
                                     "at_capture": prior if isinstance(prior, dict) else {"enabled": False}}
            out.add_bytes(MANIFEST, _manifest_bytes(manifest))
            final = out.close()
        except BaseException:
            out.discard()
            raise
    finally:
        ex.cleanup()
    return RedactResult(final, rewritten, copied, dict(redactor.masked))


def _redact_segment(path: Path, kind: str, redactor: TableRedactor, budget: int) -> Path:
    """The segment decoded (within the reader's bounds), masked, and written beside it."""
    try:
        if estimate_bytes(path, budget) > budget:
            raise BadInputError(f"segment {path.parent.name}/{path.name} decodes to more than {budget:,} bytes; "
                                "refusing (raise --max-expand)")
        table = pq.read_table(path)
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"segment {path.parent.name}/{path.name} is not a readable Parquet file: "
                            f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__}") from None
    masked = redactor.redact(kind, table)
    dst = path.with_name(path.name + ".redacted")
    # As the capture writes them (capture/segments.py): no dictionary pages, zstd.
    pq.write_table(masked, dst, compression="zstd", use_dictionary=False, store_schema=False)
    return dst


def _manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1).encode()
