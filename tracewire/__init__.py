"""tracewire: production GenAI tracing for Python web services.

    import tracewire

    @tracewire.trace(span_type=tracewire.SpanType.LLM)
    def generate(prompt): ...

The middleware (``from middleware import TracingMiddleware``) opens a root span per request;
``ENABLE_TRACING=true`` switches tracing on for a deployment.
"""

from __future__ import annotations

from typing import Any

from tracewire import runtime
from tracewire.config import Settings
from tracewire.export.destinations import register_scheme
from tracewire.export.record import TraceRecord
from tracewire.keys import SpanType
from tracewire.model import Span, SpanEvent, Trace, TraceData, TraceInfo
from tracewire.recording.client import TracingClient
from tracewire.recording.fluent import (
    get_active_trace_id,
    get_current_active_span,
    get_last_active_trace_id,
    propagate,
    start_span,
    trace,
    update_current_trace,
)

__version__ = "0.1.0"


def configure(**kwargs: Any) -> Settings:
    """Set up tracing for this process; every SPEC §9 setting is a keyword argument.

    Keyword arguments win over env vars; ``destination=`` takes URIs, ``sinks=`` takes Sink
    instances.  Re-configuring flushes and replaces the current export pipeline.
    A bad argument raises ``ValueError``.
    """
    return runtime.configure(**kwargs)


def flush(timeout: float = 5.0) -> bool:
    """Block until every trace finished so far is exported; False if ``timeout`` ran out."""
    return runtime.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Flush (within ``timeout``, default ``TRACING_SHUTDOWN_TIMEOUT``) and stop exporting."""
    runtime.shutdown(timeout)


def stats() -> dict[str, Any]:
    """Pipeline counters: accepted, sampled_out, dropped_full, truncated, exported and
    export_errors per sink, queue_traces, queue_bytes, and a per-sink breakdown; and the
    ``TracingClient`` registry's client_traces_open and client_traces_evicted."""
    return runtime.stats()


def search_traces(
    table: str,
    filter_string: str | None = None,
    order_by: list[str] | None = None,
    max_results: int = 100,
) -> list[Trace]:
    """Traces in an inference table matching an MLflow-style filter, newest first.

    ``tracewire.search_traces("./traces", "status = 'ERROR' AND metadata.tenant = 'acme'")``.
    The filter is pushed down to the Delta scan; a bad filter raises ``ValueError`` pointing at
    the offending token.  Needs the ``delta`` extra.
    """
    from tracewire.read.search import search_traces as _search

    return _search(table, filter_string, order_by, max_results)


def is_enabled() -> bool:
    """Whether tracing is on in this process (``ENABLE_TRACING`` / ``configure(enabled=)``)."""
    return runtime.is_enabled()


__all__ = [
    "Settings",
    "Span",
    "SpanEvent",
    "SpanType",
    "Trace",
    "TraceData",
    "TraceInfo",
    "TraceRecord",
    "TracingClient",
    "__version__",
    "configure",
    "flush",
    "get_active_trace_id",
    "get_current_active_span",
    "get_last_active_trace_id",
    "is_enabled",
    "propagate",
    "register_scheme",
    "search_traces",
    "shutdown",
    "start_span",
    "stats",
    "trace",
    "update_current_trace",
]
