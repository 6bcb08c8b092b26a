"""Privilege separation (issue 11 item 5): a root capture run for a user (SUDO_UID/SUDO_GID, --user)
writes its archive from a process of that user with no capability; offline commands need no
privilege at all."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, require_kernel, trace_cmd, traversable

from uetrace.analyze.archive_db import open_archive_db

NOBODY = 65534
AS_USER = REPO / "tests" / "as_user.py"
EXCHANGE = """
import socket, sys, threading
marker = sys.argv[1].encode()
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
def serve():
    c, _ = srv.accept(); c.sendall(c.recv(65536)); c.close()
t = threading.Thread(target=serve); t.start()
c = socket.create_connection(srv.getsockname()); c.sendall(marker * 4); c.recv(65536); c.close(); t.join()
"""


def sudo_env(uid: int = NOBODY, gid: int = NOBODY) -> dict:
    return {**os.environ, "SUDO_UID": str(uid), "SUDO_GID": str(gid), "SUDO_USER": "nobody"}


def user_folder(tmp_path: Path, uid: int = NOBODY) -> Path:
    """A folder the user owns, under a path the user can traverse."""
    traversable(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    os.chown(folder, uid, uid)
    return folder


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in fh)}


def bpf_fds(pid: int) -> list[str]:
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if "bpf" in target:
            found.append(target)
    return found


def find_writer(proc: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for child in children(proc.pid):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"writer_child" in cmd and status(child)["Uid"].split()[0] != "0":
                return child
        time.sleep(0.05)
    raise AssertionError("no writer process appeared")


@pytest.fixture(scope="module")
def sudo_capture(tmp_path_factory):
    """A capture run as if by `sudo` for nobody, the writer's status read while it ran."""
    require_kernel()
    folder = user_folder(tmp_path_factory.mktemp("privsep"))
    out = folder / "run.tar.zst"
    marker = f"UETRACE-PRIVSEP-{secrets.token_hex(6)}"
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-d", "6s", "-t", "sock,proc",
                             "-o", str(out)], stderr=subprocess.PIPE, text=True, env=sudo_env())
    writer = find_writer(proc)
    seen = {"writer": status(writer), "writer_bpf": bpf_fds(writer), "root": status(proc.pid)}
    time.sleep(2.5)   # attached by now
    seen["root_bpf"] = bpf_fds(proc.pid)
    subprocess.run([sys.executable, "-c", EXCHANGE, marker], check=True, timeout=30)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, seen, marker


def test_writer_runs_as_the_user_without_capabilities(sudo_capture):
    _, seen, _ = sudo_capture
    st = seen["writer"]
    assert st["Uid"].split() == [str(NOBODY)] * 4 and st["Gid"].split() == [str(NOBODY)] * 4
    assert st["Groups"] == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[caps], 16) == 0, (caps, st[caps])
    assert st["NoNewPrivs"] == "1"
    assert seen["writer_bpf"] == []   # no program, map or ring of the capture
    assert seen["root"]["Uid"].split()[0] == "0" and seen["root_bpf"]   # root keeps them


def test_archive_belongs_to_the_user_and_has_the_records(sudo_capture):
    out, _, marker = sudo_capture
    st = out.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (NOBODY, NOBODY, 0o600)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]   # no spool, no .partial
    with open_archive_db(out) as db:
        assert db.warnings == [] and db.manifest["complete"]
        assert db.manifest["writer"] == {"uid": NOBODY, "gid": NOBODY, "user": "nobody"}
        hits = db.query("SELECT count(*) FROM sock_data WHERE contains(CAST(payload AS VARCHAR), ?)", [marker])
        assert hits[0][0] >= 2
        assert db.query("SELECT count(*) FROM proc")[0][0] > 0
        assert db.manifest["tracers"]["sock"]["kinds"]["sock_data"]["records"] > 0


@pytest.mark.parametrize("reachable", [True, False], ids=["not-writable", "not-searchable"])
def test_user_who_cannot_write_there_one_line_exit_2(kernel, tmp_path, reachable):
    if reachable:
        traversable(tmp_path)
    folder = tmp_path / "rootonly"
    folder.mkdir(mode=0o755)
    start = time.monotonic()
    res = trace_cmd("capture", "-q", "-d", "30s", "-o", str(folder / "x.tar.zst"), env=sudo_env())
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Permission denied" in lines[0] and "nobody" in lines[0]
    assert time.monotonic() - start < 20   # refused before attaching, not after 30 s
    assert list(folder.iterdir()) == []


def test_user_option_and_unknown_user(kernel, tmp_path):
    res = trace_cmd("capture", "-q", "-d", "1s", "--user", "no-such-user-here", "-o", str(tmp_path / "x.tar.zst"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "no such user" in res.stderr
    folder = user_folder(tmp_path)
    out = folder / "u.tar.zst"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "--user", "nobody", "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_uid == NOBODY


def test_root_login_writes_as_root(kernel, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    out = tmp_path / "r.tar.zst"
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "-o", str(out), env=env)
    assert res.returncode == 0, res.stderr
    assert out.stat().st_uid == 0
    with open_archive_db(out) as db:
        assert "writer" not in db.manifest


def test_writer_killed_by_the_user_stops_the_capture(kernel, tmp_path):
    """The user owns the writer and may kill it: root stops within seconds, one line, exit 1."""
    folder = user_folder(tmp_path)
    out = folder / "k.tar.zst"
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-t", "proc", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, env=sudo_env())
    try:
        writer = find_writer(proc)
        time.sleep(2)
        subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "kill", "-KILL",
                        str(writer)], check=True)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert len(err.strip().splitlines()) == 1 and "writer process" in err


