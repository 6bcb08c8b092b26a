"""The command line as a user meets it: help, examples, bad options."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import trace_cmd

from uetrace.cli import main
from uetrace.durations import parse_duration


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    assert main.commands, "no commands registered"
    for name in main.commands:
        res = runner.invoke(main, [name, "--help"])
        assert res.exit_code == 0, res.output
        assert "Example" in res.output, f"{name} --help has no example"


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1h", 3600), ("3", 3)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("args", [["capture", "-d", "ten"], ["capture", "--tracers", "nope", "-d", "1s"],
                                  ["capture", "--ring-size", "3", "-d", "1s"], ["analyze", "x", "--only", "zzz"]])
def test_bad_options_exit_2_one_line(tmp_path, args):
    res = trace_cmd(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr


def test_version():
    res = trace_cmd("--version", check=True)
    assert "uetrace" in res.stdout
