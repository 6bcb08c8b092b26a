"""A tar.zst archive written as the capture goes.

Each member is its own zstd frame holding one tar header, the data and its
padding, appended and flushed to disk at once: a capture killed at any moment
leaves a file that decompresses, frame by frame, up to its last finished
member. close() appends the tar end-of-archive blocks.

The archive is written as NAME.partial and renamed to NAME by close()
(uetrace/output_files.py: created O_EXCL|O_NOFOLLOW, 0600 because captures hold
payload bytes): a killed capture leaves NAME.partial. A member whose write fails
(ENOSPC, EIO, EFBIG) is cut off again, so the file stays a valid prefix that
holds every member finished before.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import zstandard

from uetrace.output_files import DEFAULT_MODE, OutputFile, partial_path

BLOCK = tarfile.BLOCKSIZE


class ArchiveWriter:
    """Thread-safe. `path` is the final name; refused if it exists unless `force`."""

    def __init__(self, path: str | Path, level: int = 3, *, force: bool = False, mode: int = DEFAULT_MODE):
        self.path = Path(path)
        self._out = OutputFile(self.path, force=force, mode=mode, temp=partial_path(self.path))
        self.partial = self._out.path
        self._fh = _FdWriter(self._out)
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._lock = threading.Lock()
        self._good = 0          # file size up to the end of the last finished member
        self.members: list[str] = []
        self.closed = False

    @property
    def size(self) -> int:
        """Bytes of the finished members on disk."""
        return self._good

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_stream(name, io.BytesIO(data), len(data))

    def add_file(self, name: str, path: str | Path) -> None:
        size = os.path.getsize(path)
        with open(path, "rb") as src:
            self.add_stream(name, src, size)

    def add_stream(self, name: str, src: io.BufferedIOBase, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(time.time()), 0o600
        with self._lock:
            if self.closed:
                raise OSError(f"archive {self.partial} is closed")
            self._append(lambda w: _write_member(w, info, src, size, name))
            self.members.append(name)

    def _append(self, write) -> None:
        try:
            with self._cctx.stream_writer(self._fh, closefd=False) as w:
                write(w)
            os.fsync(self._out.fd)
        except BaseException:
            self._cut()
            raise
        self._good = os.lseek(self._out.fd, 0, os.SEEK_CUR)

    def _cut(self) -> None:
        """Drop a member that was not finished: readers stop at a broken frame, and the
        space goes back (after ENOSPC, the final manifest may then fit)."""
        try:
            os.ftruncate(self._out.fd, self._good)
            os.lseek(self._out.fd, self._good, os.SEEK_SET)
        except OSError:
            pass

    def close(self) -> Path:
        """End the tar, fsync and rename NAME.partial to NAME; returns NAME. On an error the
        file is left as NAME.partial (every finished member kept) and the error raised."""
        with self._lock:
            if self.closed:
                return self.path
            try:
                self._append(lambda w: w.write(b"\0" * (2 * BLOCK)))
            except BaseException:
                self.closed = True
                self._out.abandon()
                raise
            self.closed = True
            return self._out.commit()

    def discard(self) -> None:
        """A capture that failed before recording anything: remove the file."""
        with self._lock:
            self.closed = True
            self._out.discard()

    def abandon(self) -> Path:
        """Stop writing and leave NAME.partial as it is; returns its path."""
        with self._lock:
            self.closed = True
            return self._out.abandon()


class _FdWriter:
    """What zstandard writes its frames to: straight to the file descriptor, no buffer that
    could hold bytes of a failed member and write them later."""

    def __init__(self, out: OutputFile):
        self._out = out

    def write(self, data) -> int:
        return self._out.write(data)


def _write_member(w, info: tarfile.TarInfo, src: io.BufferedIOBase, size: int, name: str) -> None:
    w.write(info.tobuf(format=tarfile.PAX_FORMAT))
    copied = 0
    while chunk := src.read(1 << 20):
        w.write(chunk)
        copied += len(chunk)
    if copied != size:
        raise OSError(f"archive member {name}: size changed while copying")
    w.write(b"\0" * _pad(size))


def _pad(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK
