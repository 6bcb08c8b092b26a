"""Opening an archive safely.

The archive is untrusted input: it may be truncated (capture killed), corrupt, not an archive at
all, of a newer format, or crafted: members with `..`, absolute paths, links or devices, table
names that are not names, decompression bombs, huge tar headers, a flood of members, a huge
manifest, segments altered after the capture. Members are read by a bounded tar reader
(tar_stream), checked by name against the layout of archive_format, and extracted one by one
into a private temporary folder; what they unpack to is bounded in total (ReadLimits); each
segment's sha256 is checked against the manifest. A truncated stream keeps every finished member
and says so. An age-encrypted archive (capture --encrypt-to) is decrypted on the fly with the
identity in ReadLimits (uetrace/encryption.py); its plaintext goes only to the private folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from uetrace.analyze.tar_stream import DEFAULT_MAX_HEADER, TarRefusedError, TarStream, TruncatedError
from uetrace.analyze.text import printable
from uetrace.archive_format import ALLOWED_TOP, FORMAT_VERSION, MANIFEST
from uetrace.encryption import AGE_MAGIC, DecryptingReader, is_encrypted, load_identities
from uetrace.errors import BadInputError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARTIAL_SUFFIX = ".partial"  # what a capture writes before renaming the finished archive into place
# What an archive may unpack to when no limit is given: EXPAND_RATIO times its size, at least
# EXPAND_FLOOR, at most EXPAND_CEILING. Segments are zstd Parquet, so a real archive unpacks to
# 1-3 times its size; a bomb unpacks to thousands of times.
EXPAND_RATIO = 64
# Tables decode to far more than their files hold: zstd Parquet of repetitive socket payloads (the same
# request and response prefixes over and over) measured 80 times (a 3.3 MB archive, 216 MB of payload),
# so what the tables may decode to is bounded at DECODE_RATIO times the archive's size instead.
DECODE_RATIO = 1024
EXPAND_FLOOR = 256 << 20
EXPAND_CEILING = 32 << 30
MAX_NAMED_SKIPS = 10  # warnings naming a skipped member; the rest are counted in one line
TABLE_NAME = re.compile(r"[a-z0-9_]{1,64}")
_SEGMENT_FILE = re.compile(r"[0-9]{1,12}\.parquet")


class ArchiveError(BadInputError):
    """The file is not a readable uetrace archive (exit code 2)."""


@dataclass(frozen=True)
class ReadLimits:
    """How much an archive may cost to open. `max_expand` None: derived from the archive's size."""

    max_expand: int | None = None
    strict: bool = False
    max_members: int = 20_000
    max_header: int = DEFAULT_MAX_HEADER
    max_json: int = 16 << 20  # manifest.json and each schema/<kind>.json
    identity: Path | None = None  # age key file for an encrypted archive (--identity)

    def expand_limit(self, archive_size: int) -> int:
        """What the members may unpack to."""
        if self.max_expand is not None:
            return self.max_expand
        return min(EXPAND_CEILING, max(EXPAND_FLOOR, EXPAND_RATIO * archive_size))

    def decode_limit(self, archive_size: int) -> int:
        """What the tables may decode to (estimated from Parquet metadata before any row is read)."""
        if self.max_expand is not None:
            return self.max_expand
        return min(EXPAND_CEILING, max(EXPAND_FLOOR, DECODE_RATIO * archive_size))


@dataclass
class ExtractedArchive:
    root: Path
    manifest: dict
    members: list[str]
    warnings: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = None
    limits: ReadLimits = ReadLimits()
    path: Path = Path()
    size: int = 0  # of the archive file: what limits.expand_limit() is relative to

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _safe_name(name: str) -> str:
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm.startswith("..") or "/../" in f"/{name}/" or "\\" in name or "\0" in name:
        raise ArchiveError(f"unsafe member path {printable(name)!r} in archive: refusing to extract")
    if norm.split("/")[0] not in ALLOWED_TOP:
        raise ArchiveError(f"unexpected member {printable(name)!r}: not a uetrace archive")
    return norm


