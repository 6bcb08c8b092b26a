"""Every tracer the capture knows, by name, in attach order."""

from __future__ import annotations

from uetrace.capture.tracers.alloc import AllocTracer
from uetrace.capture.tracers.contract import Tracer
from uetrace.capture.tracers.lock import LockTracer
from uetrace.capture.tracers.net import NetTracer
from uetrace.capture.tracers.proc import ProcTracer
from uetrace.capture.tracers.sock import SockTracer
from uetrace.capture.tracers.stack import StackTracer
from uetrace.capture.tracers.tls import TlsTracer

TRACERS: dict[str, type[Tracer]] = {t.name: t for t in (ProcTracer, SockTracer, TlsTracer, StackTracer,
                                                      LockTracer, AllocTracer, NetTracer)}


def default_tracers() -> list[str]:
    return [name for name, cls in TRACERS.items() if cls.default]
