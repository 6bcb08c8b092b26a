"""Opening an archive safely.

The archive is untrusted input: it may be truncated (capture killed), corrupt,
not an archive at all, of a newer format, or crafted (members with `..`,
absolute paths, links, devices, or a decompression bomb). Members are
extracted one by one into a private temporary folder after their names are
checked; a truncated stream keeps every finished member and says so.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from uetrace.archive_format import ALLOWED_TOP, FORMAT_VERSION, MANIFEST
from uetrace.errors import BadInputError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DEFAULT_MAX_BYTES = 64 << 30  # refuse to unpack more than this (decompression bomb guard)


class ArchiveError(BadInputError):
    """The file is not a readable uetrace archive (exit code 2)."""


@dataclass
class ExtractedArchive:
    root: Path
    manifest: dict
    members: list[str]
    warnings: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _safe_name(name: str) -> str:
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm.startswith("..") or "/../" in f"/{name}/" or "\\" in name or "\0" in name:
        raise ArchiveError(f"unsafe member path {name!r} in archive: refusing to extract")
    if norm.split("/")[0] not in ALLOWED_TOP:
        raise ArchiveError(f"unexpected member {name!r}: not a uetrace archive")
    return norm


def extract(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ExtractedArchive:
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise ArchiveError(f"open {path}: {e.strerror}") from None
    with fh:
        head = fh.read(4)
        if not head:
            raise ArchiveError(f"{path}: empty file, not a uetrace archive")
        if head != ZSTD_MAGIC:
            raise ArchiveError(f"{path}: not a uetrace archive (not zstd-compressed)")
        fh.seek(0)
        tmp = tempfile.TemporaryDirectory(prefix="uetrace-")
        root = Path(tmp.name)
        members: list[str] = []
        manifests: list[dict] = []
        warnings: list[str] = []
        total = 0
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for info in tar:
                    name = _safe_name(info.name)
                    if not info.isfile():
                        raise ArchiveError(f"unexpected member {info.name!r} (not a regular file)")
                    total += info.size
                    if total > max_bytes:
                        raise ArchiveError(f"{path}: unpacks to more than {max_bytes} bytes; refusing")
                    src = tar.extractfile(info)
                    data_path = root / name
                    data_path.parent.mkdir(parents=True, exist_ok=True)
                    part = data_path.with_name(data_path.name + ".part")
                    with open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
                    if part.stat().st_size != info.size:
                        part.unlink()
                        raise EOFError
                    if name == MANIFEST:
                        manifests.append(_parse_manifest(part, path))
                    part.replace(data_path)
                    members.append(name)
        except ArchiveError:
            tmp.cleanup()
            raise
        except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError) as e:
            if not manifests:
                tmp.cleanup()
                raise ArchiveError(f"{path}: corrupt or truncated archive ({_short(e)})") from None
            warnings.append(f"archive is truncated ({_short(e)}): the capture was cut short; "
                            f"reading the {len(members)} complete members")
        for part in root.rglob("*.part"):
            part.unlink()
    if not manifests:
        tmp.cleanup()
        raise ArchiveError(f"{path}: no manifest.json, not a uetrace archive")
    manifest = manifests[-1]
    if not manifest.get("complete") and not warnings:
        warnings.append("the capture did not finish (killed?): reading the segments it completed")
    return ExtractedArchive(root, manifest, members, warnings, tmp)


def _parse_manifest(p: Path, archive: Path) -> dict:
    try:
        manifest = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError(f"{archive}: manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("tool") != "uetrace":
        raise ArchiveError(f"{archive}: manifest.json is not a uetrace manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise ArchiveError(f"{archive}: manifest has no format version")
    if version > FORMAT_VERSION:
        raise ArchiveError(f"{archive}: archive format {version} is newer than this uetrace reads "
                           f"({FORMAT_VERSION}); upgrade uetrace")
    return manifest


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__



__all__ = ["ArchiveError", "ExtractedArchive", "extract"]