def as_user(*args: str, home: Path) -> subprocess.CompletedProcess:
    """The CLI as nobody (tests/as_user.py: no privilege from before the arguments are parsed)."""
    return subprocess.run([sys.executable, str(AS_USER), str(NOBODY), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HOME": str(home)}, cwd=home)


def test_offline_commands_need_no_privilege(sudo_capture, tmp_path):
    out, _, _ = sudo_capture
    traversable(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    copy = shared / "run.tar.zst"
    shutil.copy(out, copy)
    copy.chmod(0o644)
    for args in (("info", str(copy)), ("analyze", str(copy)), ("requests", str(copy)),
                 ("query", str(copy), "SELECT count(*) AS n FROM proc"), ("flamegraph", str(copy), "-o",
                                                                           str(shared / "f.svg"))):
        res = as_user(*args, home=shared)
        if args[0] == "flamegraph":   # no stack records here: a one-line refusal, still no traceback
            assert res.returncode in (0, 2) and "Traceback" not in res.stderr, res.stderr
            continue
        assert res.returncode == 0, (args, res.stderr)
        assert "Traceback" not in res.stderr
    res = as_user("capture", "-d", "1s", "-o", str(shared / "c.tar.zst"), home=shared)
    assert res.returncode == 77 and len(res.stderr.strip().splitlines()) == 1 and "CAP_BPF" in res.stderr


def test_encrypted_archive_written_by_the_user(kernel, tmp_path):
    folder = user_folder(tmp_path)
    key = tmp_path / "key.txt"
    recipient = trace_cmd("keygen", "-o", str(key), check=True).stdout.strip()
    out = folder / "e.tar.zst.age"
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "--encrypt-to", recipient, "-o", str(out),
                    env=sudo_env())
    assert res.returncode == 0, res.stderr
    assert out.stat().st_uid == NOBODY and out.read_bytes().startswith(b"age-encryption.org/")
    res = trace_cmd("info", "--identity", str(key), str(out))
    assert res.returncode == 0 and "proc" in res.stdout, res.stderr


def test_root_killed_the_writer_keeps_what_it_wrote(kernel, tmp_path):
    """SIGKILL of the root capture: the writer sees its input end, closes its open segments into
    NAME.partial and exits; no spool is left."""
    folder = user_folder(tmp_path)
    out = folder / "k.tar.zst"
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-t", "proc", "-o", str(out)],
                            stderr=subprocess.PIPE, env=sudo_env())
    writer = find_writer(proc)
    time.sleep(1)
    for _ in range(20):  # process events to record: a quiet machine may make none in these seconds
        subprocess.run(["/bin/true"])
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{writer}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{writer}") or status(writer)["State"].startswith("Z")
    partial = out.with_name(out.name + ".partial")
    assert sorted(p.name for p in folder.iterdir()) == [partial.name]
    assert partial.stat().st_uid == NOBODY
    res = trace_cmd("info", str(partial))
    assert res.returncode == 0 and "did not finish" in res.stderr, res.stderr
    with open_archive_db(partial) as db:
        assert db.query("SELECT count(*) FROM proc")[0][0] > 0


def test_failed_capture_leaves_nothing_as_the_user(kernel, tmp_path):
    folder = user_folder(tmp_path)
    res = trace_cmd("capture", "-q", "-d", "2s", "-t", "lock", "-o", str(folder / "l.tar.zst"), env=sudo_env())
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert list(folder.iterdir()) == []


def test_writer_stopped_by_the_user_does_not_hang_the_capture(kernel, tmp_path):
    """SIGSTOP on the writer (its user may send it): Ctrl-C still ends the root capture within
    seconds, with one line and exit 1."""
    folder = user_folder(tmp_path)
    # PYTHONFAULTHANDLER: should it hang, SIGABRT makes it print where each of its threads is.
    proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-t", "proc,sock", "-o",
                             str(folder / "s.tar.zst")], stderr=subprocess.PIPE, text=True,
                            env={**sudo_env(), "PYTHONFAULTHANDLER": "1"})
    try:
        writer = find_writer(proc)
        partial = folder / "s.tar.zst.partial"
        deadline = time.monotonic() + 30
        while not partial.exists() and time.monotonic() < deadline:   # the writer is ready
            time.sleep(0.05)
        time.sleep(2)
        os.kill(writer, signal.SIGSTOP)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"the capture did not end within 30 s of Ctrl-C:\n{err}") from None
        assert time.monotonic() - start < 15
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1 and "writer process" in err, err


def test_writer_imports_nothing_from_the_users_folder(kernel, tmp_path):
    """sudo is often run from the user's own folder: a module planted there must not be imported by
    the writer while it is still root (`python -m` puts the working folder first on sys.path)."""
    folder = user_folder(tmp_path)
    pwned = tmp_path / "PWNED"
    for name in ("zstandard", "pyarrow", "json", "uetrace"):
        (folder / f"{name}.py").write_text(f"open({str(pwned)!r}, 'w').write({name!r})\n")
    # The parent as the `trace` script runs it (its own folder first on sys.path, not the working one).
    entry = "import sys; sys.path.pop(0); from uetrace.cli import main; main(prog_name='trace')"
    res = subprocess.run([sys.executable, "-c", entry, "capture", "-q", "-d", "1s", "-t", "proc", "-o",
                          "rel.tar.zst"], capture_output=True, text=True, timeout=120, env=sudo_env(), cwd=folder)
    assert res.returncode == 0, res.stderr
    assert not pwned.exists(), pwned.read_text()
    assert (folder / "rel.tar.zst").stat().st_uid == NOBODY   # a relative -o still lands in the user's folder
