"""The one way uetrace creates a file it was asked to write (archive, pcapng, SVG, ...).

A file is written under a temporary name beside its target and renamed into place only
once complete, so that the target is never a half-written file and an existing target
is untouched until then:

- the temporary file is created with O_CREAT|O_EXCL|O_NOFOLLOW: a symlink or a file an
  attacker planted at that name is never opened, let alone followed or truncated;
- mode 0600 unless the caller asks otherwise (captures hold payload bytes, exports and
  flame graphs hold command names and addresses), whatever the umask;
- an existing target is refused (BadInputError, exit 2) unless `force`; with `force`,
  rename(2) replaces the target's directory entry, so a symlink there is replaced,
  never followed;
- commit() fsyncs the file, then links it in (without `force`: link(2) fails if the
  target appeared meanwhile, no race window) and fsyncs the folder.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from uetrace.errors import BadInputError, UetraceError

DEFAULT_MODE = 0o600
PARTIAL_SUFFIX = ".partial"


def partial_path(target: str | Path) -> Path:
    """Where a capture writes until it ends: NAME.partial (a killed capture leaves it)."""
    target = Path(target)
    return target.with_name(target.name + PARTIAL_SUFFIX)


def parse_mode(text: str) -> int:
    """An octal permission mode as users type it (600, 0640, 0o644); no setuid/setgid/sticky bits."""
    try:
        mode = int(text.removeprefix("0o"), 8)
    except ValueError:
        raise BadInputError(f"mode {text!r}: not an octal number such as 0600") from None
    if not 0 <= mode <= 0o777:
        raise BadInputError(f"mode {text!r}: only permission bits (at most 0777)")
    return mode


def check_target(target: str | Path, force: bool = False) -> None:
    """Refuse a target that exists (as anything, a dangling symlink too) unless `force`,
    and one whose folder does not exist. Cheap: callers may run it before costly work."""
    target = Path(target)
    folder = target.parent
    if not folder.is_dir():
        raise BadInputError(f"output folder {folder} does not exist")
    if os.path.lexists(target):
        if not force:
            raise BadInputError(f"{target} exists; use --force to replace it")
        if os.path.isdir(target) and not os.path.islink(target):
            raise BadInputError(f"{target} is a folder")


class OutputFile:
    """An output being written. Use as a context manager (commit on success, discard on an
    exception) or call commit() / discard() / abandon() once. Not thread-safe."""

    def __init__(self, target: str | Path, *, force: bool = False, mode: int = DEFAULT_MODE,
                 temp: str | Path | None = None):
        self.target = Path(target)
        self.force = force
        check_target(self.target, force)
        given = temp is not None
        self.path = Path(temp) if given else self.target.with_name(
            f".{self.target.name}.{secrets.token_hex(4)}.tmp")
        self.fd = self._create(self.path, mode, replace=given and force)
        self.done = False

    def _create(self, path: Path, mode: int, replace: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if replace and os.path.lexists(path):
                os.unlink(path)   # unlink does not follow a symlink
            fd = os.open(path, flags, mode)
        except FileExistsError:
            raise BadInputError(f"{path} exists (left by a capture that was killed?); remove it, "
                                "or use --force") from None
        except OSError as e:
            raise BadInputError(f"create {path}: {e.strerror}") from None
        try:
            os.fchmod(fd, mode)   # the umask applies to O_CREAT's mode
        except OSError:
            os.close(fd)
            raise
        return fd

    def commit(self) -> Path:
        """fsync, close and move into place; returns the target."""
        if self.fd >= 0 and not self._still_ours():
            self.abandon()   # what is at the name now is not ours to remove
            raise UetraceError(f"{self.path} was removed or replaced while writing (another run with "
                               "--force?): output lost")
        self._close(sync=True)
        try:
            self._place()
        except OSError as e:
            raise UetraceError(f"rename {self.path} to {self.target}: {e.strerror} (the output is kept "
                               f"as {self.path})") from None
        self.done = True
        return self.target

    def _place(self) -> None:
        if self.force:
            os.rename(self.path, self.target)
        else:
            try:
                os.link(self.path, self.target, follow_symlinks=False)
            except FileExistsError:
                raise UetraceError(f"{self.target} appeared while writing; the output is kept as "
                                   f"{self.path}") from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
                    raise
                # No hard links here (vfat, some FUSE): a check and a rename, which can race.
                if os.path.lexists(self.target):
                    raise UetraceError(f"{self.target} appeared while writing; the output is kept as "
                                       f"{self.path}") from None
                os.rename(self.path, self.target)
            else:
                os.unlink(self.path)
        _fsync_folder(self.target.parent)

    def _still_ours(self) -> bool:
        """The temporary name still names the file written: linking or renaming by name would
        otherwise move someone else's file into place."""
        try:
            st, mine = os.lstat(self.path), os.fstat(self.fd)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def discard(self) -> None:
        """Close and remove the temporary file: nothing is left behind."""
        self._close(sync=False)
        if not self.done:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.done = True

    def abandon(self) -> Path:
        """Close and leave the temporary file where it is (what could be written is kept)."""
        self._close(sync=False)
        self.done = True
        return self.path

    def _close(self, sync: bool) -> None:
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, data: bytes) -> int:
        """Write all of `data` (looping over short writes)."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_output(target: str | Path, data: bytes | str, *, force: bool = False, mode: int = DEFAULT_MODE) -> Path:
    """Write a whole output at once (SVG, folded stacks, JSON)."""
    with OutputFile(target, force=force, mode=mode) as out:
        out.write(data.encode() if isinstance(data, str) else data)
    return out.target


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some filesystems refuse fsync on a folder; the rename itself is done
    finally:
        os.close(fd)
