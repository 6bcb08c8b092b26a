"""Stopping a capture every way a user can, and what is left behind."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import FIXTURES, REPO, trace_cmd

from uetrace.analyze.archive_db import open_archive_db


def prog_holders() -> dict[int, set[int]]:
    """prog id -> pids holding an fd on it (a program fd or a bpf_link fd)."""
    held: dict[int, set[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    for line in fh:
                        if line.startswith("prog_id:"):
                            held.setdefault(int(line.split()[1]), set()).add(int(pid))
            except OSError:
                continue
    return held


def our_bpf_programs(pid: int | None = None) -> list[str]:
    """uetrace programs (all named ue_*) still loaded and either held by the capture
    process `pid` or by no process at all (kept alive only by an attachment: a
    leak). Programs of other live uetrace processes do not count."""
    bpftool = shutil.which("bpftool")
    assert bpftool, "bpftool is needed to check for leftover programs (apt-get install bpftool)"
    out = subprocess.run([bpftool, "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    holders = prog_holders()
    return [p["name"] for p in json.loads(out) if p.get("name", "").startswith("ue_")
            and (not holders.get(p["id"]) or pid in holders[p["id"]])]


def programs_left(pid: int | None = None, timeout: float = 5) -> list[str]:
    """our_bpf_programs() once the kernel is done freeing: programs of BTF tracepoint links
    are freed after an RCU grace period, a few hundred ms after their last fd closed."""
    deadline = time.monotonic() + timeout
    while (left := our_bpf_programs(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def busy_traffic(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FIXTURES / "tcp_exchange.py"), "--delay", "0", "--rounds",
                             str(int(seconds * 200)), "--size", "100"], stdout=subprocess.DEVNULL)


def test_sigint_leaves_complete_archive(kernel, tmp_path, capture_run):
    out = tmp_path / "int.tar.zst"
    run = capture_run(out, "--tracers", "sock,proc", "--segment-seconds", "1s")
    run.wait_attached()
    load = busy_traffic(2)
    time.sleep(2)
    run.signal(signal.SIGINT)
    rc, _, err = run.wait()
    load.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        assert cap.warnings == []
        assert cap.manifest["complete"] and cap.manifest["stop_reason"] == "signal"
        assert cap.query("SELECT count(*) FROM sock_data")[0][0] > 0
    assert programs_left(run.proc.pid) == []


def test_sigterm_stops_like_sigint(kernel, tmp_path, capture_run):
    out = tmp_path / "term.tar.zst"
    run = capture_run(out, "--tracers", "proc")
    run.wait_attached()
    run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 0, err
    res = trace_cmd("info", str(out), check=True)
    assert "proc" in res.stdout and "warning" not in res.stderr
    assert programs_left(run.proc.pid) == []


def test_sigkill_keeps_finished_segments(kernel, tmp_path, capture_run):
    out = tmp_path / "kill.tar.zst"
    run = capture_run(out, "--tracers", "sock,proc", "--segment-seconds", "500ms")
    run.wait_attached()
    load = busy_traffic(3)
    time.sleep(3)
    run.kill()
    load.wait()
    # It never got to rename NAME.partial to NAME: what is there is a prefix of an archive.
    assert not out.exists() and run.partial.exists()
    res = trace_cmd("info", str(run.partial))
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "sock_data" in res.stdout
    res = trace_cmd("analyze", str(run.partial))
    assert res.returncode == 0, res.stderr
    assert "warning" in res.stderr and "did not finish" in res.stdout
    with open_archive_db(run.partial) as cap:
        assert cap.query("SELECT count(*) FROM sock_data")[0][0] > 0
    # The kernel detaches bpf_links when the last fd closes, i.e. when the process dies.
    assert programs_left(run.proc.pid) == []
    # Its spool folder (beside the output) is left behind (SIGKILL runs no cleanup); the next
    # capture there removes it.
    spools = glob.glob(str(tmp_path / f"uetrace-seg-{run.proc.pid}-*"))
    assert spools, "the killed capture had no spool folder"
    trace_cmd("capture", "-q", "-d", "500ms", "-t", "proc", "-o", str(tmp_path / "next.tar.zst"), check=True)
    assert not any(os.path.exists(p) for p in spools)


def test_duration_exit_detaches_everything(kernel, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-d", "1s", "-o",
                             str(tmp_path / "d.tar.zst")], stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "wrote" in err, err
    assert programs_left() == []
    assert not glob.glob(str(tmp_path / f"uetrace-seg-{proc.pid}-*"))  # spool removed


def test_without_privileges_one_line(kernel, tmp_path):
    """uid 0 stripped of every capability stands in for an unprivileged user: the
    interpreter lives under /root here, which other users cannot read."""
    setpriv = shutil.which("setpriv")
    assert setpriv
    res = subprocess.run([setpriv, "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "uetrace",
                          "capture", "-d", "1s", "-o", str(tmp_path / "x.tar.zst")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 77, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "CAP_BPF" in lines[0] and "not permitted" in lines[0]
    assert not (tmp_path / "x.tar.zst").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_non_root_user_one_line(tmp_path):
    """As nobody (tests/as_user.py drops to it after loading the code: the Python installation
    may not be readable by other users, as under /root/.pyenv here)."""
    tmp_path.chmod(0o777)
    res = subprocess.run([sys.executable, str(REPO / "tests" / "as_user.py"), "65534", "capture", "-d", "1s", "-o",
                          str(tmp_path / "x.tar.zst")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 77, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "CAP_BPF" in res.stderr and "uid 65534" in res.stderr
    assert not (tmp_path / "x.tar.zst").exists()
