"""Output files (issue 11, findings 2, 6 and 9's file modes): created beside the target under a
temporary name with O_EXCL|O_NOFOLLOW, 0600 unless --mode, renamed into place when complete;
an existing target (a symlink too) refused unless --force, and never followed."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import trace_cmd, traversable

from uetrace.analyze.archive import ReadLimits, extract
from uetrace.analyze.archive_db import open_archive_db
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.manifest import base_manifest
from uetrace.errors import BadInputError, UetraceError
from uetrace.output_files import OutputFile, parse_mode, partial_path, write_output


@contextlib.contextmanager
def tmpfs(path, options: str):
    """A small filesystem of the test's own (full disk, read-only folder)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "uetrace-test", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


MANIFEST = json.dumps({**base_manifest({}, []), "complete": True}).encode()


def test_created_0600_whatever_the_umask(tmp_path):
    with umask(0):
        write_output(tmp_path / "a.svg", "<svg/>")
        write_output(tmp_path / "b.svg", b"x", mode=0o640)
    assert (tmp_path / "a.svg").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "b.svg").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svg", "b.svg"]   # no temporary file left


def test_existing_target_refused_unless_force(tmp_path):
    target = tmp_path / "out.svg"
    target.write_text("old")
    with pytest.raises(BadInputError, match="exists; use --force"):
        write_output(target, "new")
    assert target.read_text() == "old"
    write_output(target, "new", force=True)
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o600


def test_symlink_at_target_replaced_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o644)
    target = tmp_path / "out.svg"
    target.symlink_to(victim)
    with pytest.raises(BadInputError):
        write_output(target, "new")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadInputError):   # a dangling symlink exists too: O_CREAT would create its target
        write_output(tmp_path / "dangling", "new")
    assert not (tmp_path / "nowhere").exists()
    write_output(target, "new", force=True)
    assert not target.is_symlink() and target.read_text() == "new"
    assert victim.read_text() == "precious" and victim.stat().st_mode & 0o777 == 0o644


def test_symlink_at_temporary_name_never_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "run.tar.zst"
    partial_path(target).symlink_to(victim)
    with pytest.raises(BadInputError, match="exists"):
        ArchiveWriter(target)
    w = ArchiveWriter(target, force=True)   # the stale name is removed, not opened
    w.add_bytes("manifest.json", b"{}")
    w.close()
    assert victim.read_text() == "precious" and target.is_file() and not partial_path(target).exists()


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.pcapng"
    target.write_text("old")
    with pytest.raises(RuntimeError), OutputFile(target, force=True) as out:
        out.write(b"half")
        raise RuntimeError("export failed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.pcapng"]


def test_target_appearing_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out.svg"
    out = OutputFile(target)
    out.write(b"new")
    target.write_text("someone else's")
    with pytest.raises(UetraceError, match="appeared while writing"):
        out.commit()
    assert target.read_text() == "someone else's" and out.path.read_bytes() == b"new"


def test_temporary_file_replaced_meanwhile_is_not_moved_into_place(tmp_path):
    target = tmp_path / "run.tar.zst"
    first = OutputFile(target, temp=partial_path(target))
    first.write(b"first")
    second = OutputFile(target, force=True, temp=partial_path(target))   # removes the first's name
    second.write(b"second")
    with pytest.raises(UetraceError, match="replaced while writing"):
        first.commit()
    assert not target.exists()
    second.commit()
    assert target.read_bytes() == b"second"


def test_parse_mode():
    assert parse_mode("600") == parse_mode("0600") == parse_mode("0o600") == 0o600
    for bad in ("4755", "rw", "999", "-1"):
        with pytest.raises(BadInputError):
            parse_mode(bad)


def test_archive_renamed_at_close_and_partial_until_then(tmp_path):
    target = tmp_path / "run.tar.zst"
    w = ArchiveWriter(target)
    w.add_bytes("manifest.json", b"{}")
    assert partial_path(target).exists() and not target.exists()
    w.close()
    assert target.exists() and not partial_path(target).exists()
    assert target.stat().st_mode & 0o777 == 0o600


def test_archive_member_that_does_not_fit_is_cut(tmp_path):
    """ENOSPC in the middle of a member: the member is cut off again, the file stays an archive
    of the members before it, and closing it still works (the space came back)."""
    with tmpfs(tmp_path / "small", "size=256k") as small:
        target = small / "run.tar.zst"
        w = ArchiveWriter(target)
        w.add_bytes("manifest.json", MANIFEST)
        size = partial_path(target).stat().st_size
        with pytest.raises(OSError) as e:
            w.add_bytes("events/x/000001.parquet", os.urandom(1 << 20))
        assert e.value.errno == 28
        assert partial_path(target).stat().st_size == size
        w.add_bytes("events/x/000002.parquet", b"small")
        w.close()
        ex = extract(target)
        try:
            # The hand-made manifest lists no segment: the reader says they are unverified, nothing else.
            assert all("not listed in the manifest" in w for w in ex.warnings), ex.warnings
            assert "events/x/000002.parquet" in ex.members
            assert "events/x/000001.parquet" not in ex.members
        finally:
            ex.cleanup()


