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

With recipients (--encrypt-to) the whole stream is age-encrypted on its way to the file
(uetrace/encryption.py): nothing in plaintext reaches the disk. A ciphertext cannot be cut back
to the end of a member, so there a failed write ends the archive: NAME.partial keeps what was
sealed before it.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import zstandard

from uetrace.encryption import EncryptingWriter
from uetrace.output_files import DEFAULT_MODE, OutputFile, partial_path

BLOCK = tarfile.BLOCKSIZE


class ArchiveWriter:
    """Thread-safe. `path` is the final name; refused if it exists unless `force`."""

    def __init__(self, path: str | Path, level: int = 3, *, force: bool = False, mode: int = DEFAULT_MODE,
                 recipients: list | None = None):
        """recipients: age X25519 recipients (uetrace.encryption.parse_recipient) to encrypt to."""
        self.path = Path(path)
        self._out = OutputFile(self.path, force=force, mode=mode, temp=partial_path(self.path))
        self.partial = self._out.path
        self._crypt = EncryptingWriter(self._out.write, recipients) if recipients else None
        self._fh = self._crypt or _FdWriter(self._out)
        self._broken: BaseException | None = None   # an encrypted stream after a failed write
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
            if self._broken is not None:
                raise self._broken
            self._append(lambda w: _write_member(w, info, src, size, name))
            self.members.append(name)

    def _append(self, write) -> None:
        try:
            with self._cctx.stream_writer(self._fh, closefd=False) as w:
                write(w)
            os.fsync(self._out.fd)
        except BaseException as e:
            self._cut(e)
            raise
        self._good = os.lseek(self._out.fd, 0, os.SEEK_CUR)

    def _cut(self, why: BaseException) -> None:
        """Drop a member that was not finished: readers stop at a broken frame, and the
        space goes back (after ENOSPC, the final manifest may then fit)."""
        if self._crypt is not None:
            self._broken = why if isinstance(why, OSError) else OSError(str(why))
            return
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
                if self._broken is not None:
                    raise self._broken
                self._append(lambda w: w.write(b"\0" * (2 * BLOCK)))
                if self._crypt is not None:
                    self._crypt.close()   # seal age's last chunk
            except BaseException:
                self.closed = True
                self._stop_crypt()
                self._out.abandon()
                raise
            self.closed = True
            return self._out.commit()

    def discard(self) -> None:
        """A capture that failed before recording anything: remove the file."""
        with self._lock:
            self.closed = True
            self._stop_crypt()
            self._out.discard()

    def abandon(self) -> Path:
        """Stop writing and leave NAME.partial as it is; returns its path."""
        with self._lock:
            self.closed = True
            self._stop_crypt()
            return self._out.abandon()

    def _stop_crypt(self) -> None:
        if self._crypt is not None:
            try:
                self._crypt.close()   # what it holds is sealed: a partial archive keeps it
            except OSError:
                pass


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
