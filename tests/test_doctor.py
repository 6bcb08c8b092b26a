"""`trace doctor` on this machine kind: the tracers' needs are met, kprobes and fentry are not."""

from __future__ import annotations

import sys

from helpers import trace_cmd

from uetrace.capture.doctor import run_checks


def test_doctor_reports_this_machine(kernel):
    checks = {c.name: c for c in run_checks()}
    for needed in ("privileges", "kernel BTF", "tracefs", "tracepoint", "tp_btf (BTF tracepoint)", "uprobe",
                   "perf_event cpu-clock", "XDP (generic, lo)", "uprobe_multi link", "socket tracepoints"):
        assert checks[needed].ok, (needed, checks[needed].detail)
    assert "tcp_sendmsg_locked" in checks["socket tracepoints"].detail
    # Measured on these machines: kernel lockdown refuses kprobes and fentry.
    assert not checks["kprobe"].ok and checks["kprobe"].needed_by == ""
    assert not checks["fentry"].ok and checks["fentry"].needed_by == ""
    # This very interpreter (3.11) runs: its frames can be recorded.
    py = checks["Python frames (stack)"]
    assert py.needed_by == "" and f"{sys.version.split()[0]} " in py.detail and "frames recorded" in py.detail, py


def test_doctor_cli_exit_code(kernel):
    res = trace_cmd("doctor", env={"COLUMNS": "200", **__import__("os").environ})
    assert res.returncode == 0, res.stdout
    assert "kprobe" in res.stdout and "unavailable" in res.stdout
