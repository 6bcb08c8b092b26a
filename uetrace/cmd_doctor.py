"""`trace doctor`: check what this machine allows."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table


@click.command("doctor")
def command():
    """Check privileges, BTF, tracefs, libbpf and each attach type the tracers need.

    Exit code 0 when every tracer can run, 1 when something a tracer needs is missing.

    \b
    Example:
      sudo trace doctor
    """
    from uetrace.capture.doctor import run_checks

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
        t.add_row(c.name, status, c.detail, c.needed_by or "(optional)", "" if c.ok else c.fix)
    Console().print(t)
    raise SystemExit(1 if bad else 0)
