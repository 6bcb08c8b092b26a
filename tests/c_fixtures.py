"""C fixture programs (fixtures/*.c): compiled once per test session with frame
pointers (the kernel walks user stacks by frame pointer) and driven over a pipe:
each prints "ready PID", then waits for a line before doing its work."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import FIXTURES

_built: dict[str, Path] = {}


def compile_fixture(name: str, out_dir: Path) -> Path:
    """fixtures/<name>.c -> an executable named <name> (its comm, for --comm)."""
    if name not in _built:
        exe = out_dir / name
        subprocess.run(["gcc", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-Wall", "-o", str(exe),
                        str(FIXTURES / f"{name}.c")], check=True, capture_output=True, text=True)
        _built[name] = exe
    return _built[name]


class FixtureProcess:
    def __init__(self, exe: Path, *args: str):
        self.proc = subprocess.Popen([str(exe), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        assert ready and ready[0] == "ready", f"{exe.name} did not start: {ready}"
        self.pid = int(ready[1])

    def step(self, expect: str) -> None:
        """Send one line (go on to the next phase) and wait for the phase's output line."""
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        got = self.proc.stdout.readline().strip()
        assert got == expect, f"expected {expect!r}, got {got!r}"

    def send(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