def _well_formed(name: str) -> bool:
    """manifest.json, schema/<table>.json, events|symbols/<table>/<n>.parquet; table names are
    [a-z0-9_]+ because they become SQL view names."""
    parts = name.split("/")
    if parts == [MANIFEST]:
        return True
    if len(parts) == 2 and parts[0] == "schema":
        return parts[1].endswith(".json") and TABLE_NAME.fullmatch(parts[1][:-5]) is not None
    return (len(parts) == 3 and parts[0] in ("events", "symbols") and TABLE_NAME.fullmatch(parts[1]) is not None
            and _SEGMENT_FILE.fullmatch(parts[2]) is not None)


def partial_hint(path: Path) -> str:
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    return f" ({partial.name} exists: a capture that did not finish left it)" if partial.exists() else ""


def extract(path: str | Path, limits: ReadLimits | None = None) -> ExtractedArchive:
    path = Path(path)
    limits = limits or ReadLimits()
    try:
        fh = open(path, "rb")
    except OSError as e:
        hint = partial_hint(path) if isinstance(e, FileNotFoundError) else ""
        raise ArchiveError(f"open {path}: {e.strerror}{hint}") from None
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(len(AGE_MAGIC))
        except OSError as e:
            raise ArchiveError(f"read {path}: {e.strerror}") from None
        if not head:
            raise ArchiveError(f"{path}: empty file, not a uetrace archive")
        if is_encrypted(head):
            fh.seek(0)
            return _extract_encrypted(path, fh, size, limits)
        if head.startswith(b"-----BEGIN AGE"):
            raise ArchiveError(f"{path}: an ASCII-armored age file; uetrace reads binary ones (age -d -i KEY "
                               f"{path.name} > archive.tar.zst, then open that)")
        if head[:4] != ZSTD_MAGIC:
            raise ArchiveError(f"{path}: not a uetrace archive (not zstd-compressed)")
        fh.seek(0)
        tmp = tempfile.TemporaryDirectory(prefix="uetrace-")
        try:
            return _extract(path, fh, size, limits, tmp)
        except BaseException:
            tmp.cleanup()
            raise


def _extract_encrypted(path: Path, fh, size: int, limits: ReadLimits) -> ExtractedArchive:
    if limits.identity is None:
        raise ArchiveError(f"{path} is encrypted (age): give its key with --identity FILE or UETRACE_IDENTITY")
    identities = load_identities(limits.identity)
    with DecryptingReader(fh, identities) as plain:
        why = plain.peek_failure()
        if why is not None:
            raise ArchiveError(f"{path}: cannot decrypt with {limits.identity}: {_short(why)}") from None
        tmp = tempfile.TemporaryDirectory(prefix="uetrace-")
        try:
            ex = _extract(path, plain, size, limits, tmp)
        except BaseException:
            tmp.cleanup()
            raise
    if plain.error is not None and not any("truncated" in w for w in ex.warnings):
        ex.warnings.append(f"the encrypted archive is truncated or corrupt ({_short(plain.error)}): reading the "
                           f"{len(ex.members)} complete members")
    return ex


