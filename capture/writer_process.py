"""The root side of a capture whose archive an unprivileged process writes (capture/privsep.py).

WriterProcess stands where ArchiveWriter stands in a single-process capture and RemoteSink
where SegmentSink stands, with the same methods, so CaptureSession does not care which it has.
Decoding stays in the root process: each tracer's observe() feeds the process and symbol
snapshot, which reads /proc of other users' processes. What crosses to the writer is decoded
tables (Arrow IPC), member bytes and when to stop; what comes back is untrusted (the user may
trace or kill the writer): replies are bounded, awaited with a timeout, and a writer that dies
or stalls stops the capture like a full disk would, never hangs it.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from uetrace.archive_format import MANIFEST
from uetrace.capture import writer_protocol as wp
from uetrace.capture.options import CaptureOptions
from uetrace.capture.parts import part_path
from uetrace.capture.privsep import WriterUser
from uetrace.capture.segments import PartEnd
from uetrace.errors import BadInputError, UetraceError
from uetrace.output_files import partial_path

START_TIMEOUT_S = 60.0   # importing pyarrow on a loaded machine
REPLY_TIMEOUT_S = 120.0  # closing rolls every open segment (up to 64 MiB each)
STALL_S = 60.0           # a writer that takes nothing for this long is stopped
STOPPED_S = 3.0          # ...or that long while stopped (SIGSTOP, a debugger): no slow disk looks like that


class WriterProcess:
    """Archive-writer side: add_bytes, close, discard, abandon, partial, path."""

    def __init__(self, opts: CaptureOptions, user: WriterUser):
        self.path = part_path(opts.output, 1) if opts.rotate is not None else Path(opts.output)
        self.partial = partial_path(self.path)   # --rotate: the part being written (RemoteSink moves them on)
        self.user = user
        self.error: OSError | None = None
        self.bytes_written = 0
        self.size_so_far = 0  # the writer's SegmentSink.size_so_far(), as it last reported it
        self._replies: queue.Queue = queue.Queue()
        self._send_lock = threading.Lock()
        self._finished = False
        # Absolute paths, and the child starts in "/": `python -m` puts its working folder first on
        # sys.path, and the folder sudo was run from is often the user's, who could plant a
        # zstandard.py there for the child to import while it is still root.
        cfg = {"output": os.path.abspath(opts.output), "force": opts.force, "mode": opts.mode,
               "spool_dir": os.path.abspath(opts.spool_dir) if opts.spool_dir else None,
               "segment_bytes": opts.segment_bytes, "segment_seconds": opts.segment_seconds,
               "encrypt_to": list(opts.encrypt_to), "uid": user.uid, "gid": user.gid, "user": user.name,
               "rotate": opts.rotate, "keep": opts.keep}
        # Its own session: Ctrl-C at the terminal is root's to handle; the writer stops when told.
        self.proc = subprocess.Popen([sys.executable, "-m", "uetrace.capture.writer_child", json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                                     cwd="/")
        self._stdin = self.proc.stdin.fileno()
        os.set_blocking(self._stdin, False)
        threading.Thread(target=self._read_replies, name="uetrace-writer-replies", daemon=True).start()
        try:
            first = self._await(("ready", "fatal"), START_TIMEOUT_S)
        except BaseException as e:   # Ctrl-C included: no writer is left behind, stopped or not
            self.proc.kill()
            self._reap()
            if not isinstance(e, OSError):
                raise
            raise UetraceError(f"the writer process (as {user.name}) could not start: it ended without a "
                               "word (run it by hand: python -m uetrace.capture.writer_child)") from None
        if "fatal" in first:
            self._reap()
            msg = str(first["fatal"])
            if first.get("exit_code") == 2:
                raise BadInputError(f"{msg} (writing as {user.name}: the archive is created by that user)")
            raise UetraceError(f"the writer process (as {user.name}) could not start: {msg}")
        self.pid = self.proc.pid

    # ---- what the session calls ---------------------------------------------------------------

    def add_bytes(self, name: str, data: bytes) -> None:
        self._send(wp.frame(wp.ADD_BYTES, name, data))

    def sink(self, redact: Callable[[str, pa.Table], pa.Table] | None = None) -> RemoteSink:
        return RemoteSink(self, redact)

    def close(self) -> Path:
        got = self._request(wp.CLOSE, ("closed", "close_failed"))
        if "close_failed" in got:
            raise OSError(_errno(got), str(got["close_failed"]))
        return self.path

    def discard(self) -> None:
        self._final(wp.DISCARD, "discarded")

    def abandon(self) -> Path:
        self._final(wp.ABANDON, "abandoned")
        return self.partial

    # ---- plumbing -----------------------------------------------------------------------------

    def send_table(self, area: str, kind: str, table: pa.Table) -> None:
        self._send(wp.frame(wp.TABLE, f"{area}/{kind}", wp.table_bytes(table)))

    def fail(self, e: BaseException | str) -> None:
        if self.error is None:
            self.error = e if isinstance(e, OSError) else OSError(errno.EIO, str(e))

    def _send(self, parts: list) -> None:
        if self.proc.poll() is not None:
            self.fail(f"the writer process (as {self.user.name}) ended")
            raise self.error
        try:
            with self._send_lock:
                for part in parts:
                    self._write_all(memoryview(part))
        except OSError:
            self.fail(f"the writer process (as {self.user.name}) ended or stopped reading")
            raise self.error from None

    def _write_all(self, view: memoryview) -> None:
        """Non-blocking writes, so that a writer that stops reading (SIGSTOP) is noticed and killed
        after STALL_S instead of blocking the capture's teardown for good."""
        deadline = time.monotonic() + STALL_S
        stopped_since = None
        while view:
            try:
                view = view[os.write(self._stdin, view):]
                deadline, stopped_since = time.monotonic() + STALL_S, None
            except BlockingIOError:
                now = time.monotonic()
                if self._stopped():
                    stopped_since = stopped_since or now
                else:
                    stopped_since = None
                if now >= deadline or (stopped_since and now - stopped_since >= STOPPED_S):
                    self.proc.kill()
                    raise OSError(errno.ETIMEDOUT, "stalled") from None
                select.select([], [self._stdin], [], 0.5)

    def _stopped(self) -> bool:
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as fh:
                stat = fh.read(4096)
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2:][:1] in (b"T", b"t")

    def _request(self, op: bytes, keys: tuple[str, ...], payload: bytes = b"") -> dict:
        self._send(wp.frame(op, "", payload))
        return self._await(keys, REPLY_TIMEOUT_S)

    def _final(self, op: bytes, key: str) -> None:
        if self._finished:
            return
        try:
            if self.proc.poll() is None:
                self._request(op, (key,))
        except OSError:
            pass
        finally:
            self._finished = True
            self._reap()

    def _await(self, keys: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        stopped_since = None
        while True:
            try:
                got = self._replies.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    self.fail(f"the writer process (as {self.user.name}) ended")
                    raise self.error from None
                now = time.monotonic()
                stopped_since = (stopped_since or now) if self._stopped() else None
                if now < deadline and not (stopped_since and now - stopped_since >= STOPPED_S):
                    continue
                self.proc.kill()
                self.fail(f"the writer process (as {self.user.name}) did not answer")
                raise self.error from None
            if got is None:
                # The end of its output, told once by the reader thread: kept for every later wait
                # (a request sent while the writer was still dying would otherwise wait it out).
                self._replies.put(None)
                self.fail(f"the writer process (as {self.user.name}) ended")
                raise self.error
            if any(k in got for k in keys):
                return got

    def _read_replies(self) -> None:
        out = self.proc.stdout
        while True:
            line = out.readline(wp.MAX_REPLY)
            if not line:
                self._replies.put(None)
                return
            try:
                got = json.loads(line)
            except ValueError:
                continue
            if not isinstance(got, dict):
                continue
            if "failed" in got:
                self.fail(OSError(_errno(got), str(got["failed"])))
            elif "bytes" in got:
                if isinstance(got["bytes"], int):
                    self.bytes_written = got["bytes"]
                if isinstance(got.get("size"), int):
                    self.size_so_far = got["size"]
            else:
                self._replies.put(got)

    def _reap(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RemoteSink:
    """SegmentSink's methods; jobs (decoding) run here, on a thread of their own, and their tables
    go to the writer."""

    def __init__(self, writer: WriterProcess, redact: Callable[[str, pa.Table], pa.Table] | None = None):
        self.writer = writer
        # Redaction runs here, in root, before a table leaves for the writer: the writer never holds a
        # secret, and the counts stay with the session's redactor for the manifest.
        self._redact = redact
        self.segments: list[dict] = []
        self.rows_written: dict[str, int] = {}
        self._q: queue.Queue = queue.Queue(maxsize=4096)
        self._thread = threading.Thread(target=self._run, name="uetrace-segments", daemon=True)
        self._thread.start()

    @property
    def error(self) -> OSError | None:
        return self.writer.error

    @property
    def bytes_written(self) -> int:
        return self.writer.bytes_written

    def put(self, job: Callable[[], dict[str, pa.Table]], area: str = "events") -> None:
        self._put((job, area))

    def put_table(self, kind: str, table: pa.Table, area: str = "events") -> None:
        self._put((lambda: {kind: table}, area))

    def rotate(self, finish_part: Callable[[dict], tuple[bytes, bytes]],
               on_done: Callable[[dict | None], None] | None = None) -> None:
        """SegmentSink.rotate, with the writer: what was queued before goes into the part."""
        self._put((PartEnd(finish_part, on_done), None))

    def _rotate(self, rot: PartEnd) -> None:
        done = None
        try:
            if self.writer.error is None:
                got = self.writer._request(wp.END_PART, ("part_summary",)).get("part_summary")
                if isinstance(got, dict):
                    final, start = rot.finish_part(_summary(got))
                    self.writer.add_bytes(MANIFEST, final)
                    done = _next_part(self.writer._request(wp.NEXT_PART, ("next_part",), start).get("next_part"))
                    if done is None:
                        self.writer.fail("the writer process could not start the next part")
                    else:
                        self.writer.path, self.writer.partial = Path(done["path"]), Path(done["partial"])
                        # Until the writer's next size report: the old part's size would end this one at once.
                        self.writer.size_so_far = done["start_size"]
        except BaseException as e:   # the session sees `error` and stops
            self.writer.fail(e)
        finally:
            if rot.on_done:
                rot.on_done(done)

    def backlog(self) -> int:
        return self._q.qsize()

    def size_so_far(self) -> int:
        return self.writer.size_so_far

    def _put(self, item) -> None:
        try:
            self._q.put(item, timeout=STALL_S)
        except queue.Full:
            self.writer.fail(f"the writer process (as {self.writer.user.name}) stopped taking data")
            self.writer.proc.kill()   # its pipe then fails at once: the queue drains
            self._q.put(item)

    def close(self) -> None:
        self._put(None)
        self._thread.join()
        try:
            got = self.writer._request(wp.CLOSE_SINK, ("sink",))["sink"]
        except OSError:
            return
        if isinstance(got, dict):
            segs, rows = got.get("segments"), got.get("rows_written")
            self.segments = [s for s in segs if isinstance(s, dict)] if isinstance(segs, list) else []
            self.rows_written = ({k: v for k, v in rows.items() if isinstance(v, int)}
                                 if isinstance(rows, dict) else {})
            if isinstance(got.get("bytes_written"), int):
                self.writer.bytes_written = got["bytes_written"]

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            job, area = item
            if isinstance(job, PartEnd):
                self._rotate(job)
                continue
            try:
                tables = job()   # always run: a job may be a barrier the session waits on
                if self.writer.error is None:
                    for kind, table in tables.items():
                        if table.num_rows:
                            self.writer.send_table(area, kind, self._redact(kind, table) if self._redact else table)
            except BaseException as e:   # keep draining: the session sees `error` and stops
                self.writer.fail(e)


def _summary(got: dict) -> dict:
    """A part's segments and rows as the writer reported them (untrusted: only the expected types)."""
    segs, rows = got.get("segments"), got.get("rows_written")
    return {"segments": [s for s in segs if isinstance(s, dict)] if isinstance(segs, list) else [],
            "rows_written": ({k: v for k, v in rows.items() if isinstance(v, int)} if isinstance(rows, dict) else {}),
            "bytes_written": got["bytes_written"] if isinstance(got.get("bytes_written"), int) else 0}


def _next_part(got: object) -> dict | None:
    """The writer's word on the next part, if it is well formed."""
    if not isinstance(got, dict):
        return None
    texts, counts = ("closed", "path", "partial"), ("number", "finished_bytes", "start_size")
    if not all(isinstance(got.get(k), str) for k in texts) or not all(isinstance(got.get(k), int) for k in counts):
        return None
    removed = got.get("removed")
    return {**{k: got[k] for k in texts + counts},
            "removed": [r for r in removed if isinstance(r, str)] if isinstance(removed, list) else []}


def _errno(got: dict) -> int:
    n = got.get("errno")
    return n if isinstance(n, int) and n > 0 else errno.EIO
