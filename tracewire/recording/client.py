"""``TracingClient``: explicit span control by id, for threads and callback-style code.

Unlike the fluent API it never touches the current context: a span started here is found again
by ``(trace_id, span_id)``, from any thread.

Open traces live in a registry bounded by count (``TRACING_CLIENT_MAX_TRACES``, default 10,000)
and age (``TRACING_CLIENT_TRACE_TTL``, default one hour): a trace that is never ended is dropped,
oldest first, when a new one would exceed the count or once it is older than the age.  A dropped
trace is not exported; drops are counted (``tracewire.stats()["client_traces_evicted"]``) and
logged at most once a minute.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from tracewire import context
from tracewire.keys import SpanType
from tracewire.recording.live import LIVE_TRACES, NOOP_SPAN, LiveSpan, find_live_span, start_trace
from tracewire.recording.recorder import RECORDER

logger = logging.getLogger(__name__)

_LOG_EVERY = 60.0


class _Registry:
    """Open client traces by id, oldest first, bounded by count and age."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # trace id -> (monotonic start, spans by id); insertion order is start order.
        self._traces: collections.OrderedDict[str, tuple[float, dict[str, LiveSpan]]] = (
            collections.OrderedDict()
        )
        self.evicted = 0
        self._logged_at = -_LOG_EVERY
        self._unlogged = 0

    def add(self, span: LiveSpan) -> None:
        now = time.monotonic()
        with self._lock:
            entry = self._traces.get(span.trace_id)
            if entry is None:
                if span.parent_id is not None:
                    return  # its trace was dropped meanwhile
                entry = self._traces[span.trace_id] = (now, {})
                self._evict(now)
            entry[1][span.span_id] = span

    def get(self, trace_id: str, span_id: str) -> LiveSpan | None:
        with self._lock:
            entry = self._traces.get(trace_id)
            return entry[1].get(span_id) if entry is not None else None

    def pop_trace(self, trace_id: str) -> dict[str, LiveSpan] | None:
        with self._lock:
            entry = self._traces.pop(trace_id, None)
            return entry[1] if entry is not None else None

    def open_traces(self) -> int:
        with self._lock:
            self._evict(time.monotonic())
            return len(self._traces)

    def _evict(self, now: float) -> None:
        settings = RECORDER.settings
        oldest = now - settings.client_trace_ttl
        dropped = 0
        while self._traces:
            trace_id, (started, spans) = next(iter(self._traces.items()))
            if started >= oldest and len(self._traces) <= settings.client_max_traces:
                break
            del self._traces[trace_id]
            for span in spans.values():
                live = span.live_trace
                if live is not None:
                    live.abandon()
                    break
            dropped += 1
        if not dropped:
            return
        self.evicted += dropped
        self._unlogged += dropped
        if now - self._logged_at >= _LOG_EVERY:
            logger.warning(
                "tracewire: dropped %d TracingClient trace(s) never ended (open for over %.0fs or "
                "over TRACING_CLIENT_MAX_TRACES=%d; %d dropped in all): call end_trace()",
                self._unlogged, settings.client_trace_ttl, settings.client_max_traces, self.evicted,
            )
            self._logged_at = now
            self._unlogged = 0


registry = _Registry()


def registry_stats() -> dict[str, int]:
    """``client_traces_open`` and ``client_traces_evicted`` for ``tracewire.stats()``."""
    return {"client_traces_open": registry.open_traces(), "client_traces_evicted": registry.evicted}


class TracingClient:
    """Thread-safe client API (MLflow's ``MlflowClient`` tracing methods).

    Spans are found by ``(trace_id, span_id)``: those it started, and any open span of a live
    fluent trace (``with tracewire.start_span(...) as s: client.start_span("c", s.trace_id,
    s.span_id)``).
    """

    def __init__(self) -> None:
        RECORDER.index_live = True
        # A trace started before the first client existed was not indexed: index the current
        # one now, so its spans can be found from other threads too.
        _index_current()

    def start_trace(
        self,
        name: str,
        span_type: str = SpanType.UNKNOWN,
        inputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> LiveSpan:
        """Start a trace and return its root span (a no-op span when tracing is off)."""
        if not RECORDER.enabled:
            return NOOP_SPAN
        try:
            root = start_trace(name, span_type, attributes)
            if root is None:
                return NOOP_SPAN
            if inputs is not None:
                root.set_inputs(inputs)
            live = root.live_trace
            assert live is not None
            if tags:
                live.tags.update({str(k): str(v) for k, v in tags.items()})
            if metadata:
                live.metadata.update({str(k): str(v) for k, v in metadata.items()})
            registry.add(root)
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
    ) -> LiveSpan:
        """Start a child of span ``parent_id`` in trace ``trace_id``."""
        parent = _find(trace_id, parent_id)
        live = parent.live_trace if parent is not None else None
        if live is None:
            if RECORDER.enabled and trace_id:
                logger.warning("tracewire: no live span %s in trace %s", parent_id, trace_id)
            return NOOP_SPAN
        try:
            span = live.new_span(name, parent_id, span_type, attributes)
            if inputs is not None:
                span.set_inputs(inputs)
            registry.add(span)
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
        span = _find(trace_id, span_id)
        if span is None:
            return
        live = span.live_trace
        try:
            if attributes:
                span.set_attributes(attributes)
            span.end(outputs=outputs, status=status)
        except Exception:
            logger.exception("tracewire: end_span failed")
        if live is not None and span is live.root:
            registry.pop_trace(trace_id)

    def end_trace(
        self,
        trace_id: str,
        outputs: Any = None,
        attributes: Mapping[str, Any] | None = None,
        status: str = "OK",
    ) -> None:
        """End the root span (and so the trace); spans still open are ended first."""
        spans = registry.pop_trace(trace_id)
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


def _find(trace_id: str, span_id: str) -> LiveSpan | None:
    span = registry.get(trace_id, span_id) or find_live_span(trace_id, span_id)
    if span is None and _index_current() == trace_id:
        span = find_live_span(trace_id, span_id)
    return span


def _index_current() -> str | None:
    """Index the live trace of this context's current span; its id, or None."""
    current = context.current_span.get()
    live = current.live_trace if isinstance(current, LiveSpan) else None
    if live is None or live.finished:
        return None
    LIVE_TRACES.setdefault(live.trace_id, live)
    return live.trace_id
