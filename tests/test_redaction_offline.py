"""`trace redact` without a kernel: an archive written by the capture's own sink (no redaction) from
hand-made tables, redacted by the CLI; and the previous format's archive, which it must copy whole."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pyarrow as pa
from archive_text import find_secrets
from helpers import trace_cmd

from uetrace.archive_format import MANIFEST
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.manifest import base_manifest
from uetrace.capture.segments import SegmentSink

DATA = Path(__file__).parent / "data" / "format1"
SECRETS = ["Zqbearer1", "Zqcookie2", "Zqquery3", "Zqpass4", "Zqsplit5"]


def _payloads(rows: list[bytes]) -> pa.Table:
    n = len(rows)
    return pa.table({"ts_enter": pa.array(range(n), pa.uint64()), "sock_id": pa.array([9] * n, pa.uint64()),
                     "pid": pa.array([7] * n, pa.uint32()), "fd": pa.array([3] * n, pa.int32()),
                     "direction": pa.array([0] * n, pa.uint8()), "bytes": pa.array([len(r) for r in rows], pa.int64()),
                     "captured": pa.array([len(r) for r in rows], pa.uint32()),
                     "payload": pa.array(rows, pa.binary()).cast(pa.binary_view())})


def _archive(path: Path) -> None:
    """Two sock_data segments (the Authorization name cut across them) and a processes table."""
    out = ArchiveWriter(path)
    manifest = base_manifest({"redact": False}, ["trace", "capture"])
    manifest["redaction"] = {"enabled": False}
    out.add_bytes(MANIFEST, json.dumps(manifest).encode())
    sink = SegmentSink(out, 1, 60.0, spool_dir=path.parent)   # one segment per table put
    sink.put_table("sock_data", _payloads([b"GET /a?token=Zqquery3 HTTP/1.1\r\nCookie: s=Zqcookie2\r\nAuthori"]))
    # the first segment ends here: the header goes on in the next one
    sink.put_table("sock_data", _payloads([b"zation: Bearer Zqbearer1\r\nX-Session: Zqsplit5\r\n\r\n"]))
    sink.put_table("processes", pa.table({"pid": pa.array([7], pa.uint32()),
                                          "cmdline": ["server --db-password=Zqpass4 --port 80"]}), area="symbols")
    sink.close()
    manifest.update(complete=True, segments=sink.segments)
    out.add_bytes(MANIFEST, json.dumps(manifest).encode())
    out.close()


def test_redact_masks_every_secret_and_keeps_the_rest(tmp_path):
    src, dst = tmp_path / "raw.tar.zst", tmp_path / "shared.tar.zst"
    _archive(src)
    assert {s for _, s in find_secrets(src, SECRETS)} == set(SECRETS)
    res = trace_cmd("redact", str(src), "-o", str(dst), check=True)
    assert "3 segments redacted" in res.stderr, res.stderr
    assert find_secrets(dst, SECRETS) == []
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o600
    m = json.loads(trace_cmd("info", "--json", "--strict", str(dst), check=True).stdout)
    assert m["redaction"]["masked"] == {"processes": 1, "sock_data": 4}
    assert all(len(s["sha256"]) == 64 for s in m["segments"]) and len(m["segments"]) == 3
    assert sum(s["rows"] for s in m["segments"] if s["kind"] == "sock_data") == 2


def test_keep_header_and_redact_header(tmp_path):
    src, dst = tmp_path / "raw.tar.zst", tmp_path / "kept.tar.zst"
    _archive(src)
    trace_cmd("redact", str(src), "-o", str(dst), "--keep-header", "Cookie", check=True)
    assert {s for _, s in find_secrets(dst, SECRETS)} == {"Zqcookie2"}


def test_format1_archive_is_copied_and_still_reads(tmp_path):
    (src,) = DATA.glob("*.tar.zst")
    dst = tmp_path / "copy.tar.zst"
    trace_cmd("redact", str(src), "-o", str(dst), check=True)
    got = json.loads(trace_cmd("requests", str(dst), "--json", check=True).stdout)
    want = json.loads(trace_cmd("requests", str(src), "--json", check=True).stdout)
    assert [(r["method"], r["path"], r["status"]) for r in got] == [(r["method"], r["path"], r["status"]) for r in want]
    assert trace_cmd("info", "--strict", str(dst)).returncode == 0


def test_bad_input_is_one_line(tmp_path):
    (src,) = DATA.glob("*.tar.zst")
    for args in (["redact", str(tmp_path / "missing.tar.zst"), "-o", str(tmp_path / "x.tar.zst")],
                 ["redact", str(src), "-o", str(src)]):
        res = trace_cmd(*args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    out = tmp_path / "y.tar.zst"
    out.write_bytes(b"keep")
    res = trace_cmd("redact", str(src), "-o", str(out))
    assert res.returncode != 0 and out.read_bytes() == b"keep" and "--force" in res.stderr
    trace_cmd("redact", str(src), "-o", str(out), "--force", check=True)
    assert out.read_bytes() != b"keep"


def test_info_says_what_redaction_an_archive_had(tmp_path):
    from uetrace.analyze.manifest_info import ManifestInfo

    src, dst = tmp_path / "raw.tar.zst", tmp_path / "shared.tar.zst"
    _archive(src)
    trace_cmd("redact", str(src), "-o", str(dst), check=True)
    assert "redaction: off (captured with --no-redact" in trace_cmd("info", str(src), check=True).stdout
    out = trace_cmd("info", str(dst), check=True).stdout
    assert "redaction: on by trace redact, 1 in processes, 4 in sock_data masked" in out
    for bad in (None, 3, {"enabled": "yes"}, {"enabled": True, "masked": [1]}, {"enabled": True, "masked": {"x": -1}}):
        assert ManifestInfo({"redaction": bad}).redaction_text.startswith("redaction: ")
