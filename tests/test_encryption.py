"""Encryption at rest (issue 11 item 6): `capture --encrypt-to` writes an age file that uetrace
(--identity / UETRACE_IDENTITY) and the age tool both open; no payload plaintext on disk."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest
import zstandard
from helpers import IN_CI, trace_cmd

from uetrace.analyze.archive import ReadLimits
from uetrace.analyze.archive_db import open_archive_db
from uetrace.encryption import AGE_MAGIC

# A loopback exchange that sends `marker` both ways, then lingers so that the capture sees its close.
EXCHANGE = """
import socket, sys, threading
marker = sys.argv[1].encode()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(65536)); c.close()
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(srv.getsockname()); c.sendall(marker * 8); c.recv(65536); c.close(); t.join()
"""


def keygen(tmp_path, name: str = "key.txt") -> tuple:
    res = trace_cmd("keygen", "-o", str(tmp_path / name), check=True)
    return tmp_path / name, res.stdout.strip()


def need_age() -> None:
    if shutil.which("age") is None:
        if IN_CI:
            pytest.fail("age is not installed (scripts/setup.sh installs it)")
        pytest.skip("needs age")


def test_keygen_writes_a_private_key_and_prints_the_recipient(tmp_path):
    key, recipient = keygen(tmp_path)
    assert recipient.startswith("age1") and len(recipient.splitlines()) == 1
    assert (key.stat().st_mode & 0o777) == 0o600
    text = key.read_text()
    assert f"# public key: {recipient}" in text and "AGE-SECRET-KEY-1" in text
    again = trace_cmd("keygen", "-o", str(key))   # never overwritten without --force
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory):
    """One encrypted capture of a loopback exchange that sent a marker string."""
    from helpers import require_kernel

    require_kernel()
    tmp = tmp_path_factory.mktemp("enc")
    key, recipient = keygen(tmp)
    out = tmp / "run.tar.zst.age"
    marker = f"UETRACE-MARKER-{secrets.token_hex(6)}"
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-d", "5s", "-t", "sock,proc",
                            "--encrypt-to", recipient, "-o", str(out)], stderr=subprocess.PIPE, text=True)
    _wait_for(out.with_name(out.name + ".partial"), cap)
    time.sleep(2)
    subprocess.run([sys.executable, "-c", EXCHANGE, marker], check=True, timeout=30)
    _, err = cap.communicate(timeout=120)
    assert cap.returncode == 0, err
    return out, key, marker


def _wait_for(path, proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_round_trip_with_the_identity(encrypted):
    out, key, marker = encrypted
    recipient = key.read_text().split("# public key: ")[1].split()[0]
    with open_archive_db(out, ReadLimits(identity=key)) as db:
        assert db.manifest["complete"] and db.warnings == []
        assert db.manifest["encryption"] == {"age_recipients": [recipient]}
        hits = db.query("SELECT count(*) FROM sock_data WHERE contains(CAST(payload AS VARCHAR), ?)", [marker])
        assert hits[0][0] >= 2   # sent and received
    res = trace_cmd("info", "--identity", str(key), str(out))
    assert res.returncode == 0 and "sock" in res.stdout, res.stderr
    res = trace_cmd("info", str(out), env={**os.environ, "UETRACE_IDENTITY": str(key)})
    assert res.returncode == 0, res.stderr


def test_no_plaintext_on_disk(encrypted):
    out, _, marker = encrypted
    data = out.read_bytes()
    assert data.startswith(AGE_MAGIC) and (out.stat().st_mode & 0o777) == 0o600
    assert marker.encode() not in data and b"manifest.json" not in data and b"uetrace" not in data
    assert not list(out.parent.glob("uetrace-seg-*"))   # the spool is gone


def test_wrong_or_missing_key_one_line_exit_2(encrypted, tmp_path):
    out, _, _ = encrypted
    other, _ = keygen(tmp_path, "other.txt")
    for args in (["--identity", str(other)], [], ["--identity", str(tmp_path / "nokey.txt")],
                 ["--identity", str(out)]):
        res = trace_cmd("info", *args, str(out), env={k: v for k, v in os.environ.items() if k != "UETRACE_IDENTITY"})
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trace: error:"), res.stderr
    res = trace_cmd("analyze", "--identity", str(other), str(out))
    assert res.returncode == 2 and "cannot decrypt" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_age_opens_it(encrypted):
    need_age()
    out, key, marker = encrypted
    res = subprocess.run(["age", "-d", "-i", str(key), str(out)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    plain = zstandard.ZstdDecompressor().stream_reader(res.stdout, read_across_frames=True).read()
    assert b"manifest.json" in plain[:512]


def test_bad_recipient_one_line_before_attaching(kernel, tmp_path):
    out = tmp_path / "x.tar.zst"
    res = trace_cmd("capture", "-q", "-d", "1s", "--encrypt-to", "age1notakey", "-o", str(out))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--encrypt-to" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_killed_encrypted_capture_keeps_sealed_chunks(kernel, tmp_path):
    """What a SIGKILL leaves: the members sealed in full 64 KiB age chunks, read with a warning."""
    key, recipient = keygen(tmp_path)
    out = tmp_path / "k.tar.zst.age"
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-t", "proc", "--segment-seconds",
                            "500ms", "--encrypt-to", recipient, "-o", str(out)], stderr=subprocess.PIPE)
    partial = out.with_name(out.name + ".partial")
    _wait_for(partial, cap)
    deadline = time.monotonic() + 60
    while partial.stat().st_size < 3 * 65536 and time.monotonic() < deadline:   # several chunks sealed
        subprocess.run(["sh", "-c", "for i in $(seq 50); do /bin/true; done"], check=True)
    cap.send_signal(signal.SIGKILL)
    cap.wait()
    res = trace_cmd("info", "--identity", str(key), str(partial))
    assert res.returncode == 0, res.stderr
    assert "truncated" in res.stderr and "proc" in res.stdout


def _offline_archive(tmp_path) -> tuple:
    """An encrypted archive written by ArchiveWriter (no capture): a manifest, then members that
    fill several 64 KiB age chunks."""
    import base64
    import json

    from uetrace.capture.archive_writer import ArchiveWriter
    from uetrace.encryption import parse_recipient

    key, recipient = keygen(tmp_path)
    out = tmp_path / "o.tar.zst.age"
    w = ArchiveWriter(out, recipients=[parse_recipient(recipient)])
    w.add_bytes("manifest.json", json.dumps({"tool": "uetrace", "format_version": 1, "complete": False}).encode())
    for i in range(4):
        w.add_bytes(f"schema/k{i}.json", json.dumps({"x": base64.b64encode(os.urandom(75000)).decode()}).encode())
    w.close()
    return out, key


def test_damaged_ciphertext_is_one_line_or_a_warning(tmp_path):
    out, key = _offline_archive(tmp_path)
    data = out.read_bytes()
    assert len(data) > 4 * 65536
    cut_header, cut_chunks, flipped = tmp_path / "h.age", tmp_path / "c.age", tmp_path / "f.age"
    cut_header.write_bytes(data[:40])
    cut_chunks.write_bytes(data[:len(data) - 100_000])
    mid = bytearray(data)
    mid[len(data) // 2] ^= 0x40
    flipped.write_bytes(bytes(mid))
    res = trace_cmd("info", "--identity", str(key), str(cut_header))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for damaged in (cut_chunks, flipped):   # the members sealed before the damage are read, with a warning
        res = trace_cmd("info", "--identity", str(key), str(damaged))
        assert res.returncode == 0, res.stderr
        assert "truncated or corrupt" in res.stderr and "Traceback" not in res.stderr


def test_armored_age_file_one_line(tmp_path):
    need_age()
    key, recipient = keygen(tmp_path)
    armored = tmp_path / "a.age"
    subprocess.run(["age", "-a", "-r", recipient, "-o", str(armored)], input=b"x" * 100, check=True, timeout=30)
    res = trace_cmd("info", "--identity", str(key), str(armored))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "armored" in res.stderr


def test_every_recipient_can_open_it(tmp_path):
    import json

    from uetrace.capture.archive_writer import ArchiveWriter
    from uetrace.encryption import parse_recipient

    keys = [keygen(tmp_path, f"k{i}.txt") for i in range(2)]
    out = tmp_path / "two.tar.zst.age"
    w = ArchiveWriter(out, recipients=[parse_recipient(r) for _, r in keys])
    w.add_bytes("manifest.json", json.dumps({"tool": "uetrace", "format_version": 1, "complete": True}).encode())
    w.close()
    for key, _ in keys:
        res = trace_cmd("info", "--identity", str(key), str(out))
        assert res.returncode == 0, res.stderr
