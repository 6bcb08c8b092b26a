"""The contract every analyzer follows: typed params in, a typed result out, rendered by the analyzer.

An analyzer module defines a params dataclass (defaults are what `trace analyze` uses), a result
type, and one object `ANALYZER` that satisfies `Analyzer`. Front ends (the CLI, tests, benchmarks)
only ever call through this interface, so adding a section to `trace analyze` is one line in
sections.py and no front end learns a new shape.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from uetrace.analyze.archive_db import ArchiveDb

P = TypeVar("P")
R = TypeVar("R")
P_contra = TypeVar("P_contra", contravariant=True)


@runtime_checkable
class Analyzer(Protocol[P_contra, R]):
    name: str  # section name in `trace analyze` ("summary", "http", ...)
    views: tuple[str, ...]  # derived tables it can add for `trace query`

    def applies(self, db: ArchiveDb) -> bool:
        """Whether the archive holds what this analyzer reads."""
        ...

    def report_params(self, top: int) -> P_contra:
        """The params `trace analyze` runs this section with (`top`: rows in top-N tables)."""
        ...

    def run(self, db: ArchiveDb, params: P_contra) -> R:
        ...

    def render(self, result: R) -> str:
        """The result as text for a terminal or a pipe."""
        ...

    def to_json(self, result: R) -> dict[str, Any]:
        """The result as JSON-serializable data (what --json prints)."""
        ...

    def register_views(self, db: ArchiveDb) -> None:
        """Create `views` on db.con (nothing when `views` is empty)."""
        ...


class ResultRendering(Generic[R]):
    """render and to_json for results that carry `to_text()` and `to_json()` themselves."""

    def render(self, result: R) -> str:
        return result.to_text()  # type: ignore[attr-defined]

    def to_json(self, result: R) -> dict[str, Any]:
        return result.to_json()  # type: ignore[attr-defined]

    def register_views(self, db: ArchiveDb) -> None:
        return None
