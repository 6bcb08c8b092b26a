"""Every tracer the capture knows, by name, in attach order, and how a
--tracers list selects among them."""

from __future__ import annotations

from uetrace.capture.tracers.alloc import AllocTracer
from uetrace.capture.tracers.contract import Tracer
from uetrace.capture.tracers.lock import LockTracer
from uetrace.capture.tracers.net import NetTracer
from uetrace.capture.tracers.proc import ProcTracer
from uetrace.capture.tracers.sock import SockTracer
from uetrace.capture.tracers.stack import StackTracer
from uetrace.capture.tracers.tls import TlsTracer
from uetrace.errors import BadInputError

TRACERS: dict[str, type[Tracer]] = {t.name: t for t in (ProcTracer, SockTracer, TlsTracer, StackTracer,
                                                      LockTracer, AllocTracer, NetTracer)}


def default_tracers() -> list[str]:
    return [name for name, cls in TRACERS.items() if cls.default]


def select(spec: str | None) -> list[str]:
    """Tracer names from a --tracers value, in attach order: "proc,lock" is exactly
    these, "+lock,+alloc" the default set plus these, None or "" the default set."""
    items = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not items:
        return default_tracers()
    added = [s.startswith("+") for s in items]
    if any(added) and not all(added):
        raise BadInputError(f"--tracers {spec}: either names only (exactly these) or +names only "
                            "(the default set plus these)")
    names = [s.removeprefix("+") for s in items]
    for n in names:
        if n not in TRACERS:
            raise BadInputError(f"unknown tracer {n!r}; choose from {', '.join(TRACERS)}")
    wanted = set(names) | (set(default_tracers()) if all(added) else set())
    return [n for n in TRACERS if n in wanted]