def test_flamegraph_output_refused_then_forced(tmp_path):
    """The commands that write files refuse an existing one before any work (the archive is not
    even read), and write 0600."""
    out = tmp_path / "f.svg"
    out.write_text("old")
    res = trace_cmd("flamegraph", str(tmp_path / "missing.tar.zst"), "-o", str(out))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"trace: error: {out} exists; use --force to replace it"], res.stderr
    res = trace_cmd("export", str(tmp_path / "missing.tar.zst"), "-o", str(out))
    assert res.returncode == 2 and "exists; use --force" in res.stderr
    res = trace_cmd("flamegraph", str(tmp_path / "missing.tar.zst"), "-o", str(tmp_path / "nodir" / "x.svg"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr
    assert out.read_text() == "old"


# ---- captures ------------------------------------------------------------------------------

def capture(out, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return trace_cmd("capture", "-q", "-d", "1s", "-o", str(out), *args, timeout=timeout)


def spools(folder) -> list[str]:
    return glob.glob(str(folder / "uetrace-seg-*"))


def test_capture_refuses_existing_output(kernel, tmp_path):
    out = tmp_path / "run.tar.zst"
    out.write_bytes(b"an archive from yesterday")
    res = capture(out, "-t", "proc")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"trace: error: {out} exists; use --force to replace it"], res.stderr
    assert out.read_bytes() == b"an archive from yesterday"
    assert os.listdir(tmp_path) == ["run.tar.zst"]


def test_capture_force_replaces_symlink_not_its_target(kernel, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"root's file")
    victim.chmod(0o644)
    out = tmp_path / "run.tar.zst"
    out.symlink_to(victim)
    assert capture(out, "-t", "proc").returncode == 2
    res = capture(out, "-t", "proc", "--force", "--mode", "0640")
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == b"root's file" and victim.stat().st_mode & 0o777 == 0o644
    assert not out.is_symlink() and out.stat().st_mode & 0o777 == 0o640
    ex = extract(out)
    try:
        assert ex.manifest["complete"] and ex.warnings == []
    finally:
        ex.cleanup()


def test_failed_capture_leaves_existing_archive_untouched(kernel, tmp_path):
    """-t lock without a target fails after the archive was opened: the old archive stays as
    it was, and no NAME.partial or manifest saying complete is left anywhere."""
    out = tmp_path / "run.tar.zst"
    out.write_bytes(b"an archive from yesterday")
    res = capture(out, "-t", "lock", "--force")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("trace: error: no tracer")
    assert out.read_bytes() == b"an archive from yesterday"
    assert os.listdir(tmp_path) == ["run.tar.zst"]   # no partial, no spool


def test_capture_into_read_only_folder(kernel, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        res = capture(ro / "run.tar.zst", "-t", "proc", timeout=20)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"trace: error: create {ro}/run.tar.zst.partial: Read-only file system"], res.stderr


def test_capture_spool_private_and_where_asked(kernel, tmp_path, capture_run):
    spool = tmp_path / "spool"
    spool.mkdir()
    out = tmp_path / "out" / "run.tar.zst"
    out.parent.mkdir()
    run = capture_run(out, "-t", "proc", "--spool-dir", str(spool))
    run.wait_attached()
    dirs = spools(spool)
    assert len(dirs) == 1 and not spools(out.parent)
    assert os.stat(dirs[0]).st_mode & 0o777 == 0o700
    # Segments being written are 0600 too (the process snapshot of every process is one).
    names = os.listdir(dirs[0])
    assert names
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            assert os.stat(os.path.join(dirs[0], name)).st_mode & 0o777 == 0o600
    run.signal(2)
    rc, _, err = run.wait()
    assert rc == 0, err
    assert not spools(spool) and out.exists()


# Random bytes over TCP on 127.0.0.1, ~800 KB/s: what the sock tracer records does not compress.
NOISE = r"""
import os, socket, sys, threading, time
srv = socket.create_server(("127.0.0.1", 0))
def serve():
    conn, _ = srv.accept()
    while conn.recv(65536):
        pass
threading.Thread(target=serve, daemon=True).start()
cli = socket.create_connection(srv.getsockname())
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    cli.sendall(os.urandom(4096))
    time.sleep(0.005)
"""


@pytest.mark.parametrize("variant", ["plain", "encrypted", "as-user"])
def test_full_disk_stops_capture_and_keeps_segments(kernel, tmp_path, variant):
    """ENOSPC on the archive and the spool (both beside the output): the capture stops within
    seconds, keeps every segment it finished, prints one line, exits 1, removes its spool. The
    same with --encrypt-to, and with the archive written by an unprivileged user (sudo)."""
    key = tmp_path / "key.txt"
    extra: list[str] = []
    env = dict(os.environ)
    if variant == "encrypted":
        extra = ["--encrypt-to", trace_cmd("keygen", "-o", str(key), check=True).stdout.strip()]
    if variant == "as-user":
        env.update(SUDO_UID="65534", SUDO_GID="65534")
        traversable(tmp_path)
    with tmpfs(tmp_path / "small", "size=3m,mode=0777") as small:
        out = small / "run.tar.zst"
        noise = subprocess.Popen([sys.executable, "-c", NOISE, "60"])
        try:
            start = time.monotonic()
            res = trace_cmd("capture", "-q", "-d", "60s", "-t", "sock", "--snaplen", "4096", "--segment-seconds",
                            "500ms", "-o", str(out), *extra, timeout=60, env=env)
            took = time.monotonic() - start
        finally:
            noise.kill()
            noise.wait()
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0] and "finished segments kept" in lines[0]
        assert took < 40, took
        assert not spools(small)
        kept = out if out.exists() else partial_path(out)
        with open_archive_db(kept, ReadLimits(identity=key if variant == "encrypted" else None)) as cap:
            assert cap.query("SELECT count(*) FROM sock_data")[0][0] > 0
            assert not cap.manifest.get("complete")
        if variant == "as-user":
            assert kept.stat().st_uid == 65534


def test_full_spool_stops_capture(kernel, tmp_path):
    """ENOSPC on the spool only (--spool-dir): the segment being written is lost, the capture
    stops with one line and exit 1, and the archive beside it is closed and readable."""
    out = tmp_path / "run.tar.zst"
    with tmpfs(tmp_path / "spool", "size=1m") as spool:
        noise = subprocess.Popen([sys.executable, "-c", NOISE, "60"])
        try:
            start = time.monotonic()
            res = trace_cmd("capture", "-q", "-d", "60s", "-t", "sock,proc", "--snaplen", "4096", "--segment-seconds",
                            "5s", "--spool-dir", str(spool), "-o", str(out), timeout=60)
            took = time.monotonic() - start
        finally:
            noise.kill()
            noise.wait()
        assert not spools(spool)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], res.stderr
    assert took < 40, took
    with open_archive_db(out) as cap:
        assert not cap.manifest["complete"] and cap.manifest["stop_reason"] == "write error"
        assert cap.query("SELECT count(*) FROM processes")[0][0] > 0   # the small segments fit


