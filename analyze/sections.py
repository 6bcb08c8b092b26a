"""The analyzers `trace analyze` runs, in report order.

Each module named here defines `ANALYZER`, which follows analyze/analyzer.py:Analyzer.
Adding a section is one line in ANALYZERS.
"""

from __future__ import annotations

import importlib

from uetrace.analyze.analyzer import Analyzer

ANALYZERS = (
    "uetrace.analyze.summary",
    "uetrace.analyze.http",
    "uetrace.analyze.correlate",
    "uetrace.analyze.flows",
    "uetrace.analyze.stacks.profile",
    "uetrace.analyze.deadlock",
    "uetrace.analyze.leaks",
)


def analyzers() -> list[Analyzer]:
    return [importlib.import_module(name).ANALYZER for name in ANALYZERS]
