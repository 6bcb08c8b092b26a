"""The unprivileged writer: `python -m uetrace.capture.writer_child CONFIG_JSON`, started by a root
capture (capture/writer_process.py) when it records for another user.

It starts as root only to import what it needs (the Python installation may live where the
user cannot read, e.g. /root/.pyenv), then drops to the user for good (capture/privsep.py) before
it opens anything: the archive (NAME.partial, then NAME) and the spool are created by the user,
in folders the user can write, and belong to the user. It holds no BPF object, ring or map and
no capability; it encodes the tables root sends (Arrow IPC) into Parquet segments and the
archive, exactly as SegmentSink and ArchiveWriter do in a single-process capture.

Terminal signals are ignored: the root capture decides when to stop (a stdin that ends without
a last word, i.e. root died, leaves NAME.partial with every finished member).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

# Everything is imported while still root: after the switch, the installation may be unreadable.
import pyarrow  # noqa: F401
import pyarrow.ipc  # noqa: F401
import pyarrow.parquet  # noqa: F401

from uetrace.capture import writer_protocol as wp
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.parts import PartArchives
from uetrace.capture.privsep import WriterUser, drop_to
from uetrace.capture.segments import SegmentSink
from uetrace.encryption import parse_recipient
from uetrace.errors import UetraceError


class Writer:
    def __init__(self, cfg: dict, out) -> None:
        self._out = out
        self._lock = threading.Lock()
        recipients = [parse_recipient(r) for r in cfg["encrypt_to"]]
        rotate = cfg.get("rotate") is not None
        self.archive = (PartArchives(cfg["output"], keep=cfg.get("keep"), force=cfg["force"], mode=cfg["mode"],
                                     recipients=recipients) if rotate else
                        ArchiveWriter(cfg["output"], force=cfg["force"], mode=cfg["mode"], recipients=recipients))
        try:
            self.sink: SegmentSink | None = SegmentSink(
                self.archive, cfg["segment_bytes"], cfg["segment_seconds"], on_error=self._failed,
                spool_dir=cfg["spool_dir"], carry=rotate)
        except BaseException:
            self.archive.discard()
            raise
        self._bytes = self._size = 0

    def send(self, obj: dict) -> None:
        with self._lock:
            try:
                self._out.write(wp.reply(obj))
            except OSError:
                pass   # root is gone: stdin ends next, and end() keeps what was written

    def _failed(self, e: BaseException) -> None:
        self.send({"failed": getattr(e, "strerror", None) or str(e), "errno": getattr(e, "errno", None) or 0})

    def _on_sink(self, fn):
        """fn on the sink's thread, after the tables queued before; None if it failed (reported)."""
        try:
            return self.sink.call(fn)
        except Exception as e:   # noqa: BLE001 - reported to root, which stops the capture
            self._failed(e)
            return None

    def _close_sink(self) -> None:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.close()

    def handle(self, op: bytes, name: str, payload: bytes) -> None:
        if op == wp.ADD_BYTES:
            try:
                self.archive.add_bytes(name, payload)
            except OSError as e:
                self._failed(e)
        elif op == wp.TABLE and self.sink is not None:
            area, _, kind = name.partition("/")
            self.sink.put_table(kind, wp.read_table(payload), area=area)
        elif op == wp.END_PART and self.sink is not None:
            self.send({"part_summary": self._on_sink(self.sink.end_part)})
        elif op == wp.NEXT_PART and self.sink is not None:
            sink = self.sink
            self.send({"next_part": self._on_sink(lambda: sink.start_part(None, payload))})
        elif op == wp.CLOSE_SINK:
            sink = self.sink
            self._close_sink()
            self.send({"sink": {"segments": sink.segments if sink else [],
                                "rows_written": sink.rows_written if sink else {},
                                "bytes_written": sink.bytes_written if sink else 0}})
        elif op == wp.CLOSE:
            self._close_sink()
            try:
                self.send({"closed": str(self.archive.close())})
            except (OSError, UetraceError) as e:
                kept = self.archive.abandon()
                self.send({"close_failed": getattr(e, "strerror", None) or str(e),
                           "errno": getattr(e, "errno", None) or 0, "kept": str(kept)})
        elif op == wp.DISCARD:
            self._close_sink()
            self.archive.discard()
            self.send({"discarded": str(self.archive.partial)})
        elif op == wp.ABANDON:
            self._close_sink()
            self.send({"abandoned": str(self.archive.abandon())})
        if self.sink is not None:
            # What --max-size compares, kept current in root within 64 KiB (not a message per table).
            size = self.sink.size_so_far()
            if self.sink.bytes_written != self._bytes or abs(size - self._size) >= 1 << 16:
                self._bytes, self._size = self.sink.bytes_written, size
                self.send({"bytes": self._bytes, "size": size})

    def end(self) -> None:
        """stdin ended: root is gone or done. Whatever was not closed is left as NAME.partial."""
        self._close_sink()
        if not self.archive.closed:
            self.archive.abandon()


def _read_exact(fh, n: int) -> bytes | None:
    data = fh.read(n)
    return data if len(data) == n else None


def main(argv: list[str]) -> int:
    # SIGTTOU: in a session of its own, a write to the terminal (stty tostop) must not stop it.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGXFSZ, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)   # stray prints must not corrupt the replies
    inp = os.fdopen(0, "rb")
    try:
        cfg = json.loads(argv[1])
        drop_to(WriterUser(cfg["uid"], cfg["gid"], cfg["user"]))
        writer = Writer(cfg, out)
    except UetraceError as e:
        out.write(wp.reply({"fatal": str(e), "exit_code": e.exit_code}))
        return 2
    except OSError as e:   # a folder on the way the user may not search
        out.write(wp.reply({"fatal": f"{e.filename or cfg.get('output')}: {e.strerror or e}", "exit_code": 2}))
        return 2
    except Exception as e:   # noqa: BLE001 - reported to root as one line
        out.write(wp.reply({"fatal": f"{type(e).__name__}: {e}", "exit_code": 1}))
        return 1
    writer.send({"ready": str(writer.archive.partial), "pid": os.getpid(), "uid": os.getuid()})
    while True:
        head = _read_exact(inp, wp.HEADER.size)
        if head is None:
            break
        op, name_len, size = wp.HEADER.unpack(head)
        name = _read_exact(inp, name_len) if name_len <= wp.MAX_NAME else None
        payload = _read_exact(inp, size)
        if name is None or payload is None:
            break
        try:
            writer.handle(op, name.decode(), payload)
        except Exception as e:   # noqa: BLE001 - a table that would not encode; root stops the capture
            writer.send({"failed": f"{type(e).__name__}: {e}", "errno": 0})
        if op in (wp.CLOSE, wp.DISCARD, wp.ABANDON):
            break
    writer.end()
    return 0


if __name__ == "__main__":
    sys.exit(main([str(Path(sys.argv[0]))] + sys.argv[1:]))
