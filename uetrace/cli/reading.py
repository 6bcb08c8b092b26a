"""The prologue of every command that reads an archive: open it, print the reader's warnings to
stderr, check that it holds what the command reads, else fail with one line (exit code 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape

from uetrace.analyze.archive_db import ArchiveDb, open_archive_db
from uetrace.analyze.capture_set import CaptureSet, open_capture_set
from uetrace.analyze.text import printable
from uetrace.cli.options import read_limits
from uetrace.cli.output import make_console
from uetrace.errors import BadInputError


def print_warnings(warnings: Iterable[str]) -> None:
    err = make_console(stderr=True)
    for w in warnings:
        # A warning may quote the archive (a member name, a decoder's message): data, not markup.
        err.print(f"[yellow]warning:[/] {escape(printable(w))}")


@contextmanager
def reading(archive: Path, applies: Callable[[ArchiveDb], bool] | None = None, missing: str = "",
            opener: Callable[..., ArchiveDb] = open_archive_db) -> Iterator[ArchiveDb]:
    """`with reading(path, ANALYZER.applies, "no lock records (...)") as db:`; `missing` says what the
    archive lacks and how to capture it. `opener(path, limits)` opens it within the command's
    --max-expand / --strict."""
    with opener(archive, read_limits()) as db:
        print_warnings(db.warnings)
        if applies is not None and not applies(db):
            raise BadInputError(f"{archive}: {missing}")
        yield db


@contextmanager
def reading_set(archives: Sequence[Path], prepare: Callable[[ArchiveDb], None] | None = None,
                applies: Callable[[ArchiveDb], bool] | None = None, missing: str = "") -> Iterator[CaptureSet]:
    """`reading` for several archives: one CaptureSet (archives of one capture_id are one capture);
    `prepare(db)` runs on each capture; `applies` must hold for at least one of them."""
    with open_capture_set(archives, read_limits(), prepare) as cs:
        print_warnings([*cs.notes, *(f"{c.label}: {w}" for c in cs.captures for w in c.db.warnings)])
        if applies is not None and not any(applies(c.db) for c in cs.captures):
            raise BadInputError(f"{', '.join(str(a) for a in archives)}: {missing}")
        yield cs
