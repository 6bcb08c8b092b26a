"""The `trace` command line: parses and prints; the work lives in capture/ and analyze/.

Exit codes: 0 success; 1 failure while working; 2 bad input (unreadable archive,
bad option, bad SQL); 77 not permitted (needs root or CAP_BPF/CAP_PERFMON).

A command that reads an archive reads untrusted input: whatever fails while it runs (a corrupt
Parquet page, a column of the wrong type, text that is not UTF-8, memory) is reported as one line
and exit code 2, never a traceback (UETRACE_DEBUG=1 shows it).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NoReturn

import click

from uetrace import __version__
from uetrace.analyze.text import printable
from uetrace.cli.options import READING_KEY
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
    "uetrace.cli.report",
    "uetrace.cli.upload",
    "uetrace.cli.keygen",
    "uetrace.cli.redact",
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
            click.echo(f"trace: error: {printable(str(e))}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as e:
            _usage_error(e)
        except BrokenPipeError:
            sys.exit(1)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # MemoryError included
            if not ctx.meta.get(READING_KEY) or os.environ.get("UETRACE_DEBUG"):
                raise
            what = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            click.echo(f"trace: error: cannot read the archive: {type(e).__name__}"
                       + (f": {printable(what)}" if what else "")
                       + " (corrupt or crafted? UETRACE_DEBUG=1 shows where)", err=True)
            sys.exit(2)


def _usage_error(e: click.UsageError) -> NoReturn:
    where = e.ctx.command_path if e.ctx is not None else "trace"
    message = printable(" ".join(e.format_message().split()))
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
