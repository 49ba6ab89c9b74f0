"""The instrumentation API: what code that creates spans on behalf of users builds on — the
middleware (``middleware/``) and the autolog integrations (``tracewire.openai``).

A named, stable surface over the recording layer, so instrumentation never reaches into private
modules.  Everything here is fail-open by contract: it never raises because of tracing.

- ``RECORDER.enabled``: the one attribute to check per request or call (tracing on/off).
- ``start_request_trace(...)``: a request's root span — or, when a span is already active (a
  sub-app with its own middleware, a request served inside a span), a child of it.
- ``open_span(...)`` / ``close_span(...)``: a span that outlives a ``with`` block (a stream
  that ends when it is exhausted); ``activate(span)`` / ``deactivate(token)`` make it current.
- ``LiveSpan`` / ``LiveTrace``: the recording objects; ``LiveTrace.defer`` runs recording work
  on the export worker, ``LiveTrace.note_truncated`` records a capped value.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from typing import Any

from tracewire.context import current_span
from tracewire.recording.fluent import close_span, current_live_span, open_span
from tracewire.recording.live import NOOP_SPAN, LiveSpan, LiveTrace, NoOpSpan, start_trace
from tracewire.recording.recorder import RECORDER

logger = logging.getLogger(__name__)

__all__ = [
    "NOOP_SPAN",
    "RECORDER",
    "LiveSpan",
    "LiveTrace",
    "NoOpSpan",
    "activate",
    "close_span",
    "current_live_span",
    "deactivate",
    "max_value_bytes",
    "open_span",
    "start_request_trace",
]


def activate(span: LiveSpan) -> contextvars.Token[Any]:
    """Make ``span`` the current span; pass the token to ``deactivate`` in a ``finally``."""
    return current_span.set(span)


def deactivate(token: contextvars.Token[Any]) -> None:
    current_span.reset(token)


def max_value_bytes() -> int:
    """The cap on one captured value (``TRACING_MAX_VALUE_BYTES``)."""
    return RECORDER.settings.max_value_bytes


def start_request_trace(
    name: str, span_type: str, attributes: Mapping[str, Any] | None = None,
    trace_hex: str | None = None,
) -> tuple[LiveSpan, bool] | None:
    """The span of an incoming request and whether it is nested in an active span.

    Not nested: a new trace's root (``trace_hex`` from a valid ``traceparent``, else random),
    or None when head sampling says no.  Nested: a child of the active span, in its trace."""
    try:
        parent = current_live_span()
        if parent is not None:
            live = parent.live_trace
            if live is None:  # inside an unsampled trace, or one already finished
                return None
            return live.new_span(name, parent.span_id, span_type, attributes), True
        root = start_trace(name, span_type, attributes, trace_hex)
        return None if root is None else (root, False)
    except Exception:
        logger.exception("tracewire: could not start the request trace")
        return None
