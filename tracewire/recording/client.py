"""``TracingClient``: explicit span control by id, for threads and callback-style code.

Unlike the fluent API it never touches the current context: a span started here is found again
by ``(trace_id, span_id)``, from any thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tracewire import runtime as _runtime
from tracewire.keys import SpanType
from tracewire.model import Span
from tracewire.recording import live as _live
from tracewire.recording.fluent import NOOP_SPAN

logger = logging.getLogger(__name__)


class TracingClient:
    """Thread-safe client API (MLflow's ``MlflowClient`` tracing methods)."""

    def start_trace(
        self,
        name: str,
        span_type: str = SpanType.UNKNOWN,
        inputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Span:
        """Start a trace and return its root span (a no-op span when tracing is off)."""
        if not _runtime.STATE.enabled:
            return NOOP_SPAN
        try:
            root = _live.start_trace(name, span_type, dict(attributes) if attributes else None)
            if root is None:
                return NOOP_SPAN
            if inputs is not None:
                root.set_inputs(inputs)
            live = root._live
            assert live is not None
            if tags:
                live.tags.update({str(k): str(v) for k, v in tags.items()})
            if metadata:
                live.metadata.update({str(k): str(v) for k, v in metadata.items()})
            _live.registry.add(root)
            return root
        except Exception:
            logger.exception("tracewire: start_trace(%r) failed", name)
            return NOOP_SPAN

    def start_span(
        self,
        name: str,
        trace_id: str,
        parent_id: str,
        span_type: str = SpanType.UNKNOWN,
        inputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span:
        """Start a child of span ``parent_id`` in trace ``trace_id``."""
        parent = _live.registry.get(trace_id, parent_id)
        if parent is None or parent._live is None:
            if _runtime.STATE.enabled and trace_id:
                logger.warning("tracewire: no live span %s in trace %s", parent_id, trace_id)
            return NOOP_SPAN
        try:
            span = parent._live.new_span(
                name, parent.span_id, span_type, dict(attributes) if attributes else None
            )
            if inputs is not None:
                span.set_inputs(inputs)
            _live.registry.add(span)
            return span
        except Exception:
            logger.exception("tracewire: start_span(%r) failed", name)
            return NOOP_SPAN

    def end_span(
        self,
        trace_id: str,
        span_id: str,
        outputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        status: str = "OK",
    ) -> None:
        span = _live.registry.get(trace_id, span_id)
        if span is None:
            return
        try:
            if attributes:
                span.set_attributes(attributes)
            span.end(outputs=outputs, status=status)
        except Exception:
            logger.exception("tracewire: end_span failed")
        if span._live is not None and span is span._live.root:
            _live.registry.pop_trace(trace_id)

    def end_trace(
        self,
        trace_id: str,
        outputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        status: str = "OK",
    ) -> None:
        """End the root span (and so the trace); spans still open are ended first."""
        spans = _live.registry.pop_trace(trace_id)
        if not spans:
            return
        root = next((s for s in spans.values() if s.parent_id is None), None)
        for span in spans.values():
            if span is not root and span.end_time_ns is None:
                span.set_attribute("tracewire.ended_by_end_trace", True)
                span.end()
        if root is not None:
            try:
                if attributes:
                    root.set_attributes(attributes)
                root.end(outputs=outputs, status=status)
            except Exception:
                logger.exception("tracewire: end_trace failed")
