"""`trace doctor`: check what this machine allows."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from uetrace.cli.output import make_console


@click.command("doctor")
@click.option("--cleanup", is_flag=True,
              help="Remove clsact filters left by a crashed capture (net tracer on kernels without TCX).")
def command(cleanup: bool):
    """Check privileges, BTF, tracefs, libbpf and each attach type the tracers need.

    Exit code 0 when every tracer can run, 1 when something a tracer needs is missing.

    \b
    Examples:
      sudo trace doctor
      sudo trace doctor --cleanup
    """
    from uetrace.capture.doctor import run_checks

    if cleanup:
        _cleanup()
        return

    checks = run_checks()
    t = Table(header_style="bold")
    for col in ("check", "status", "detail", "needed by", "fix"):
        t.add_column(col, overflow="fold")
    bad = False
    for c in checks:
        if c.ok:
            status = "[green]OK[/]"
        elif c.needed_by:
            status, bad = "[red]MISSING[/]", True
        else:
            status = "[yellow]unavailable[/]"
        # Details name processes' files: data, never markup.
        t.add_row(c.name, status, Text(c.detail), c.needed_by or "(optional)", Text("" if c.ok else c.fix))
    make_console().print(t)
    raise SystemExit(1 if bad else 0)


def _cleanup() -> None:
    from uetrace.capture.privileges import require_tracing_privileges
    from uetrace.capture.tracers.netlink_cleanup import remove_leftovers

    require_tracing_privileges()
    removed = remove_leftovers()
    for line in removed:
        click.echo(f"removed {line}")
    click.echo(f"{len(removed)} leftover filter(s) removed" if removed else "nothing to clean up")
