"""The `trace` command line: parses and prints; the work lives in capture/ and analyze/.

Exit codes: 0 success; 1 failure while working; 2 bad input (unreadable archive,
bad option, bad SQL); 77 not permitted (needs root or CAP_BPF/CAP_PERFMON).
"""

from __future__ import annotations

import importlib
import sys
from typing import NoReturn

import click

from uetrace import __version__
from uetrace.errors import UetraceError

# Each command lives in its own module; adding a command is one line here.
COMMANDS = (
    "uetrace.cli.capture",
    "uetrace.cli.info",
    "uetrace.cli.doctor",
    "uetrace.cli.analyze",
    "uetrace.cli.query",
    "uetrace.cli.requests",
    "uetrace.cli.request",
    "uetrace.cli.flows",
    "uetrace.cli.export",
    "uetrace.cli.flamegraph",
    "uetrace.cli.deadlocks",
    "uetrace.cli.leaks",
)


class Group(click.Group):
    """Every failure the user can act on ends in one line on stderr and an exit code (click's own
    usage errors included, which would print the usage and a blank line first)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_error(e)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UetraceError as e:
            click.echo(f"trace: error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_error(e)
        except BrokenPipeError:
            sys.exit(1)


def _usage_error(e: click.UsageError) -> NoReturn:
    where = e.ctx.command_path if e.ctx is not None else "trace"
    message = " ".join(e.format_message().split())
    click.echo(f"trace: error: {message} (see '{where} --help')", err=True)
    sys.exit(e.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="uetrace")
def main() -> None:
    """uetrace: record with eBPF now, analyze anywhere later.

    \b
      sudo trace capture -d 60s -o run.tar.zst    record (root)
      trace analyze run.tar.zst                    summary of everything recorded
      trace query run.tar.zst "SELECT ..."          SQL over the recorded tables
    """


for _name in COMMANDS:
    main.add_command(importlib.import_module(_name).command)
