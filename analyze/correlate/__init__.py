"""Correlation: one request's full story across tracers, and the traces its spans make.

Layers: windows (per exchange and side, the thread and time window, from the socket syscalls) ->
evidence (samples, off-CPU time, locks, allocations, packets inside each window) -> spans (ids,
traceparent, parent links, trace ids) -> result (the typed result exports and reports build on) ->
analyzer (the `correlation` section of `trace analyze`); story (one request as a timeline).
"""

from uetrace.analyze.correlate.analyzer import ANALYZER, NAME, VIEWS, applies, correlate, exchange_order, run
from uetrace.analyze.correlate.result import (
    CLIENT,
    SERVER,
    CorrelateParams,
    CorrelationResult,
    Evidence,
    Request,
    Span,
    Window,
)
from uetrace.analyze.correlate.spans import TraceParent, parse_traceparent

__all__ = ["ANALYZER", "CLIENT", "NAME", "SERVER", "VIEWS", "CorrelateParams", "CorrelationResult", "Evidence",
           "Request", "Span", "TraceParent", "Window", "applies", "correlate", "exchange_order",
           "parse_traceparent", "run"]
