"""Property: a valid archive mutated at random (bits flipped in the tar stream or in the compressed
file, truncated, members renamed or swapped) never makes a reading command crash: exit code 0 or 2,
no traceback, no control character from the archive on the terminal, nothing written beside it, all
within the memory and time bounds of hostile.run_limited. Each example is a real `trace` process,
so the example count stays small (CI has 2 cores)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import zstandard
from hostile import base_members, member_blocks, run_limited
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NAMES = ["../escape", "/etc/passwd", "events/UPPER/000001.parquet", "events/a b/000001.parquet",
         "events/sock_data/000002.parquet", "symbols/processes/000001.parquet", "manifest.json",
         "schema/sock_data.json", "events/sock_data", "events/\x1b[2Jx/000001.parquet", "other/file",
         'events/x" AS SELECT 1; --/000001.parquet']
COMMANDS = [("info",), ("analyze",), ("requests",), ("query", "--tables"), ("flows",)]


@functools.lru_cache(maxsize=1)
def _base() -> list[tuple[str, bytes]]:
    return base_members()


def _end(tar: bytes) -> bytes:
    return tar + bytes(2 * 512)


@st.composite
def mutated(draw) -> bytes:
    members = list(_base())
    how = draw(st.sampled_from(["tar-flip", "zst-flip", "truncate", "rename", "swap"]))
    if how == "rename":
        i = draw(st.integers(0, len(members) - 1))
        name = draw(st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=40)))
        members[i] = (name, members[i][1])
    elif how == "swap":
        i, j = draw(st.integers(0, len(members) - 1)), draw(st.integers(0, len(members) - 1))
        members[i], members[j] = (members[i][0], members[j][1]), (members[j][0], members[i][1])
    tar = bytearray(_end(member_blocks(members)))
    if how == "tar-flip":
        for pos in draw(st.lists(st.integers(0, len(tar) - 1), min_size=1, max_size=8)):
            tar[pos] ^= 1 << draw(st.integers(0, 7))
    data = bytearray(zstandard.ZstdCompressor().compress(bytes(tar)))
    if how == "zst-flip":
        for pos in draw(st.lists(st.integers(4, len(data) - 1), min_size=1, max_size=4)):
            data[pos] ^= 1 << draw(st.integers(0, 7))
    if how == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    return bytes(data)


# UETRACE_PROPERTY_EXAMPLES=500 for a longer hunt than CI affords
@settings(max_examples=int(os.environ.get("UETRACE_PROPERTY_EXAMPLES", "24")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(archive=mutated(), command=st.sampled_from(COMMANDS))
def test_mutated_archives_never_crash(archive, command):
    with tempfile.TemporaryDirectory(prefix="uetrace-prop-") as d:
        cwd = Path(d)
        path = cwd / "m.tar.zst"
        path.write_bytes(archive)
        run = run_limited(command[0], str(path), *command[1:], cwd=cwd)
        assert run.code in (0, 2), (run.code, run.stderr[-3000:])
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if run.code == 2:
            assert run.err_lines[-1].startswith("trace: error: "), run.stderr[-3000:]
        assert "\x1b" not in run.stdout + run.stderr
        assert sorted(p.name for p in cwd.iterdir()) == ["m.tar.zst"]


@functools.lru_cache(maxsize=1)
def _age_key() -> tuple[str, object]:
    """A key file (outside the commands' working folder) and its recipient."""
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    folder = tempfile.mkdtemp(prefix="uetrace-prop-key-")
    # Built lazily inside a hypothesis strategy, where no pytest fixture reaches: removed at exit.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "key.txt"
    path.write_text(f"{ident}\n")
    return str(path), ident.to_public()


@st.composite
def encrypted_mutated(draw) -> bytes:
    """A mutated archive (above), age-encrypted, and maybe its ciphertext damaged too."""
    import pyrage

    plain = draw(mutated())
    how = draw(st.sampled_from(["none", "flip", "truncate"]))
    # Positions are drawn as fractions: age's header varies in length (random "grease" stanzas), and
    # what is drawn must not depend on it.
    where = draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=4))
    bits = draw(st.lists(st.integers(0, 7), min_size=4, max_size=4))
    data = bytearray(pyrage.encrypt(plain, [_age_key()[1]]))
    if how == "flip":
        for f, bit in zip(where, bits):
            data[int(f * len(data))] ^= 1 << bit
    elif how == "truncate":
        data = data[:int(where[0] * len(data))]
    return bytes(data)


@settings(max_examples=int(os.environ.get("UETRACE_PROPERTY_EXAMPLES", "12")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(archive=encrypted_mutated(), command=st.sampled_from(COMMANDS[:3]))
def test_mutated_encrypted_archives_never_crash(archive, command):
    with tempfile.TemporaryDirectory(prefix="uetrace-prop-") as d:
        cwd = Path(d)
        path = cwd / "m.tar.zst.age"
        path.write_bytes(archive)
        run = run_limited(command[0], "--identity", _age_key()[0], str(path), *command[1:], cwd=cwd)
        assert run.code in (0, 2), (run.code, run.stderr[-3000:])
        assert "Traceback" not in run.stderr, run.stderr[-3000:]
        if run.code == 2:
            assert run.err_lines[-1].startswith("trace: error: "), run.stderr[-3000:]
        assert sorted(p.name for p in cwd.iterdir()) == ["m.tar.zst.age"]
