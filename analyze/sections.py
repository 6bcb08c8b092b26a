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


# Results a section keeps in db.cache for others: cache key -> the sections that read it. `trace analyze`
# lets go of each once the last of them has run, so that the sections after it (flows, profiles)
# do not reach their own peak while millions of exchanges and spans are still held.
CACHE_READERS: dict[str, tuple[str, ...]] = {"http": ("http", "correlation"), "correlate": ("correlation",)}


def done_with(cache: dict, ran: set[str], to_run: set[str]) -> list[str]:
    """The cache keys that no section still to run reads (of those a section that ran may have made)."""
    return [key for key, readers in CACHE_READERS.items()
            if key in cache and ran & set(readers) and not to_run & set(readers)]


def analyzers() -> list[Analyzer]:
    return [importlib.import_module(name).ANALYZER for name in ANALYZERS]
