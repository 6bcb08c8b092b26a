"""--rotate: one capture rolled into numbered standalone archives, its parts (issue 13 item 4).

`-o run.tar.zst` writes run-000001.tar.zst, run-000002.tar.zst, ...: six digits, so that the parts sort
by name in the order they were written and `run-*.tar.zst` names them all. Each part is a complete
archive (its own manifest, schema members and symbol snapshot), written as NAME.partial and renamed
as soon as it is full while recording goes on into the next one. With --keep N the oldest finished
parts are deleted so that at most N parts (the one being written included) exist.

PartArchives stands where ArchiveWriter stands (same methods), in the capture process or in the
unprivileged writer process alike; SegmentSink calls next_part() between two parts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from uetrace.archive_format import MANIFEST
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.errors import BadInputError
from uetrace.output_files import DEFAULT_MODE, PARTIAL_SUFFIX

PART_DIGITS = 6
# symbols/ tables that are time series, not what names things: periodic counter snapshots. Each part
# keeps its own; carried, every part would hold every snapshot since the start.
PER_PART_TABLES = frozenset({"net_flows", "net_iface_stats"})
MIN_ROTATE = 2 << 20  # a part holds its schema, at least a segment and the symbol snapshot


def _split(output: Path) -> tuple[str, str]:
    """run.tar.zst -> (run, .tar.zst); run.bin -> (run, .bin); run -> (run, '')."""
    name = output.name
    i = name.find(".tar")
    if i > 0:
        return name[:i], name[i:]
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")


def part_path(output: str | Path, number: int) -> Path:
    """Where part `number` (from 1) of a capture asked to write `output` goes."""
    output = Path(output)
    stem, suffix = _split(output)
    return output.with_name(f"{stem}-{number:0{PART_DIGITS}d}{suffix}")


def part_glob(output: str | Path) -> str:
    """The shell pattern that names every part (what the offline commands take)."""
    output = Path(output)
    stem, suffix = _split(output)
    return str(output.with_name(f"{stem}-*{suffix}"))


def existing_parts(output: str | Path) -> list[Path]:
    """Parts (finished or .partial) of an earlier capture to the same output, in order."""
    output = Path(output)
    stem, suffix = _split(output)
    pattern = re.compile(f"{re.escape(stem)}-\\d{{{PART_DIGITS}}}{re.escape(suffix)}({re.escape(PARTIAL_SUFFIX)})?")
    try:
        names = os.listdir(output.parent)
    except OSError:
        return []
    return sorted(output.parent / n for n in names if pattern.fullmatch(n))


class PartArchives:
    """The part being written (an ArchiveWriter) and the ones finished. Not thread-safe: the segment
    sink's thread is the only one that rolls parts; add_bytes/add_file go to the current part."""

    def __init__(self, output: str | Path, *, keep: int | None = None, force: bool = False,
                 mode: int = DEFAULT_MODE, recipients: list | None = None, level: int = 3):
        self.output = Path(output)
        self.keep = keep
        self._args = {"force": force, "mode": mode, "recipients": recipients, "level": level}
        stale = existing_parts(self.output)
        if stale and not force:
            raise BadInputError(f"{stale[0]} exists (the part of an earlier --rotate capture); "
                                "use --force to replace them")
        for path in stale:   # --force: an earlier capture's parts would mix with these ones
            path.unlink(missing_ok=True)
        self.number = 1
        self.current = ArchiveWriter(part_path(self.output, 1), **self._args)
        self._headers: dict[str, bytes] = {}   # schema members: every part gets them
        self.finished: list[Path] = []         # finished parts still on disk, oldest first
        self.finished_bytes = 0                # of every finished part, deleted ones included
        self.removed: list[Path] = []

    # ---- what ArchiveWriter has ---------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.current.path

    @property
    def partial(self) -> Path:
        return self.current.partial

    @property
    def size(self) -> int:
        return self.current.size

    @property
    def closed(self) -> bool:
        return self.current.closed

    def add_bytes(self, name: str, data: bytes) -> None:
        if name != MANIFEST:
            self._headers[name] = data
        self.current.add_bytes(name, data)

    def add_file(self, name: str, path: str | Path) -> None:
        self.current.add_file(name, path)

    def close(self) -> Path:
        return self.current.close()

    def discard(self) -> None:
        """Only the part being written: the finished ones are complete archives."""
        self.current.discard()

    def abandon(self) -> Path:
        return self.current.abandon()

    # ---- rotation -----------------------------------------------------------------------------

    def next_part(self, start_manifest: bytes) -> tuple[Path, list[Path]]:
        """Close the current part (its final manifest already added) and open the next with
        `start_manifest` and the schema members. Returns the part closed and the parts --keep
        deleted. An OSError closing or opening stops the capture like any write error."""
        size = self.current.size
        closed = self.current.close()
        self.finished.append(closed)
        self.finished_bytes += size
        removed = []   # before the next part exists: never more than --keep parts on disk
        while self.keep is not None and self.finished and len(self.finished) + 1 > self.keep:
            old = self.finished.pop(0)
            try:
                old.unlink()
            except FileNotFoundError:
                pass
            removed.append(old)
        self.removed.extend(removed)
        self.number += 1
        self.current = ArchiveWriter(part_path(self.output, self.number), **self._args)
        self.current.add_bytes(MANIFEST, start_manifest)
        for name, data in self._headers.items():
            self.current.add_bytes(name, data)
        return closed, removed


def check_rotation(rotate: int | None, keep: int | None, max_size: int | None) -> None:
    """Refuse what cannot work together, with a one-line BadInputError."""
    if keep is not None and rotate is None:
        raise BadInputError("--keep needs --rotate (it keeps the newest N parts of a rotated capture)")
    if rotate is None:
        return
    if rotate < MIN_ROTATE:
        raise BadInputError(f"--rotate {rotate:,} bytes: a part must hold at least {MIN_ROTATE >> 20} MiB "
                            "(its schema, a segment and the symbol snapshot)")
    if keep is not None and keep < 1:
        raise BadInputError(f"--keep {keep}: keep at least 1 part")
    if max_size is not None and max_size <= rotate:
        raise BadInputError("--max-size bounds all the parts together: it must be larger than --rotate")


def part_segment_bytes(rotate: int, segment_bytes: int) -> int:
    """Segments of a part roll at a quarter of the part (their decoded size; on disk they are smaller),
    so that a part ends close to --rotate instead of overshooting by one large segment."""
    return max(256 << 10, min(segment_bytes, rotate // 4))