def test_file_size_limit_is_a_write_error(kernel, tmp_path):
    """RLIMIT_FSIZE: writes fail with EFBIG (SIGXFSZ would kill the capture without a word)."""
    out = tmp_path / "run.tar.zst"
    noise = subprocess.Popen([sys.executable, "-c", NOISE, "60"])
    try:
        res = subprocess.run(["prlimit", "--fsize=1500000", sys.executable, "-m", "uetrace", "capture", "-q", "-d",
                              "60s", "-t", "sock", "--snaplen", "4096", "--segment-seconds", "500ms", "-o", str(out)],
                             capture_output=True, text=True, timeout=60)
    finally:
        noise.kill()
        noise.wait()
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0], res.stderr
    assert not spools(tmp_path)
    kept = out if out.exists() else partial_path(out)
    with open_archive_db(kept) as cap:
        assert cap.query("SELECT count(*) FROM sock_data")[0][0] > 0


def test_sighup_stops_like_sigterm(kernel, tmp_path, capture_run):
    """An ssh disconnect (SIGHUP) used to kill the capture: 0 rows kept, spool left behind."""
    out = tmp_path / "hup.tar.zst"
    noise = subprocess.Popen([sys.executable, "-c", NOISE, "4"])
    run = capture_run(out, "-t", "sock,proc", "--segment-seconds", "1s")
    try:
        run.wait_attached()
        time.sleep(1)
        run.signal(signal.SIGHUP)
        rc, _, err = run.wait(timeout=60)
    finally:
        noise.kill()
        noise.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        assert cap.warnings == []
        assert cap.manifest["complete"] and cap.manifest["stop_reason"] == "signal"
        assert cap.query("SELECT count(*) FROM sock_data")[0][0] > 0
    assert not spools(tmp_path) and not partial_path(out).exists()
