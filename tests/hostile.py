"""Building hostile archives from a valid one, and running the reader as an attacker would want it
run: a real `trace` process, bounded in memory (RLIMIT_AS), file size (RLIMIT_FSIZE) and time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

BASE = Path(__file__).parent / "data" / "format1" / "http_keepalive.tar.zst"
MEMORY_LIMIT = 1536 << 20
FILE_LIMIT = 256 << 20
TIME_LIMIT = 60.0


def base_members() -> list[tuple[str, bytes]]:
    """The members of the valid base archive in order (both manifests included)."""
    reader = zstandard.ZstdDecompressor().stream_reader(BASE.read_bytes(), read_across_frames=True)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def final_manifest(members: list[tuple[str, bytes]]) -> dict:
    return json.loads([d for n, d in members if n == "manifest.json"][-1])


def reseal(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The members with the final manifest listing every segment as it now is (sha256, size): an
    archive crafted with care, that the sha256 check does not flag."""
    manifest = final_manifest(members)
    manifest["segments"] = [{"member": n, "kind": n.split("/")[1], "rows": 1, "bytes": len(d),
                             "sha256": hashlib.sha256(d).hexdigest()}
                            for n, d in members if n.endswith(".parquet")]
    last = max(i for i, (n, _) in enumerate(members) if n == "manifest.json")
    out = list(members)
    out[last] = ("manifest.json", json.dumps(manifest).encode())
    return out


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member_blocks(members: list[tuple[str, bytes]]) -> bytes:
    """Tar members without the end-of-archive blocks (more may follow), as the capture writes them."""
    out = []
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += [info.tobuf(format=tarfile.PAX_FORMAT), data, bytes(-len(data) % tarfile.BLOCKSIZE)]
    return b"".join(out)


def write_archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(zstandard.ZstdCompressor().compress(tar_bytes(members)))
    return path


def replace(members: list[tuple[str, bytes]], name: str, data: bytes) -> list[tuple[str, bytes]]:
    assert any(n == name for n, _ in members), name
    return [(n, data if n == name else d) for n, d in members]


def parquet_bytes(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def member_table(members: list[tuple[str, bytes]], name: str) -> pa.Table:
    return pq.read_table(io.BytesIO(dict(members)[name]))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def run_limited(*args: str, cwd: Path, env: dict | None = None, timeout: float = TIME_LIMIT) -> Run:
    """`trace ARGS` in `cwd` under the memory, file-size and time bounds, with a TMPDIR of its own
    that must be empty again when it exits (the extracted archive removed, nothing left over)."""
    tmpdir = Path(tempfile.mkdtemp(prefix="uetrace-tmpdir-"))
    env = {**(os.environ if env is None else env), "TMPDIR": str(tmpdir)}
    t0 = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "uetrace", *args], capture_output=True, text=True, cwd=cwd,
                             timeout=timeout, preexec_fn=_limits, env=env, errors="replace")
        left = [str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*")]
        assert not left, f"left in TMPDIR: {left[:5]}"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return Run(res.returncode, res.stdout, res.stderr, time.monotonic() - t0)


def assert_one_line_error(run: Run, *words: str) -> None:
    """Exit code 2 and one line on stderr (after the reader's warnings), naming what was refused."""
    assert run.code == 2, (run.code, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    lines = run.err_lines
    assert lines and lines[-1].startswith("trace: error: "), run.stderr[-2000:]
    assert all(line.startswith("warning: ") for line in lines[:-1]), run.stderr[-2000:]
    for w in words:
        assert w in lines[-1], lines[-1]
