"""Archives encrypted at rest with age (https://age-encryption.org, X25519 recipients, via pyrage).

An encrypted archive is the plain tar.zst stream encrypted as one age file, so that
`age -d -i key.txt run.tar.zst.age > run.tar.zst` opens it as well as uetrace does. Both
directions stream through a pipe and a thread running pyrage's encrypt_io / decrypt_io: the
capture never writes plaintext to disk, and a reader never holds the whole archive in memory.

age seals the stream in 64 KiB chunks and marks the last one: an encrypted capture that was
killed leaves NAME.partial whose chunks up to the last full one decrypt (the readers keep the
members they hold and warn that the archive is truncated); what the age library held in its
current chunk is lost.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import BinaryIO

import pyrage

from uetrace.errors import BadInputError

AGE_MAGIC = b"age-encryption.org/"
SECRET_PREFIX = "AGE-SECRET-KEY-"


def parse_recipient(text: str) -> pyrage.x25519.Recipient:
    """An age X25519 recipient (age1...), as `--encrypt-to` takes it."""
    try:
        return pyrage.x25519.Recipient.from_str(text.strip())
    except Exception:
        raise BadInputError(f"--encrypt-to {text!r}: not an age X25519 recipient (age1...; "
                            "`trace keygen` makes one)") from None


def load_identities(path: str | Path) -> list[pyrage.x25519.Identity]:
    """The AGE-SECRET-KEY-1... lines of an age key file (as age-keygen and `trace keygen` write it)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(1 << 20)
    except OSError as e:
        raise BadInputError(f"identity {path}: {e.strerror}") from None
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(SECRET_PREFIX):
            try:
                found.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise BadInputError(f"identity {path}: a malformed {SECRET_PREFIX}... line") from None
    if not found:
        raise BadInputError(f"identity {path}: no {SECRET_PREFIX}... line (not an age key file)")
    return found


def new_key_pair() -> tuple[str, str]:
    """(key file text, recipient): the text is what age-keygen writes."""
    ident = pyrage.x25519.Identity.generate()
    public = str(ident.to_public())
    return f"# public key: {public}\n{ident}\n", public


def is_encrypted(head: bytes) -> bool:
    """`head`: the first bytes of a file (at least len(AGE_MAGIC))."""
    return head.startswith(AGE_MAGIC)


class _FdOut:
    """What pyrage writes ciphertext to: a writer function, no buffer of its own."""

    def __init__(self, write):
        self._write = write

    def write(self, data) -> int:
        self._write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class EncryptingWriter:
    """write() takes plaintext; ciphertext goes to `sink(bytes)` from a thread. close() seals the
    stream (age's last chunk); after an error in the sink, write() and close() raise it."""

    def __init__(self, sink, recipients: list) -> None:
        r, self._w = os.pipe()
        self.error: BaseException | None = None
        src = os.fdopen(r, "rb", buffering=0)

        def run() -> None:
            try:
                pyrage.encrypt_io(src, _FdOut(sink), recipients)
            except BaseException as e:
                self.error = e
            finally:
                src.close()   # a writer blocked on a full pipe gets EPIPE instead of waiting forever

        self._thread = threading.Thread(target=run, name="uetrace-encrypt", daemon=True)
        self._thread.start()

    def write(self, data) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._w, view):]
        except BrokenPipeError:
            self._thread.join()
            raise self._failure() from None
        return len(data)

    def close(self) -> None:
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
        self._thread.join()
        if self.error is not None:
            raise self._failure()

    def _failure(self) -> OSError:
        e = self.error
        if isinstance(e, OSError):
            return e
        # pyrage reports the sink's OSError as text ("OSError: [Errno 28] No space left on device")
        found = re.search(r"\[Errno (\d+)\]", str(e))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        return OSError(f"encrypt: {e or 'the encryption thread stopped'}")


class DecryptingReader:
    """A read-only stream of the plaintext of an age file. `error` holds what decryption raised
    (a wrong key fails before any byte; a truncated file after the chunks it holds)."""

    def __init__(self, src: BinaryIO, identities: list) -> None:
        r, w = os.pipe()
        self.error: BaseException | None = None
        self.produced = 0
        self._src = src
        out = os.fdopen(w, "wb", buffering=0)

        def run() -> None:
            try:
                pyrage.decrypt_io(src, _FdOut(self._forward(out)), identities)
            except BaseException as e:
                self.error = e
            finally:
                try:
                    out.close()
                except OSError:
                    pass

        self._in = os.fdopen(r, "rb")
        self._thread = threading.Thread(target=run, name="uetrace-decrypt", daemon=True)
        self._thread.start()

    def _forward(self, out):
        def write(data: bytes) -> None:
            self.produced += len(data)
            out.write(data)
        return write

    def read(self, n: int = -1) -> bytes:
        return self._in.read(n)

    def peek_failure(self) -> BaseException | None:
        """Wait for the first plaintext byte: None if there is one, else why not."""
        if self._in.peek(1):
            return None
        self._thread.join()
        return self.error or EOFError("empty")

    def close(self) -> None:
        self._in.close()   # the thread gets EPIPE and ends
        self._thread.join()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
