"""Parquet segments, written off the draining thread.

The drain loop hands raw chunks to SegmentSink.put(); a worker thread decodes
them (capture/records.py), writes one zstd Parquet file per record kind, rolls
it by size or age, and appends each finished file to the archive at once.

Segments are spooled in a folder of their own (0700, files 0600: they hold payload
bytes) beside the archive unless told otherwise, not in TMPDIR: as root, a TMPDIR
inherited from a user would let that user read or swap them, and the spool needs
the space the archive is about to need anyway. A write error (ENOSPC, EIO, EFBIG) on
the spool or the archive loses only the segment being written; it is kept in
`error` for the session, which stops the capture.

With `carry` (--rotate, capture/parts.py) the symbols/ segments stay in the spool once written: every
new part gets them again, so that each part names its own processes and frames. rotate() ends the
part being written between two queued items: what was queued before it is in that part.

Every table passes through `redact` (uetrace/redaction/) on this thread before
its first byte reaches the spool: nothing sensitive is ever on disk.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.archive_format import MANIFEST, SYMBOLS_DIR, segment_member, table_member
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.parts import PER_PART_TABLES
from uetrace.errors import BadInputError

SPOOL_PREFIX = "uetrace-seg-"


def remove_stale_spools(tmp: str | Path | None = None) -> list[str]:
    """Remove the spool folders of captures that died without cleaning up (SIGKILL, power
    loss) from `tmp` (default: the system's temporary folder, where older versions spooled):
    each is named for its capture's pid, and only folders of this user whose pid no longer
    runs are touched. Returns what was removed."""
    removed: list[str] = []
    tmp = tmp or tempfile.gettempdir()
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return removed
    for entry in entries:
        parts = entry.name.removeprefix(SPOOL_PREFIX).split("-", 1)
        if not entry.name.startswith(SPOOL_PREFIX) or len(parts) != 2 or not parts[0].isdigit():
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid() or not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        if not os.path.exists(f"/proc/{parts[0]}"):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


class _OpenSegment:
    """One Parquet file being written. Small decoded tables are buffered and
    written as one row group: a write per drained chunk costs more than the
    decoding itself."""

    # Pending rows keep their chunk buffers alive (payload views): this bounds RSS. 16 K rows took 6%
    # less of the writer's time per row than 8 K on real sock_data, but lifted the default set's peak
    # RSS past 300 MB (303 under the nginx bench).
    ROW_GROUP_ROWS = 8 * 1024

    def __init__(self, path: Path, table: pa.Table, events: bool):
        self.path = path
        # Created here, 0600, so that the Parquet writer only truncates a file no one else can open.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        self.schema = _file_schema(table, events)
        # No Arrow schema in the file: payloads are built as binary_view (zero-copy, see
        # capture/records.py) and must read back as plain binary, as they always have.
        # No dictionary pages and no statistics on binary columns: on real sock_data and
        # net_packet batches the writer took 226 and 368 ns per row with Parquet's defaults,
        # 172 and 225 without, and the files came out smaller (zstd finds the repeats anyway).
        # Statistics only where a query filters (time, process, socket: DuckDB skips row groups by them).
        stats = [f.name for f in self.schema if f.name.startswith("ts") or f.name in _FILTERED]
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd", store_schema=False,
                                       use_dictionary=False, write_statistics=stats)
        self.rows = 0
        self.bytes = 0
        self.opened = time.monotonic()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def fits(self, table: pa.Table) -> bool:
        """Whether `table` has no null where this file's schema says required."""
        return all(f.nullable or not table.column(f.name).null_count for f in self.schema)

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        self.bytes += table.nbytes
        if self._pending_rows >= self.ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            self.writer.write_table(pa.Table.from_arrays(table.columns, schema=self.schema),
                                    row_group_size=self._pending_rows)
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


_FILTERED = frozenset({"pid", "tid", "sock_id"})


def _file_schema(table: pa.Table, events: bool) -> pa.Schema:
    """The first table's schema, with every events column that holds no null declared required: a
    required column has no definition levels to encode (10% of the writer's time per sock_data row).
    Symbols tables are written a few times per capture and may gain nulls later: left as they are."""
    if not events:
        return table.schema
    return pa.schema([f.with_nullable(bool(table.column(f.name).null_count)) for f in table.schema])


@dataclass
class PartEnd:
    """A queued end of part. finish_part(summary) -> (final manifest of the part, start manifest of
    the next); on_done(result) once the next part is open."""

    finish_part: Callable[[dict], tuple[bytes, bytes]]
    on_done: Callable[[dict], None] | None


class SegmentSink:
    """Thread-safe: put() and put_table() may be called from any thread. `archive` is an ArchiveWriter,
    or with `carry` a PartArchives (capture/parts.py)."""

    def __init__(self, archive: ArchiveWriter, roll_bytes: int, roll_seconds: float,
                 on_error: Callable[[BaseException], None] | None = None, spool_dir: str | Path | None = None,
                 redact: Callable[[str, pa.Table], pa.Table] | None = None, carry: bool = False):
        self.archive = archive
        self._redact = redact
        self.roll_bytes, self.roll_seconds = roll_bytes, roll_seconds
        self.segments: list[dict] = []           # manifest entries, of the part being written
        self.rows_written: dict[str, int] = {}   # ...of the part being written
        self.bytes_written = 0                   # of every part
        self._part_bytes = 0
        self._carry = carry
        self._carried: list[tuple[str, Path, dict]] = []   # symbols segments: member, spool file, entry
        self._open: dict[tuple[str, str], _OpenSegment] = {}
        self._seq: dict[tuple[str, str], int] = {}
        parent = Path(spool_dir) if spool_dir else archive.path.parent
        remove_stale_spools(parent)
        remove_stale_spools()
        try:
            self.spool = Path(tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=parent))  # 0700
        except OSError as e:
            raise BadInputError(f"create spool folder in {parent}: {e.strerror}") from None
        self._q: queue.Queue = queue.Queue(maxsize=4096)
        self._on_error = on_error
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="uetrace-segments", daemon=True)
        self._thread.start()

    def put(self, job: Callable[[], dict[str, pa.Table]], area: str = "events") -> None:
        """Queue a job that returns {kind: table}; it runs on the worker thread."""
        self._q.put((job, area))

    def put_table(self, kind: str, table: pa.Table, area: str = "events") -> None:
        self._q.put((lambda: {kind: table}, area))

    def backlog(self) -> int:
        return self._q.qsize()

    def size_so_far(self) -> int:
        """What the archive would hold if the open segments were added now (what --max-size compares):
        its size on disk plus the segments in the spool, shrunk by the ratio the archive's zstd frames
        gave the segments before them (Parquet pages of repetitive payloads compress again)."""
        open_bytes = 0
        for seg in list(self._open.values()):  # a copy: the sink thread opens and rolls segments
            try:
                open_bytes += os.path.getsize(seg.path)
            except OSError:
                pass  # rolled into the archive meanwhile
        on_disk = self.archive.size
        ratio = min(1.0, on_disk / self._part_bytes) if self._part_bytes else 1.0
        return on_disk + int(open_bytes * ratio)

    def rotate(self, finish_part: Callable[[dict], tuple[bytes, bytes]],
               on_done: Callable[[dict], None] | None = None) -> None:
        """Queue the end of the part being written (see PartEnd): on the worker thread, after
        everything queued before."""
        self._q.put((PartEnd(finish_part, on_done), None))

    def call(self, fn: Callable[[], object]) -> object:
        """Run fn on the worker thread after everything queued, and return what it returned."""
        done = threading.Event()
        box: dict = {}

        def job() -> dict:
            try:
                box["value"] = fn()
            except BaseException as e:
                box["error"] = e
            finally:
                done.set()
            return {}
        self.put(job)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def end_part(self) -> dict:
        """Worker thread: every open segment into the part; what its manifest lists."""
        for key in list(self._open):
            self._roll(key)
        return {"segments": list(self.segments), "rows_written": dict(self.rows_written),
                "bytes_written": self._part_bytes}

    def start_part(self, final_manifest: bytes | None, start_manifest: bytes) -> dict:
        """Worker thread, after end_part(): close the part with its final manifest, open the next
        with the schema members and every symbols segment so far."""
        if final_manifest is not None:
            self.archive.add_bytes(MANIFEST, final_manifest)
        closed, removed = self.archive.next_part(start_manifest)
        self.segments, self.rows_written, self._part_bytes = [], {}, 0
        for member, path, entry in self._carried:
            self.archive.add_file(member, path)
            self._part_bytes += entry["bytes"]
            self.segments.append(entry)
            self.rows_written[entry["kind"]] = self.rows_written.get(entry["kind"], 0) + entry["rows"]
        return {"closed": str(closed), "removed": [str(p) for p in removed], "number": self.archive.number,
                "path": str(self.archive.path), "partial": str(self.archive.partial),
                "finished_bytes": self.archive.finished_bytes, "start_size": self.archive.size}

    def close(self) -> None:
        """Write everything queued, close every open segment, append it to the archive."""
        self._q.put(None)
        self._thread.join()
        shutil.rmtree(self.spool, ignore_errors=True)

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                item = False
            if item is None:  # the last item: whatever fails now, return (close() joins this thread)
                for key in list(self._open):
                    try:
                        self._roll(key)
                    except BaseException as e:
                        self._failed(e)
                return
            try:
                if item and isinstance(item[0], PartEnd):
                    self._rotate(item[0])
                elif item:
                    job, area = item
                    for kind, table in job().items():
                        if table.num_rows:
                            self._write(area, kind, self._redact(kind, table) if self._redact else table)
                self._roll_old()
            except BaseException as e:  # keep draining: losing the rest would be worse
                self._failed(e)

    def _rotate(self, rot: PartEnd) -> None:
        done = None
        try:
            final, start = rot.finish_part(self.end_part())
            done = self.start_part(final, start)
        finally:
            if rot.on_done:   # also after a failure (done None): the session's rotation thread waits
                rot.on_done(done)

    def _failed(self, e: BaseException) -> None:
        self.error = self.error or e
        if self._on_error:
            self._on_error(e)

    def _write(self, area: str, kind: str, table: pa.Table) -> None:
        key = (area, kind)
        seg = self._open.get(key)
        if seg is not None and not seg.fits(table):   # a null where the file said required: a new file
            self._roll(key)
            seg = None
        if seg is None:
            seq = self._seq.get(key, 0) + 1
            self._seq[key] = seq
            seg = _OpenSegment(self.spool / f"{area}-{kind}-{seq:06d}.parquet", table, area == "events")
            self._open[key] = seg
        try:
            seg.add(table)
        except BaseException:
            self._drop(key)
            raise
        self.rows_written[kind] = self.rows_written.get(kind, 0) + table.num_rows
        if seg.bytes >= self.roll_bytes:
            self._roll(key)

    def _drop(self, key: tuple[str, str]) -> None:
        """A segment whose write failed (its file is cut short): its spool space goes back at once,
        or the other segments, rolled at the stop, would not fit either."""
        seg = self._open.pop(key)
        try:
            seg.writer.close()
        except BaseException:
            pass
        seg.path.unlink(missing_ok=True)

    def _roll_old(self) -> None:
        now = time.monotonic()
        for key, seg in list(self._open.items()):
            if now - seg.opened >= self.roll_seconds:
                self._roll(key)

    def _roll(self, key: tuple[str, str]) -> None:
        seg = self._open.pop(key)
        area, kind = key
        carry = self._carry and area == SYMBOLS_DIR and kind not in PER_PART_TABLES
        try:
            seg.close()
            member = (segment_member if area == "events" else table_member)(kind, self._seq[key])
            digest = hashlib.sha256(seg.path.read_bytes()).hexdigest()
            size = seg.path.stat().st_size
            self.archive.add_file(member, seg.path)
        except BaseException:
            seg.path.unlink(missing_ok=True)   # lost: its spool space goes back
            raise
        entry = {"member": member, "kind": kind, "rows": seg.rows, "bytes": size, "sha256": digest}
        if carry:
            self._carried.append((member, seg.path, entry))   # for the next parts; removed with the spool
        else:
            seg.path.unlink(missing_ok=True)
        self.bytes_written += size
        self._part_bytes += size
        self.segments.append(entry)
