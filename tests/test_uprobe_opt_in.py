"""lock and alloc are opt-in (issue 10): --pid/--comm alone attach no uprobe to
the C library; naming them (-t +lock or -t proc,lock) attaches them to exactly
the filtered processes. What is attached is read from the kernel (bpftool)
while the capture runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import trace_cmd

from uetrace.capture import uprobe_multi
from uetrace.capture.tracers.catalog import default_tracers, select
from uetrace.errors import BadInputError

_LIBC = re.compile(r"/(libc|libpthread)[.-][^/]*$")


def test_tracer_lists():
    assert "lock" not in default_tracers() and "alloc" not in default_tracers()
    assert select("+lock,+alloc") == [*default_tracers()[:4], "lock", "alloc", *default_tracers()[4:]]
    assert select("lock,proc") == ["proc", "lock"]
    assert select(None) == default_tracers()
    with pytest.raises(BadInputError, match="either names only"):
        select("proc,+lock")


def test_mixed_tracer_list_is_one_line_error(tmp_path):
    res = trace_cmd("capture", "-d", "1s", "-t", "proc,+lock", "-o", str(tmp_path / "x.tar.zst"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.fixture
def sleepers(tmp_path):
    """Start copies of sleep(1) under chosen command names; killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(name: str) -> int:
        exe = tmp_path / name
        if not exe.exists():
            shutil.copy("/bin/sleep", exe)
        procs.append(subprocess.Popen([str(exe), "60"]))
        return procs[-1].pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def netns():
    """A network namespace of our own, so that the default set's net tracer only sees its lo."""
    name = f"uetrace-optin-{time.monotonic_ns() % 10**9}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _libc_uprobes(pid: int) -> list[int]:
    """One entry per C library uprobe process `pid` holds: the process it is bound to as the kernel
    says (uprobe_multi links: their link info), or 0 where it does not say (classic ones: bpftool)."""
    out = subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True, check=True).stdout
    found = [0 for x in json.loads(out or "[]") if x.get("pid") == pid
             and x.get("fd_type") in ("uprobe", "uretprobe") and _LIBC.search(x.get("filename", ""))]
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            m = re.search(r"^link_id:\s*(\d+)", fdinfo.read_text(), re.M)
            info = uprobe_multi.link_info(int(m.group(1))) if m else None
        except OSError:   # closed meanwhile
            continue
        if info and _LIBC.search(info.path):
            found += [info.pid] * info.count
    return found


def _capture(prefix: list[str], archive, *args: str) -> tuple[dict, str, list[list[int]]]:
    """Run a 5 s capture; return its manifest, stderr, and the number of C library
    uprobes the kernel showed for it (their target processes) at each of several looks while it ran."""
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "uetrace", "capture", "-q", "-d", "5s",
                             "-o", str(archive), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        time.sleep(2.5)   # past attach (the tracers attach in well under a second here)
        for _ in range(3):
            assert proc.poll() is None, proc.communicate()
            seen.append(_libc_uprobes(proc.pid))
            time.sleep(0.5)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    info = json.loads(trace_cmd("info", str(archive), "--json", check=True).stdout)
    return info, err, seen


def test_filters_alone_attach_no_uprobe(kernel, tmp_path, sleepers, netns):
    target = sleepers("ueoptin_a")
    info, err, seen = _capture(["ip", "netns", "exec", netns], tmp_path / "default.tar.zst",
                               "--pid", str(target), "--comm", "ueoptin_a")
    assert seen == [[], [], []]
    assert "lock" not in info["tracers"] and "alloc" not in info["tracers"], info["tracers"].keys()
    assert "proc" in info["tracers"] and "us per" not in err


def test_named_lock_and_alloc_attach_to_exactly_the_filtered_processes(kernel, tmp_path, sleepers):
    by_comm = [sleepers("ueoptin_a"), sleepers("ueoptin_a")]
    by_pid = sleepers("ueoptin_b")
    sleepers("ueoptin_b")          # same name as a --pid target, not named: left alone
    sleepers("ueoptin_c")
    wanted = {*by_comm, by_pid}
    info, err, seen = _capture([], tmp_path / "named.tar.zst", "-t", "proc,lock,alloc",
                               "--comm", "ueoptin_a", "--pid", str(by_pid))
    said = " ".join(err.split())   # rich wraps lines on a pipe
    assert "lock ~10 us per" in said and "alloc ~0.6 us per malloc" in said, err
    points = []
    for name in ("lock", "alloc"):
        t = info["tracers"][name]
        assert t["attached"], t
        assert {x["pid"] for x in t["stats"]["targets"]} == wanted
        ups = [p for p in t["attach_points"] if p.startswith(("uprobe ", "uretprobe "))]
        assert {int(p.rsplit(" pid ", 1)[1]) for p in ups} == wanted
        points += ups
    # The kernel holds one uprobe per attach point the manifest lists, and no other on the C library,
    # each (where the kernel names it) in a wanted process.
    assert [len(s) for s in seen] == [len(points)] * 3, (seen, len(points))
    bound = {p for s in seen for p in s}
    assert bound <= (wanted if uprobe_multi.supported() else wanted | {0}), (bound, wanted)
