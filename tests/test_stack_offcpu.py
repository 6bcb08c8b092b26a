"""Off-CPU mode end to end (root): a C workload that sleeps 3x as long under wait_a
as under wait_b, recorded by `trace capture -t stack --offcpu`; the off-CPU flame
graph (`trace flamegraph --offcpu --format folded`) must put the sleep under the
right callers, weighted by the time off the CPU."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import FIXTURES, CaptureRun, require_kernel

from uetrace.analyze.stacks import folded
from uetrace.cli import main

ROUNDS = 40  # x (30 + 10) ms asleep: 1.6 s
SLEEP_A_MS, SLEEP_B_MS = 30, 10


@dataclass
class Recorded:
    archive: Path
    pid: int
    folded: dict[tuple[str, ...], int]  # the workload's off-CPU stacks, weighted in ns


def _user_part(stack: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f for f in stack if not f.endswith(folded.KERNEL_SUFFIX))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    require_kernel()
    d = tmp_path_factory.mktemp("offcpu")
    exe = d / "offcpu_workload"
    subprocess.run(["gcc", "-O0", "-g", "-fno-omit-frame-pointer", "-Wall", "-o", str(exe),
                    str(FIXTURES / "offcpu_workload.c")], check=True)
    archive = d / "run.tar.zst"
    # --comm: only the workload's stacks enter the stack map, so no other stack can take
    # (collide with) the slot of one of its stacks.
    run = CaptureRun(archive, "-t", "proc,stack", "--offcpu", "--comm", exe.name, "-d", "60s")
    try:
        run.wait_attached()
        work = subprocess.Popen([str(exe), str(ROUNDS)], stdout=subprocess.PIPE, text=True)
        line = work.stdout.readline().split()
        assert line[:1] == ["pid"], f"workload did not start: {line}"
        assert work.wait(30) == 0
        run.signal(signal.SIGINT)
        rc, _out, err = run.wait()
        assert rc == 0, err
    finally:
        run.kill()
    pid = int(line[1])
    res = _flamegraph(archive, pid, "--offcpu")
    assert res.exit_code == 0, res.output
    return Recorded(archive, pid, folded.parse(res.stdout))


def _flamegraph(archive: Path, pid: int, *args: str):
    """`trace flamegraph --format folded` in this process (analysis is offline)."""
    return CliRunner().invoke(main, ["flamegraph", str(archive), *args, "--format", "folded", "--pid", str(pid),
                                     "-o", "-"])


def _under(fold: dict[tuple[str, ...], int], caller: str) -> int:
    return sum(n for s, n in fold.items() if _user_part(s)[-3:] == ("main", caller, "sleep_ms"))


def test_sleep_time_under_the_right_callers(kernel, recorded):
    fold = recorded.folded
    total = sum(fold.values())
    a, b = _under(fold, "wait_a"), _under(fold, "wait_b")
    # The weights are nanoseconds off the CPU: about ROUNDS x 40 ms in all.
    assert total >= 0.9 * ROUNDS * (SLEEP_A_MS + SLEEP_B_MS) * 1e6, (a, b, total)
    assert abs(100 * a / total - 75) <= 5, (a, b, total)
    assert abs(100 * b / total - 25) <= 5, (a, b, total)


def test_the_sleep_is_in_the_kernel_under_the_syscall(kernel, recorded):
    for caller in ("wait_a", "wait_b"):
        stacks = [s for s in recorded.folded if _user_part(s)[-2:] == (caller, "sleep_ms")]
        assert stacks, (caller, recorded.folded)
        heaviest = max(stacks, key=recorded.folded.get)
        kernel_part = heaviest[heaviest.index("sleep_ms") + 1:]
        assert "do_nanosleep_[k]" in kernel_part and kernel_part[-1].endswith("schedule_[k]"), heaviest
        # The tracer's own frames (BPF program, tracepoint glue) are left out.
        assert not any(f.startswith(("bpf_", "__bpf_trace", "__traceiter")) for f in kernel_part), heaviest


def test_cpu_samples_are_not_mixed_in(kernel, recorded):
    # The on-CPU graph of the same process counts samples, not nanoseconds: a mostly
    # sleeping process has few of them, and none of them inside the sleep.
    res = _flamegraph(recorded.archive, recorded.pid)
    cpu = folded.parse(res.stdout) if res.exit_code == 0 else {}  # exit 1: no sample at all
    asleep_s = ROUNDS * (SLEEP_A_MS + SLEEP_B_MS) / 1000
    assert sum(cpu.values()) < 0.1 * 99 * asleep_s, cpu  # on the CPU < 10% of the time, at 99 Hz
    assert not any("do_nanosleep_[k]" in s and s[-1].endswith("schedule_[k]") for s in cpu), cpu
