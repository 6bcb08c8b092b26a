"""Every tracer the capture knows, by name, in attach order."""

from __future__ import annotations

from uetrace.capture.alloc_tracer import AllocTracer
from uetrace.capture.lock_tracer import LockTracer
from uetrace.capture.net_tracer import NetTracer
from uetrace.capture.proc_tracer import ProcTracer
from uetrace.capture.sock_tracer import SockTracer
from uetrace.capture.stack_tracer import StackTracer
from uetrace.capture.tls_tracer import TlsTracer
from uetrace.capture.tracer import Tracer

TRACERS: dict[str, type[Tracer]] = {t.name: t for t in (ProcTracer, SockTracer, TlsTracer, StackTracer,
                                                      LockTracer, AllocTracer, NetTracer)}


def default_tracers() -> list[str]:
    return [name for name, cls in TRACERS.items() if cls.default]
