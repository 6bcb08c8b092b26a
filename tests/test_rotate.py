"""--rotate SIZE --keep N (issue 13 item 4): a capture under load rolls into numbered standalone
archives, the oldest deleted beyond N; each part opens on its own, names its own processes and
frames, and the offline commands read `run-*.tar.zst` as one capture whose rows are exactly what
the kept parts' manifests say. As root (in-process writer) and run for a user (the writer process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import duckdb
import pytest
import zstandard
from helpers import FIXTURES, trace_cmd, traversable

from uetrace.analyze.archive_db import open_archive_db
from uetrace.capture.parts import PartArchives, existing_parts, part_glob, part_path

NOBODY = 65534


def test_part_names_sort_and_glob(tmp_path):
    out = tmp_path / "run.tar.zst"
    assert part_path(out, 1).name == "run-000001.tar.zst"
    assert part_path(tmp_path / "cap", 12).name == "cap-000012"
    assert part_path(tmp_path / "x.bin", 3).name == "x-000003.bin"
    assert part_glob(out) == str(tmp_path / "run-*.tar.zst")
    names = [part_path(out, n).name for n in (1, 2, 10, 999)]
    assert sorted(names) == names
    for name in ("run-000001.tar.zst", "run-000002.tar.zst.partial", "run-1.tar.zst", "run-000003.tar"):
        (tmp_path / name).touch()
    assert [p.name for p in existing_parts(out)] == ["run-000001.tar.zst", "run-000002.tar.zst.partial"]


def test_part_archives_keep_and_replay_headers(tmp_path):
    """Without a kernel: parts are closed in turn, each with the schema members, and --keep 2 leaves
    the newest two, never more than two on disk."""
    parts = PartArchives(tmp_path / "run.tar.zst", keep=2)
    parts.add_bytes("manifest.json", b'{"n": 1}')
    parts.add_bytes("schema/sock_data.json", b"{}")
    seen = []
    for n in range(2, 5):
        closed, removed = parts.next_part(json.dumps({"n": n}).encode())
        seen.append((closed.name, [r.name for r in removed]))
        assert len(list(tmp_path.glob("run-*"))) <= 2
    parts.close()
    assert seen == [("run-000001.tar.zst", []), ("run-000002.tar.zst", ["run-000001.tar.zst"]),
                    ("run-000003.tar.zst", ["run-000002.tar.zst"])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-000003.tar.zst", "run-000004.tar.zst"]
    for n in (3, 4):
        with open(part_path(tmp_path / "run.tar.zst", n), "rb") as fh, \
                tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(fh), mode="r|") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        assert members == {"manifest.json": json.dumps({"n": n}).encode(), "schema/sock_data.json": b"{}"}


@pytest.mark.parametrize("args, message", [
    (["--keep", "3"], "--keep needs --rotate"),
    (["--rotate", "1M"], "a part must hold at least 2 MiB"),
    (["--rotate", "5M", "--keep", "0"], "keep at least 1 part"),
    (["--rotate", "5M", "--max-size", "4M"], "must be larger than --rotate"),
    (["--rotate", "5M", "--upload", "https://example.invalid/x"], "--upload sends one archive"),
])
def test_bad_combinations_exit_2(tmp_path, args, message):
    res = trace_cmd("capture", "-q", "-d", "1s", "-o", str(tmp_path / "run.tar.zst"), *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_earlier_parts_refused_without_force(kernel, tmp_path):
    out = tmp_path / "run.tar.zst"
    part_path(out, 4).write_bytes(b"an earlier capture's part")
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "--rotate", "5M", "-o", str(out))
    assert res.returncode == 2, res.stderr
    assert "run-000004.tar.zst exists" in res.stderr and "--force" in res.stderr
    assert part_path(out, 4).read_bytes() == b"an earlier capture's part"
    assert not part_path(out, 1).exists() and not Path(str(part_path(out, 1)) + ".partial").exists()


def _traffic(name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FIXTURES / "tcp_exchange.py"), "--rounds", "100000000",
                             "--size", "300", "--name", name], stdout=subprocess.DEVNULL)


def _capture_until_part(out: Path, number: int, args: list[str], env: dict | None = None,
                        timeout: float = 240) -> tuple[int, str]:
    """Run a capture with no duration; Ctrl-C (SIGINT) it once part `number` is being written."""
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-o", str(out), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + timeout
        target = Path(str(part_path(out, number)) + ".partial")
        while not target.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"part {number} never started: {sorted(os.listdir(out.parent))}"
            time.sleep(0.1)
        time.sleep(1.0)   # some records in it: the stop comes in the middle of a part
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _manifest(path: Path) -> dict:
    res = trace_cmd("info", str(path), "--json")
    assert res.returncode == 0, res.stderr   # each part opens on its own
    return json.loads(res.stdout)


def _check_set(folder: Path, out: Path, last: int, keep: int | None) -> list[dict]:
    """The parts left: numbered up to `last`, complete, one capture; returns their manifests."""
    left = sorted(folder.iterdir())
    assert not [p for p in left if p.name.endswith(".partial")], left
    parts = existing_parts(out)
    assert [p.name for p in parts] == [p.name for p in left]
    numbers = list(range(last - len(parts) + 1, last + 1))
    assert parts == [part_path(out, n) for n in numbers]
    if keep is not None:
        assert len(parts) == keep
    manifests = [_manifest(p) for p in parts]
    assert len({m["capture_id"] for m in manifests}) == 1
    for n, m in zip(numbers, manifests):
        assert m["complete"] and m["part"]["number"] == n
        assert m["stop_reason"] == ("signal" if n == last else "rotate")
        window = m["part"]["window"]
        assert window["start"]["monotonic_ns"] < window["end"]["monotonic_ns"]
    for a, b in zip(manifests, manifests[1:]):   # back to back: no gap between parts
        assert a["part"]["window"]["end"] == b["part"]["window"]["start"]
    return manifests


def _check_counts(out: Path, manifests: list[dict]) -> None:
    """The offline commands over the glob count exactly what the kept parts' manifests say."""
    pattern = part_glob(out)
    want_rows = sum(m["tracers"]["sock"]["kinds"]["sock_data"]["records"] for m in manifests)
    assert want_rows == sum(s["rows"] for m in manifests for s in m["segments"] if s["kind"] == "sock_data")
    assert want_rows > 10_000
    res = trace_cmd("query", pattern, "SELECT count(*) AS n FROM sock_data", "--format", "json", timeout=240)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["n"] == want_rows
    res = trace_cmd("analyze", pattern, "--json", timeout=240)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert len(got["per_capture"]) == 1   # the parts are one capture
    (summary,) = got["per_capture"].values()
    tracers = {t["tracer"]: t["records"] for t in summary["summary"]["tracers"]}
    for name in ("sock", "proc"):
        assert tracers[name] == sum(m["tracers"][name]["records"] for m in manifests), name


