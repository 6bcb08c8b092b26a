"""A tar.zst archive written as the capture goes.

Each member is its own zstd frame holding one tar header, the data and its
padding, appended and flushed to disk at once: a capture killed at any moment
leaves a file that decompresses, frame by frame, up to its last finished
member. close() appends the tar end-of-archive blocks. The file is created
0600 because captures may hold secrets (payload bytes).
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

import zstandard

BLOCK = tarfile.BLOCKSIZE


class ArchiveWriter:
    def __init__(self, path: str | Path, level: int = 3):
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        self._fh = os.fdopen(fd, "wb")
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._lock = threading.Lock()
        self.members: list[str] = []
        self.closed = False

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
            with self._cctx.stream_writer(self._fh, closefd=False) as w:
                w.write(info.tobuf(format=tarfile.PAX_FORMAT))
                copied = 0
                while chunk := src.read(1 << 20):
                    w.write(chunk)
                    copied += len(chunk)
                if copied != size:
                    raise OSError(f"archive member {name}: size changed while copying")
                w.write(b"\0" * _pad(size))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.members.append(name)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self._fh.write(self._cctx.compress(b"\0" * (2 * BLOCK)))
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self.closed = True


def _pad(size: int) -> int:
    return (BLOCK - size % BLOCK) % BLOCK
