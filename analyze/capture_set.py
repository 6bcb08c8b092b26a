"""Several archives read as a set of captures: archives with the same capture_id (the parts of a rotated
set, or copies of one capture) are one capture whose tables are the union of the parts'; archives of
different captures (other hosts, other runs) stay apart, each with its own ArchiveDb and clock.

Each capture's CLOCK_MONOTONIC timestamps are its own; `wall_offset_ns` puts them on its host's wall
clock (the manifest's start anchors). What remains between hosts (their wall clocks disagree) is
estimated from paired exchanges by clock_sync and applied by cross_host.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from uetrace.analyze.archive import ExtractedArchive, ReadLimits, extract
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.capture_identity import CaptureIdentity, capture_identity
from uetrace.analyze.manifest_info import ManifestInfo, as_count


@dataclass
class Capture:
    identity: CaptureIdentity
    db: ArchiveDb  # all its parts
    paths: list[Path]

    @property
    def capture_id(self) -> str:
        return self.identity.capture_id

    @property
    def host(self) -> str:
        return self.identity.host

    @property
    def label(self) -> str:
        """How reports title it: host/capture_id (the id alone when the host is unknown)."""
        return f"{self.host}/{self.capture_id}" if self.host else self.capture_id

    @property
    def wall_offset_ns(self) -> int:
        """Adds to a CLOCK_MONOTONIC ts of this capture for its host's wall time (0: no anchors)."""
        return self.db.info.realtime_offset_ns

    def window_wall_ns(self) -> tuple[int, int] | None:
        """The recording window on its host's wall clock."""
        window = self.db.info.recording_window
        if window is None:
            return None
        a, b = (self.db.info.monotonic_ns(w) for w in window)
        return a + self.wall_offset_ns, b + self.wall_offset_ns  # type: ignore[operator]


@dataclass
class CaptureSet:
    captures: list[Capture] = field(default_factory=list)  # in the order their first archive was given
    notes: list[str] = field(default_factory=list)  # archives read once though given twice

    @property
    def warnings(self) -> list[str]:
        return [w for c in self.captures for w in c.db.warnings]

    def close(self) -> None:
        for c in self.captures:
            c.db.close()

    def __enter__(self) -> CaptureSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merged_manifest(parts: Sequence[ExtractedArchive]) -> dict:
    """One manifest for the parts of a capture, in start order: the first part's, its recording window
    stretched to the last part's end, the segments of all (a symbols segment carried from part to
    part once), complete when every part is. Parts of a rotated capture (a "part" key) count their
    own records and losses: those are summed."""
    if len(parts) == 1:
        return parts[0].manifest
    infos = [ManifestInfo(p.manifest) for p in parts]
    first, last = infos[0], infos[-1]
    merged = copy.deepcopy(first.raw)
    clock = merged.get("clock") if isinstance(merged.get("clock"), dict) else {}
    for anchor in ("detached", "end"):
        value = (last.raw.get("clock") or {}).get(anchor) if isinstance(last.raw.get("clock"), dict) else None
        if isinstance(value, dict):
            clock[anchor] = copy.deepcopy(value)
        elif anchor in clock:
            del clock[anchor]  # the last part's window ends elsewhere: keep no stale anchor
    merged["clock"] = clock
    segments, seen = [], set()
    for s in (s for i in infos for s in (i.raw.get("segments") or []) if isinstance(s, dict)):
        key = (str(s.get("member")), str(s.get("sha256")))
        if key not in seen:
            seen.add(key)
            segments.append(s)
    merged["segments"] = segments
    if all(isinstance(i.raw.get("part"), dict) for i in infos):
        _sum_tracers(merged, infos)
    merged["complete"] = all(i.complete for i in infos)
    merged["parts"] = len(parts)
    return merged


def _sum_tracers(merged: dict, infos: list[ManifestInfo]) -> None:
    tracers = merged.get("tracers") if isinstance(merged.get("tracers"), dict) else {}
    for name, t in tracers.items():
        if not isinstance(t, dict):
            continue
        for key in ("records", "lost"):
            t[key] = sum(as_count(i.tracer(name).get(key)) or 0 for i in infos)
        kinds = t.get("kinds")
        for kind, k in (kinds.items() if isinstance(kinds, dict) else ()):
            if isinstance(k, dict):
                k["records"] = sum(_kind_records(i, name, kind) for i in infos)


def _kind_records(info: ManifestInfo, tracer: str, kind: str) -> int:
    kinds = info.tracer(tracer).get("kinds")
    k = kinds.get(kind) if isinstance(kinds, dict) else None
    return (as_count(k.get("records")) or 0) if isinstance(k, dict) else 0


def _start_key(part: ExtractedArchive) -> int:
    return as_count(ManifestInfo(part.manifest).start_ns) or 0


def open_capture_set(paths: Sequence[Path], limits: ReadLimits | None = None,
                     prepare: Callable[[ArchiveDb], None] | None = None) -> CaptureSet:
    """Open every archive (within `limits`), group them by capture_id, one ArchiveDb per capture;
    `prepare(db)` runs on each (e.g. registering the derived views a query needs). Raises ArchiveError
    (one line) for an unreadable archive; whatever was opened is closed again."""
    groups: dict[str, tuple[CaptureIdentity, list[ExtractedArchive], list[Path]]] = {}
    result = CaptureSet()
    seen: dict[str, Path] = {}
    dropped: list[str] = []
    try:
        for path in paths:
            part = extract(path, limits)
            ident = capture_identity(part.manifest)
            # The same part twice (a copy, or named by a pattern and by hand) is read once: its rows
            # are not another part's.
            key = json.dumps([ident.capture_id, part.manifest.get("segments")], sort_keys=True, default=str)
            if key in seen:
                dropped.append(f"{path}: the same part of capture {ident.capture_id} as {seen[key]}: read once")
                part.cleanup()
                continue
            seen[key] = Path(path)
            group = groups.setdefault(ident.capture_id, (ident, [], []))
            group[1].append(part)
            group[2].append(Path(path))
        while groups:
            cid = next(iter(groups))
            ident, parts, part_paths = groups.pop(cid)
            ordered = sorted(parts, key=_start_key)
            try:
                db = ArchiveDb(ordered[0], ordered[1:], merged_manifest(ordered))
            except BaseException:
                for p in parts:
                    p.cleanup()
                raise
            result.captures.append(Capture(ident, db, part_paths))
            if prepare is not None:
                prepare(db)
        result.notes = dropped
    except BaseException:
        for _, parts, _ in groups.values():
            for p in parts:
                p.cleanup()
        result.close()
        raise
    return result
