"""Issue 11, the reading side: an archive crafted by an attacker is safe to open. Each test builds the
hostile archive in tmp_path and runs the real CLI under memory, file-size and time bounds (hostile.py):
one line on stderr and exit code 2 when refused, nothing written outside tmp_path."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pytest
import zstandard
from hostile import (
    assert_one_line_error,
    base_members,
    final_manifest,
    member_blocks,
    member_table,
    parquet_bytes,
    replace,
    reseal,
    run_limited,
    write_archive,
)

SOCK = "events/sock_data/000001.parquet"
PROCESSES = "symbols/processes/000001.parquet"


@pytest.fixture(scope="module")
def base():
    return base_members()


# Finding 1: a member name that closes the identifier and appends statements.
INJECTION = ("events/a\" AS SELECT 1; COPY (SELECT 'echo hi' AS x) TO 'PWNED.sh' (HEADER false, QUOTE ''); "
             "--/000001.parquet")


@pytest.mark.parametrize("args", [["analyze"], ["requests"], ["query", "--tables"], ["info"]])
def test_sql_in_a_member_name_is_skipped_with_a_warning(tmp_path, base, args):
    members = reseal([*base[:-1], (INJECTION, dict(base)[SOCK]), base[-1]])
    path = write_archive(tmp_path / "inject.tar.zst", members)
    run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert not (tmp_path / "PWNED.sh").exists() and not list(tmp_path.rglob("PWNED*"))
    warnings = [line for line in run.err_lines if "skipped member" in line]
    assert len(warnings) == 1 and "COPY (SELECT" in warnings[0], run.stderr
    if args[0] == "requests":
        assert "/chunked-big" in run.stdout  # the genuine tables are still read


def test_table_names_reach_sql_quoted_and_allow_listed(tmp_path, base):
    """Defense in depth: a folder name that the extractor's checks let through still only becomes a
    view when it is [a-z0-9_]+; the others are warnings."""
    from uetrace.analyze.archive import extract
    from uetrace.analyze.archive_db import ArchiveDb

    ex = extract(write_archive(tmp_path / "ok.tar.zst", base))
    bad = ex.root / "events" / 'x" AS SELECT 1; --'
    bad.mkdir()
    (bad / "000001.parquet").write_bytes(dict(base)[SOCK])
    with ArchiveDb(ex) as db:
        assert "sock_data" in db.views and not any('"' in v for v in db.views)
        assert any("skipped table" in w for w in db.warnings)


# Finding 5: bombs.
def test_member_that_unpacks_past_the_limit_is_refused_before_unpacking(tmp_path, base):
    """A 1 GiB member of zeros compresses to a few hundred KiB: refused from its header."""
    header = tarfile.TarInfo("events/sock_data/000002.parquet")
    header.size = 1 << 30
    cctx = zstandard.ZstdCompressor(level=1)
    path = tmp_path / "bomb.tar.zst"
    with open(path, "wb") as fh:
        fh.write(cctx.compress(member_blocks(base[:1])))  # the first manifest, no end blocks
        with cctx.stream_writer(fh, closefd=False) as w:
            w.write(header.tobuf(format=tarfile.PAX_FORMAT))
            zeros = bytes(8 << 20)
            for _ in range(128):
                w.write(zeros)
    assert path.stat().st_size < 2 << 20
    for command in ("info", "analyze"):
        run = run_limited(command, str(path), cwd=tmp_path)
        assert_one_line_error(run, "unpacks to more than", "--max-expand")
        assert run.seconds < 20


def test_max_expand_flag_and_environment_set_the_limit(tmp_path, base):
    path = write_archive(tmp_path / "ok.tar.zst", base)
    assert_one_line_error(run_limited("info", str(path), "--max-expand", "16K", cwd=tmp_path), "16,384")
    run = run_limited("info", str(path), cwd=tmp_path, env={"UETRACE_MAX_EXPAND": "16K", "PATH": "/usr/bin:/bin"})
    assert_one_line_error(run, "16,384")
    assert run_limited("info", str(path), "--max-expand", "64M", cwd=tmp_path).code == 0
    help_text = run_limited("analyze", "--help", cwd=tmp_path).stdout
    assert "--max-expand" in help_text and "UETRACE_MAX_EXPAND" in help_text and "--strict" in help_text


def test_every_reading_command_takes_the_limits():
    from uetrace.cli import main

    readers = [name for name, cmd in main.commands.items()
               if any(p.name in ("archive", "archives") for p in cmd.params)]
    assert set(readers) >= {"info", "analyze", "query", "requests", "flows", "export", "flamegraph", "deadlocks",
                            "leaks"}
    for name in readers:
        opts = {o for p in main.commands[name].params for o in getattr(p, "opts", [])}
        assert {"--strict", "--max-expand"} <= opts, name


def _huge_header(kind: bytes, size: int) -> bytes:
    """A PAX ('x') or GNU long-name ('L') header that declares `size` bytes of body."""
    info = tarfile.TarInfo("././@LongLink" if kind == b"L" else "./PaxHeaders/x")
    info.type = kind
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT if kind == b"L" else tarfile.USTAR_FORMAT)


@pytest.mark.parametrize("kind", [b"x", b"L"])
@pytest.mark.parametrize("after_manifest", [False, True])
def test_huge_tar_header_is_refused_before_it_is_read(tmp_path, base, kind, after_manifest):
    """A 3 GiB extended header in a small archive: refused from its size field (tarfile would read it)."""
    head = member_blocks(base[:1]) if after_manifest else b""
    body = head + _huge_header(kind, 3 << 30) + bytes(1 << 20)
    path = tmp_path / "header.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(body))
    for command in ("info", "analyze"):
        run = run_limited(command, str(path), cwd=tmp_path)
        assert_one_line_error(run, "header of 3,221,225,472 bytes")


def _dictionary_bomb() -> bytes:
    """5 M rows that all point at one 4 KiB dictionary value: a small file, 20 GB once decoded."""
    rows = 5_000_000
    payload = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([b"G" * 4096]))
    table = pa.table({"pid": pa.array(np.ones(rows, dtype=np.uint32)), "payload": payload})
    return parquet_bytes(table, use_dictionary=True, compression="zstd")


def _plain_bomb() -> bytes:
    """The sock_data segment with 100 k rows of 4 KiB zero payloads, plain-encoded: zstd inside the
    Parquet file makes 400 MB of pages a 1.4 MB file, and the archive a few KiB."""
    table = member_table(base_members(), SOCK)
    table = table.take(pa.array(np.zeros(100_000, dtype=np.int64)))
    zeros = pa.array([bytes(4096)] * table.num_rows, pa.binary())
    table = table.set_column(table.schema.get_field_index("payload"), "payload", zeros)
    return parquet_bytes(table, compression="zstd", use_dictionary=False)


@pytest.mark.parametrize("bomb", [_dictionary_bomb, _plain_bomb])
def test_parquet_bomb_is_refused_before_rows_are_read(tmp_path, base, bomb):
    data = bomb()
    assert len(data) < 4 << 20
    path = write_archive(tmp_path / "dict.tar.zst", reseal(replace(base, SOCK, data)))
    for args in (["requests"], ["analyze"], ["query", "SELECT sum(length(payload)) FROM sock_data"]):
        run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
        assert_one_line_error(run, "decode to more than")


def test_member_flood_is_refused(tmp_path, base):
    members = [base[0]] + [(f"events/x/{i:06d}.parquet", b"") for i in range(20_001)]
    path = tmp_path / "flood.tar.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(member_blocks(members)))
    run = run_limited("info", str(path), cwd=tmp_path)
    assert_one_line_error(run, "more than 20000 members")
    assert run.seconds < 20


def test_many_odd_members_make_few_warnings(tmp_path, base):
    members = [*base[:-1], *((f"events/x/{i}.txt", b"") for i in range(500)), base[-1]]
    run = run_limited("info", str(write_archive(tmp_path / "odd.tar.zst", members)), cwd=tmp_path)
    assert run.code == 0 and len(run.err_lines) == 11, run.stderr
    assert run.err_lines[-1].startswith("warning: skipped 490 more members"), run.stderr


def test_huge_manifest_is_refused(tmp_path, base):
    manifest = final_manifest(base)
    manifest["host"]["hostname"] = "h" * (17 << 20)
    path = write_archive(tmp_path / "manifest.tar.zst", [*base[:-1], ("manifest.json", json.dumps(manifest).encode())])
    assert_one_line_error(run_limited("info", str(path), cwd=tmp_path), "manifest.json is", "limit")


# Finding 11 (sha256): a segment altered after the capture.
def test_altered_segment_is_a_warning_and_strict_makes_it_an_error(tmp_path, base):
    table = member_table(base, PROCESSES)
    altered = parquet_bytes(table.slice(1), compression="zstd")  # valid Parquet, one row fewer
    path = write_archive(tmp_path / "altered.tar.zst", replace(base, PROCESSES, altered))
    for command in ("info", "analyze"):
        run = run_limited(command, str(path), cwd=tmp_path)
        assert run.code == 0, run.stderr
        assert any(PROCESSES in line and "sha256" in line for line in run.err_lines), run.stderr
        run = run_limited(command, str(path), "--strict", cwd=tmp_path)
        assert_one_line_error(run, PROCESSES, "sha256", "--strict")
    # Untouched: no warning at all, strict or not.
    path = write_archive(tmp_path / "ok.tar.zst", base)
    run = run_limited("info", str(path), "--strict", cwd=tmp_path)
    assert run.code == 0 and run.stderr == "", run.stderr
    # No segment list: nothing to verify, which only --strict minds.
    manifest = final_manifest(base)
    del manifest["segments"]
    path = write_archive(tmp_path / "unlisted.tar.zst", [*base[:-1], ("manifest.json", json.dumps(manifest).encode())])
    run = run_limited("info", str(path), cwd=tmp_path)
    assert run.code == 0 and run.stderr == "", run.stderr
    assert_one_line_error(run_limited("info", str(path), "--strict", cwd=tmp_path), "lists no segments")


# Finding 8: every reader failure is one line.
def _corrupt_pages(data: bytes) -> bytes:
    """Parquet with its footer intact and its data pages scrambled."""
    b = bytearray(data)
    for i in range(8, len(b) // 2, 7):
        b[i] ^= 0x5A
    return bytes(b)


def _sock_columns(base, **changes) -> bytes:
    table = member_table(base, SOCK)
    for name, value in changes.items():
        if value is None:
            table = table.drop_columns([name])
        else:
            table = table.set_column(table.schema.get_field_index(name), name, value(table))
    return parquet_bytes(table)


def _non_utf8(table: pa.Table) -> pa.Array:
    return pa.array([b"\xff\xfe\x80" for _ in range(table.num_rows)], pa.binary()).view(pa.string())


BROKEN_SOCK = {
    "garbage": lambda base: b"PAR1 not parquet at all PAR1",
    "scrambled-pages": lambda base: _corrupt_pages(dict(base)[SOCK]),
    "missing-column": lambda base: _sock_columns(base, payload=None),
    "mistyped-column": lambda base: _sock_columns(base, payload=lambda t: pa.array([7] * t.num_rows, pa.int64())),
    "text-for-number": lambda base: _sock_columns(base, pid=lambda t: pa.array(["x"] * t.num_rows)),
    "non-utf8": lambda base: _sock_columns(base, laddr=_non_utf8),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SOCK))
def test_broken_segment_is_one_line(tmp_path, base, case):
    path = write_archive(tmp_path / f"{case}.tar.zst", reseal(replace(base, SOCK, BROKEN_SOCK[case](base))))
    for args in (["requests"], ["analyze"], ["query", "SELECT * FROM sock_data"]):
        run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
        assert "Traceback" not in run.stderr, run.stderr
        if run.code != 0:
            assert_one_line_error(run)
        if case in ("garbage", "scrambled-pages") and args[0] == "requests":
            assert run.code == 2, run.stderr
    if case == "garbage":  # unreadable Parquet: a warning and the segment skipped; --strict refuses
        assert any(SOCK in line and "skipped" in line for line in run.err_lines), run.stderr
        assert_one_line_error(run_limited("analyze", str(path), "--strict", cwd=tmp_path), SOCK, "--strict")


WRONG_TYPES = {"host": "not a dict", "tracers": [1, 2], "segments": "abc", "clock": 5, "command_line": 7,
               "options": [], "tool_version": {"x": 1}}


def test_manifest_fields_of_the_wrong_type(tmp_path, base):
    manifest = final_manifest(base)
    manifest.update(WRONG_TYPES)
    manifest["tracers"] = {"sock": {"attached": True, "records": "many", "lost": None, "attach_failures": 3,
                                    "kinds": 5, "stats": []}}
    path = write_archive(tmp_path / "types.tar.zst", [*base[:-1], ("manifest.json", json.dumps(manifest).encode())])
    for args in (["info"], ["analyze"], ["requests"], ["flows"], ["export", "-o", "x.pcapng"]):
        run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
        assert "Traceback" not in run.stderr, run.stderr
        assert run.code in (0, 2), run.stderr
        if run.code:
            assert_one_line_error(run)


def test_bad_status_filter_is_one_line(tmp_path, base):
    path = write_archive(tmp_path / "ok.tar.zst", base)
    assert_one_line_error(run_limited("requests", str(path), "--status", "[", cwd=tmp_path), "bad status")


def test_unwritable_output_is_one_line(tmp_path):
    from stack_archive import build, pack

    path = pack(build(tmp_path / "stack", [{"pid": 100}], {}), tmp_path / "stack.tar.zst")
    run = run_limited("flamegraph", str(path), "-o", "/nodir/x.svg", cwd=tmp_path)
    assert_one_line_error(run, "/nodir")
    base = write_archive(tmp_path / "net.tar.zst", base_members())
    run = run_limited("export", str(base), "-o", "/nodir/x.pcapng", cwd=tmp_path)
    assert_one_line_error(run, "/nodir")


# Finding 10: archive text reaches the terminal escaped.
ESC_HOST = "\x1b]0;owned\x07host\x1b[2J[link=file:///etc/shadow]click[/link]\u202e"


def test_control_characters_and_markup_are_printed_as_data(tmp_path, base):
    manifest = final_manifest(base)
    manifest["host"]["hostname"] = ESC_HOST
    manifest["command_line"] = ["trace", "\x1b[31mred", "[bold]x[/bold]"]
    manifest["tracers"]["sock"]["reason"] = "\x1b[5mblink"
    processes = member_table(base, PROCESSES)
    comm = pa.array([f"\x1b[31m[link=file:///etc/shadow]p{i}" for i in range(processes.num_rows)])
    processes = processes.set_column(processes.schema.get_field_index("comm"), "comm", comm)
    members = replace(base, PROCESSES, parquet_bytes(processes))
    members = [*members[:-1], ("manifest.json", json.dumps(manifest).encode()),
               ("events/\x1b[31mevil/000001.parquet", b"x")]
    path = write_archive(tmp_path / "esc.tar.zst", reseal(members))
    for args in (["info"], ["analyze"], ["requests"], ["query", "SELECT comm FROM processes"], ["flows"]):
        run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
        assert run.code == 0, run.stderr
        for stream in (run.stdout, run.stderr):
            assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream, args
        assert "\\x1b[31mevil" in run.stderr, run.stderr  # the skipped member, named escaped
        if args[0] == "info":
            assert "\\x1b]0;owned\\x07host" in run.stdout and "[link=file:///etc/shadow]" in run.stdout
        if args[0] in ("query", "requests"):
            assert "[link=file:///etc/shadow]" in run.stdout or args[0] == "requests", run.stdout


# Item 2, reading side: what a killed capture leaves is read, with a warning that it is incomplete.
def test_partial_archive_is_read_with_a_warning(tmp_path, base):
    final = tmp_path / "run.tar.zst"
    partial = write_archive(tmp_path / "run.tar.zst.partial", base[:-1])
    run = run_limited("info", str(partial), cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert "run.tar.zst.partial" in run.err_lines[0] and "incomplete" in run.err_lines[0], run.stderr
    run = run_limited("analyze", str(final), cwd=tmp_path)
    assert_one_line_error(run, "run.tar.zst.partial exists")


def test_valid_archive_reads_cleanly_within_the_bounds(tmp_path, base):
    path = write_archive(tmp_path / "ok.tar.zst", base)
    for args in (["info"], ["analyze"], ["requests"], ["query", "--tables"]):
        run = run_limited(args[0], str(path), *args[1:], cwd=tmp_path)
        assert run.code == 0 and run.stderr == "", (args, run.stderr)
