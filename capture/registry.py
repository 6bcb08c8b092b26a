"""Every tracer the capture knows, by name, in attach order."""

from __future__ import annotations

from uetrace.capture.alloc_tracer import AllocTracer
from uetrace.capture.lock_tracer import LockTracer
from uetrace.capture.proc_tracer import ProcTracer
from uetrace.capture.sock_tracer import SockTracer
from uetrace.capture.tracer import Tracer

TRACERS: dict[str, type[Tracer]] = {t.name: t for t in (ProcTracer, SockTracer, LockTracer, AllocTracer)}


def default_tracers() -> list[str]:
    return [name for name, cls in TRACERS.items() if cls.default]