def _extract(path: Path, fh, size: int, limits: ReadLimits, tmp: tempfile.TemporaryDirectory) -> ExtractedArchive:
    root = Path(tmp.name)
    budget = limits.expand_limit(size)
    members: dict[str, None] = {}  # in archive order, each once
    made: set[str] = set()
    digests: dict[str, tuple[str, int]] = {}
    manifests: list[dict] = []
    warnings: list[str] = []
    total = count = skipped = 0
    # A frame may ask for any window size; zstd's default ceiling (128 MiB) bounds that memory, stated here.
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    reader = dctx.stream_reader(fh, read_across_frames=True)
    tar = TarStream(reader, limits.max_header)
    try:
        for member in tar:
            count += 1
            if count > limits.max_members:
                raise ArchiveError(f"{path}: more than {limits.max_members} members; refusing")
            name = _safe_name(member.name)
            total += member.size
            if total > budget:
                raise ArchiveError(f"{path}: unpacks to more than {budget:,} bytes; refusing (a decompression "
                                   "bomb? raise the limit with --max-expand or UETRACE_MAX_EXPAND)")
            if not _well_formed(name):
                skipped += 1
                if skipped <= MAX_NAMED_SKIPS:
                    warnings.append(f"skipped member {printable(name)!r}: not a name a uetrace archive uses")
                tar.skip_data()
                continue
            if name.endswith(".json") and member.size > limits.max_json:
                raise ArchiveError(f"{path}: {name} is {member.size:,} bytes (the limit is {limits.max_json:,}); "
                                   "refusing")
            parent = os.path.join(root, os.path.dirname(name))
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            # A member cut short is written to NAME.part and removed below: a later copy of a member
            # (the final manifest) must not be replaced by a truncated one.
            part = os.path.join(root, name + ".part")
            digest = hashlib.sha256()
            with open(part, "wb") as out:
                while chunk := tar.read_data():
                    digest.update(chunk)
                    out.write(chunk)
            if name == MANIFEST:
                manifests.append(_parse_manifest(Path(part), path))
            os.replace(part, os.path.join(root, name))
            digests[name] = (digest.hexdigest(), member.size)
            members.setdefault(name)
    except ArchiveError:
        raise
    except TarRefusedError as e:
        raise ArchiveError(f"{path}: {printable(str(e))}; refusing") from None
    except (zstandard.ZstdError, BadInputError, TruncatedError, EOFError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
            raise ArchiveError(f"{path}: cannot extract: {e.strerror}") from None
        if not manifests:
            raise ArchiveError(f"{path}: corrupt or truncated archive ({_short(e)})") from None
        warnings.append(f"archive is truncated or corrupt ({_short(e)}): the capture was cut short? "
                        f"reading the {len(members)} complete members")
    if skipped > MAX_NAMED_SKIPS:
        warnings.append(f"skipped {skipped - MAX_NAMED_SKIPS} more members with names a uetrace archive never uses")
    for part in root.rglob("*.part"):
        part.unlink()
    if not manifests:
        raise ArchiveError(f"{path}: no manifest.json, not a uetrace archive")
    manifest = manifests[-1]
    if path.name.endswith(PARTIAL_SUFFIX):
        warnings.insert(0, f"{path.name} is what a capture that did not finish left behind: it may be incomplete")
    if not manifest.get("complete") and not warnings:
        warnings.append("the capture did not finish (killed?): reading the segments it completed")
    problems = _verify(manifest, digests, limits.strict) if manifest.get("complete") else []
    if problems and limits.strict:
        raise ArchiveError(f"{path}: {problems[0]} (--strict)")
    warnings.extend(problems)
    return ExtractedArchive(root, manifest, list(members), warnings, tmp, limits, path, size)


def _verify(manifest: dict, digests: dict[str, tuple[str, int]], strict: bool) -> list[str]:
    """Each segment the final manifest lists against what was extracted: sha256 and size. A manifest
    without a segment list (hand-made archives, tests) has nothing to check against: only --strict
    minds. The list is no signature: whoever can alter a segment can alter the manifest too; it
    catches corruption and careless edits."""
    problems: list[str] = []
    listed = set()
    segments = manifest.get("segments")
    if not isinstance(segments, list):
        return ["the manifest lists no segments: nothing to verify"] if strict else []
    for seg in segments:
        if not isinstance(seg, dict) or not isinstance(seg.get("member"), str):
            continue
        member = seg["member"]
        listed.add(member)
        if member not in digests:
            problems.append(f"segment {printable(member)!r} listed in the manifest is missing from the archive")
            continue
        sha, size = digests[member]
        if seg.get("sha256") != sha or (isinstance(seg.get("bytes"), int) and seg["bytes"] != size):
            problems.append(f"segment {printable(member)!r} does not match the manifest's sha256: corrupt or altered")
    for member in digests:
        if member.endswith(".parquet") and member not in listed:
            problems.append(f"segment {printable(member)!r} is not listed in the manifest: unverified")
    return problems


def _parse_manifest(p: Path, archive: Path) -> dict:
    try:
        manifest = json.loads(p.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ArchiveError(f"{archive}: manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("tool") != "uetrace":
        raise ArchiveError(f"{archive}: manifest.json is not a uetrace manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArchiveError(f"{archive}: manifest has no format version")
    if version > FORMAT_VERSION:
        raise ArchiveError(f"{archive}: archive format {version} is newer than this uetrace reads "
                           f"({FORMAT_VERSION}); upgrade uetrace")
    return manifest


def _short(e: BaseException) -> str:
    return printable(str(e).splitlines()[0][:120]) if str(e) else type(e).__name__


__all__ = ["ArchiveError", "ExtractedArchive", "ReadLimits", "extract"]
