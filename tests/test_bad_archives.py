"""Untrusted input: every broken archive gives one line on stderr and exit code 2."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
import zstandard
from helpers import trace_cmd

from uetrace.analyze.archive import extract
from uetrace.archive_format import FORMAT_VERSION
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.errors import BadInputError


def manifest(**kw) -> bytes:
    m = {"tool": "uetrace", "format_version": FORMAT_VERSION, "complete": True, "tracers": {}, "segments": []}
    m.update(kw)
    return json.dumps(m).encode()


def tar_zst(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def good_archive(path) -> None:
    w = ArchiveWriter(path)
    w.add_bytes("manifest.json", manifest(complete=False))
    segment = b"not really parquet but a member"
    w.add_bytes("events/x/000001.parquet", segment)
    w.add_bytes("manifest.json", manifest(segments=[{"member": "events/x/000001.parquet", "kind": "x", "rows": 1,
                                                     "bytes": len(segment),
                                                     "sha256": hashlib.sha256(segment).hexdigest()}]))
    w.close()


BAD = {
    "empty": lambda p: p.write_bytes(b""),
    "random": lambda p: p.write_bytes(os.urandom(4096)),
    "truncated-zstd": lambda p: p.write_bytes(tar_zst({"manifest.json": manifest()})[:20]),
    "dotdot-member": lambda p: p.write_bytes(tar_zst({"manifest.json": manifest(), "../evil": b"x"})),
    "absolute-member": lambda p: p.write_bytes(tar_zst({"manifest.json": manifest(), "/tmp/evil": b"x"})),
    "newer-format": lambda p: p.write_bytes(tar_zst({"manifest.json": manifest(format_version=FORMAT_VERSION + 1)})),
    "zstd-not-tar": lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(b"hello" * 1000)),
    "no-manifest": lambda p: p.write_bytes(tar_zst({"events/x/1.parquet": b"x"})),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["info", "analyze", "query"])
def test_bad_archive_one_line_exit_2(tmp_path, case, command):
    path = tmp_path / f"{case}.tar.zst"
    BAD[case](path)
    args = [command, str(path)] + (["SELECT 1"] if command == "query" else [])
    res = trace_cmd(*args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trace: error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path.parent / "evil").exists()


def test_missing_file_exit_2(tmp_path):
    res = trace_cmd("info", str(tmp_path / "nope.tar.zst"))
    assert res.returncode == 2 and "No such file" in res.stderr


def test_roundtrip_and_every_truncation_point(tmp_path):
    path = tmp_path / "good.tar.zst"
    good_archive(path)
    ex = extract(path)
    assert ex.manifest["complete"] and ex.warnings == [] and "events/x/000001.parquet" in ex.members
    ex.cleanup()
    data = path.read_bytes()
    # Cut anywhere after the first member: the reader keeps what finished and warns.
    first_frame_end = len(zstandard.ZstdCompressor().compress(b""))  # lower bound only
    for cut in range(first_frame_end, len(data), 37):
        p = tmp_path / "cut.tar.zst"
        p.write_bytes(data[:cut])
        try:
            ex = extract(p)
        except Exception as e:  # noqa: BLE001 - must be the one-line archive error
            assert type(e).__name__ == "ArchiveError", e
            continue
        assert ex.warnings, cut
        ex.cleanup()


def test_archive_is_created_private(tmp_path):
    path = tmp_path / "p.tar.zst"
    path.write_bytes(b"old")
    path.chmod(0o644)
    with pytest.raises(BadInputError, match="exists"):   # refused unless force (test_safe_output.py)
        ArchiveWriter(path)
    assert path.read_bytes() == b"old"
    w = ArchiveWriter(path, force=True)
    w.add_bytes("manifest.json", manifest())
    w.close()
    assert path.stat().st_mode & 0o777 == 0o600


# Every command that reads an archive runs the same prologue: the reader's warnings first, then one
# line when the archive lacks what the command reads.
READERS = {
    "analyze": ([], 0), "info": ([], 0), "query": (["SELECT 1"], 0), "requests": ([], 2), "flows": ([], 2),
    "deadlocks": ([], 2), "leaks": ([], 2), "flamegraph": (["-o", "-"], 2), "export": (["-o", "x.pcapng"], 2),
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_reading_commands_print_the_readers_warnings(tmp_path, command):
    path = tmp_path / "killed.tar.zst"
    path.write_bytes(tar_zst({"manifest.json": manifest(complete=False)}))  # the first manifest only
    args, code = READERS[command]
    res = trace_cmd(command, str(path), *args, cwd=tmp_path)
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("warning: the capture did not finish"), res.stderr
    if code:
        assert len(lines) == 2 and lines[1].startswith("trace: error: "), res.stderr