def test_rotate_keep_under_load(kernel, tmp_path):
    """Root (the archive written in process): --rotate 5M --keep 3 under loopback traffic, Ctrl-C in
    the middle of part 5. The stack tracer samples the same process: a middle part names its frames."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "run.tar.zst"
    traffic = _traffic("uerotate")
    try:
        rc, err = _capture_until_part(out, 5, ["-t", "sock,proc,stack", "--comm", "uerotate",
                                               "--rotate", "5M", "--keep", "3"])
    finally:
        traffic.kill()
        traffic.wait()
    assert rc == 0, err
    assert err.count("--keep 3: the oldest parts are deleted") == 1, err   # said once, not per part
    manifests = _check_set(folder, out, last=5, keep=3)
    for m in manifests[:-1]:   # a part ends near its size (the last one was cut by Ctrl-C)
        assert os.path.getsize(part_path(out, m["part"]["number"])) < 8 << 20
    assert all(os.stat(p).st_uid == 0 and os.stat(p).st_mode & 0o777 == 0o600 for p in existing_parts(out))
    _check_counts(out, manifests)
    # A middle part alone: its processes named, every stack id of its samples in its own stacks table,
    # and its frames symbolized from its own snapshot.
    middle = part_path(out, 4)
    with open_archive_db(middle) as db:
        assert db.warnings == []
        assert "uerotate" in db.process_names().values()
        assert db.query("SELECT count(*) FROM stack_sample")[0][0] > 0
        missing = db.query("""SELECT count(*) FROM stack_sample s WHERE s.ustack_id > 0 AND NOT EXISTS
                              (SELECT 1 FROM stacks t WHERE t.tracer = 'stack' AND t.stack_id = s.ustack_id)""")
        assert missing[0][0] == 0
        assert db.query("SELECT count(*) FROM elf_objects")[0][0] > 0
    res = trace_cmd("analyze", str(middle), timeout=240)
    assert res.returncode == 0, res.stderr
    assert "tcp_exchange.py" in res.stdout   # Python frames of the sampled process, named from this part
    # The Parquet dataset of the set: one capture, the symbols carried from part to part exported once.
    dataset = tmp_path / "dataset"
    res = trace_cmd("export", part_glob(out), "--format", "parquet", "-o", str(dataset), timeout=240)
    assert res.returncode == 0, res.stderr
    for table in ("sock_data", "processes", "mappings", "stacks"):
        res = trace_cmd("query", part_glob(out), f"SELECT count(*) AS n FROM {table}", "--format", "json")
        assert res.returncode == 0, res.stderr
        got = duckdb.sql(f"SELECT count(*) FROM read_parquet('{dataset}/{table}/*/*.parquet')").fetchall()[0][0]
        assert got == json.loads(res.stdout)[0]["n"] > 0, table


def test_rotate_as_user(kernel, tmp_path):
    """Run for a user (SUDO_UID): the writer process of that user rotates; its parts are the user's."""
    traversable(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    out = folder / "run.tar.zst"
    env = {**os.environ, "SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}
    traffic = _traffic("uerotuser")
    try:
        rc, err = _capture_until_part(out, 3, ["-t", "sock,proc", "--comm", "uerotuser", "--rotate", "3M"],
                                      env=env)
    finally:
        traffic.kill()
        traffic.wait()
    assert rc == 0, err
    assert "deleted" not in err
    manifests = _check_set(folder, out, last=3, keep=None)
    for p in existing_parts(out):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, NOBODY, 0o600), p
    assert all(m["writer"]["uid"] == NOBODY for m in manifests)
    for p in existing_parts(out)[:-1]:   # each full part near its size, none cut short by a stale size
        assert 1 << 20 < p.stat().st_size < 5 << 20, p
    _check_counts(out, manifests)


def test_rotate_encrypted(kernel, tmp_path):
    """--encrypt-to applies to every part: each is an age file that opens on its own with the key."""
    key = tmp_path / "key.txt"
    res = trace_cmd("keygen", "-o", str(key))
    assert res.returncode == 0, res.stderr
    recipient = res.stdout.strip().splitlines()[-1]
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "run.tar.zst.age"
    traffic = _traffic("uerotage")
    try:
        rc, err = _capture_until_part(out, 2, ["-t", "sock,proc", "--comm", "uerotage", "--rotate", "3M",
                                               "--encrypt-to", recipient])
    finally:
        traffic.kill()
        traffic.wait()
    assert rc == 0, err
    parts = existing_parts(out)
    assert [p.name for p in parts] == ["run-000001.tar.zst.age", "run-000002.tar.zst.age"]
    rows = 0
    for p in parts:
        assert p.read_bytes()[:21] == b"age-encryption.org/v1"
        res = trace_cmd("info", "--identity", str(key), str(p), "--json")
        assert res.returncode == 0, res.stderr
        rows += json.loads(res.stdout)["tracers"]["sock"]["kinds"]["sock_data"]["records"]
    res = trace_cmd("query", "--identity", str(key), part_glob(out), "SELECT count(*) AS n FROM sock_data",
                    "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["n"] == rows > 0


def test_max_size_bounds_all_parts(kernel, tmp_path):
    """--max-size with --rotate: the capture stops when all the parts together near it."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "run.tar.zst"
    traffic = _traffic("uerotmax")
    try:
        res = trace_cmd("capture", "-q", "-d", "120s", "-t", "sock", "--comm", "uerotmax", "--rotate", "3M",
                        "--max-size", "8M", "-o", str(out), timeout=180)
    finally:
        traffic.kill()
        traffic.wait()
    assert res.returncode == 0, res.stderr
    assert "stopped by max size" in res.stderr
    parts = existing_parts(out)
    assert len(parts) >= 3 and not any(p.name.endswith(".partial") for p in parts)
    assert sum(p.stat().st_size for p in parts) <= 8 << 20
    assert _manifest(parts[-1])["stop_reason"] == "max size"
