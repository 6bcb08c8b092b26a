"""What tests share besides fixtures (those stay in conftest.py): paths, the CI
switch, running the CLI and fixture workloads as real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")



def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "needs kernel BTF"
    return None


def require_kernel() -> None:
    """Skip without root/BPF, but fail under CI=true: module-scoped fixtures call this."""
    why = _kernel_unavailable()
    if why:
        if IN_CI:
            pytest.fail(f"kernel test cannot run in CI: {why}")
        pytest.skip(why)


def need_program(name: str) -> None:
    """Skip without a program that scripts/setup.sh installs; fail under CI=true."""
    if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
        if IN_CI:
            pytest.fail(f"{name} is not installed (scripts/setup.sh installs it)")
        pytest.skip(f"needs {name}")


def trace_cmd(*args: str, check: bool = False, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the installed `trace` CLI as a real process."""
    res = subprocess.run([sys.executable, "-m", "uetrace", *args], capture_output=True, text=True,
                         timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"trace {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


class CaptureRun:
    """A `trace capture` subprocess, started before a workload and waited for."""

    def __init__(self, output: Path, *args: str):
        self.output = output
        self.partial = output.with_name(output.name + ".partial")   # where it writes until it ends
        self.proc = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-o", str(output), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_attached(self, timeout: float = 30) -> None:
        """Wait until the archive has its first manifest, i.e. tracers are being attached;
        then give attachment a moment (the first member is written before loading)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"capture exited early: {self.proc.communicate()}")
            if any(p.exists() and p.stat().st_size > 0 for p in (self.partial, self.output)):
                break
            time.sleep(0.05)
        time.sleep(2.0)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def run_fixture(name: str, *args: str, timeout: float = 120) -> dict:
    """Run a fixture workload (fixtures/<name>) and parse the JSON line it prints last."""
    res = subprocess.run([sys.executable, str(FIXTURES / name), *args], capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def traversable(path: Path) -> None:
    """Let other users reach `path` (pytest's base folder is 0700): search permission on it and on
    its parents below /tmp, read on `path` itself."""
    path.chmod(0o755)
    for parent in path.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
