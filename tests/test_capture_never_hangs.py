"""A capture ends within seconds of its duration whatever the traced processes do (issue 11,
finding 3): a local user maps a copy of an executable, deletes it and makes a FIFO at its
path; /proc/<pid>/root/<path> then names the FIFO, which a plain open() waits on forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from uetrace.analyze.archive_db import open_archive_db

# Maps copies of /bin/true under names that the snapshot (build ids), the tls tracer (libssl)
# and the lock tracer (the C library) each open, deletes them, and puts FIFOs in their place.
MAPPER = r"""
import mmap, os, shutil, sys, time
fds = []
maps = []
for path in sys.argv[1:]:
    shutil.copy("/bin/true", path)
    fd = os.open(path, os.O_RDONLY)
    maps.append(mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_EXEC))
    os.close(fd)
    os.unlink(path)
    os.mkfifo(path)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def fifo_mapper(tmp_path):
    names = [tmp_path / "libc.so.6", tmp_path / "libssl.so.3", tmp_path / "tool"]
    proc = subprocess.Popen([sys.executable, "-c", MAPPER, *map(str, names)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    with open(f"/proc/{proc.pid}/maps") as fh:
        maps = fh.read()
    assert all(f"{n} (deleted)" in maps for n in names), maps
    assert all(os.path.exists(n) and not os.path.isfile(n) for n in names)  # FIFOs now
    yield proc
    proc.kill()
    proc.wait()


def timed_capture(out, *args: str, duration: float = 2.0, limit: float = 40.0) -> tuple[float, subprocess.Popen, str]:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-d", f"{duration}s", "-o", str(out),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pytest.fail(f"capture {args} still running after {limit}s: it hung")
    return time.monotonic() - start, proc, err


@pytest.mark.parametrize("args", [("-t", "proc,tls,stack", "--pid"), ("-t", "proc,tls")], ids=["pid", "all"])
def test_fifo_in_place_of_a_mapped_file(kernel, tmp_path, fifo_mapper, args):
    out = tmp_path / "fifo.tar.zst"
    args = (*args, str(fifo_mapper.pid)) if args[-1] == "--pid" else args
    took, proc, err = timed_capture(out, *args)
    assert proc.returncode == 0, err
    assert took < 2.0 + 25, f"took {took:.1f}s"
    with open_archive_db(out) as cap:
        rows = cap.query(f"SELECT path, build_id FROM mappings WHERE pid = {fifo_mapper.pid}")
    assert rows, "the mapper process was not snapshotted"
    # What the FIFO stands in for cannot be read: no build id, and nothing waited on it.
    assert all(bid == "" for path, bid in rows if path.startswith(str(tmp_path))), rows


def test_fifo_in_place_of_a_target_c_library(kernel, tmp_path, fifo_mapper):
    """The lock tracer reads the target's C library to find pthread_mutex_lock. The mapper (a Python
    process) maps the real C library too, and which of the two the tracer meets first follows the
    addresses ASLR gave them: when it meets the FIFO, the FIFO is refused at once (one line, no tracer
    could attach); when it meets the real one, the capture records as usual. Never a wait."""
    out = tmp_path / "lock.tar.zst"
    took, proc, err = timed_capture(out, "-t", "lock", "--pid", str(fifo_mapper.pid))
    assert took < 2.0 + 25, f"took {took:.1f}s"
    last = err.strip().splitlines()[-1]
    if proc.returncode == 1:
        assert last.startswith("trace: error:") and "not a regular file" in last, err
        assert not os.path.exists(out) and not os.path.exists(tmp_path / "lock.tar.zst.partial")
    else:
        assert proc.returncode == 0 and "stopped by duration" in last, err
        with open_archive_db(out) as cap:
            assert cap.manifest["complete"]


def test_ctrl_c_ends_capture_of_fifo_mapper(kernel, tmp_path, fifo_mapper, capture_run):
    """No duration: Ctrl-C (SIGINT) ends it within seconds, with a complete archive."""
    out = tmp_path / "int.tar.zst"
    run = capture_run(out, "-t", "proc,stack", "--pid", str(fifo_mapper.pid))
    run.wait_attached()
    start = time.monotonic()
    run.signal(signal.SIGINT)
    rc, _, err = run.wait(timeout=60)
    assert rc == 0, err
    assert time.monotonic() - start < 20
    with open_archive_db(out) as cap:
        assert cap.manifest["complete"] and cap.manifest["stop_reason"] == "signal"


STOP_SIGNALS_RUN = r"""
import os, signal, sys, time
from pathlib import Path
from uetrace.capture.stop_signals import stop_signals
asked = []
with stop_signals(asked.append, Path("run.tar.zst.partial")):
    for sig in (signal.SIGHUP, signal.SIGINT):
        os.kill(os.getpid(), sig)
    print(len(asked), flush=True)      # two requests to stop: nothing quits yet
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
print("not reached", flush=True)
"""


def test_third_stop_signal_quits_at_once():
    """Should teardown ever hang, a third Ctrl-C/SIGTERM/SIGHUP ends the process at once, saying
    where what was written is."""
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", STOP_SIGNALS_RUN], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - start < 4
    assert res.stdout.split() == ["2"]
    assert res.returncode == 128 + signal.SIGTERM
    assert res.stderr.strip().splitlines() == [
        "trace: error: stop signal 3 (SIGTERM): quitting now; what was written is in run.tar.zst.partial"]
