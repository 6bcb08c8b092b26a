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
        examples = res.output.split("Example", 1)[1].splitlines()[1:]
        assert any(line.split()[:3] in (["trace", name], ["sudo", "trace", name])
                   or line.split()[:2] == ["trace", name] for line in examples if line.strip()), \
            f"{name} --help: no example runs `trace {name}`"


def test_one_module_per_command():
    """Every module of uetrace/cli/ that defines a command is registered, under the module's name."""
    import importlib
    import pkgutil

    import uetrace.cli

    modules = {m.name for m in pkgutil.iter_modules(uetrace.cli.__path__)}
    commands = {m for m in modules if hasattr(importlib.import_module(f"uetrace.cli.{m}"), "command")}
    assert commands == set(main.commands)


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1h", 3600), ("3", 3)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("args", [["capture", "-d", "ten"], ["capture", "--tracers", "nope", "-d", "1s"],
                                  ["capture", "--ring-size", "3", "-d", "1s"], ["analyze", "x", "--only", "zzz"],
                                  ["capture", "--snaplen", "99999"], ["flows", "missing.tar.zst"], ["nosuch"],
                                  ["--bogus"], ["leaks", "x", "--min-age", "soon"]])
def test_bad_options_exit_2_one_line(tmp_path, args):
    res = trace_cmd(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trace: error: "), res.stderr
    assert not res.stdout


def test_version():
    res = trace_cmd("--version", check=True)
    assert "uetrace" in res.stdout
