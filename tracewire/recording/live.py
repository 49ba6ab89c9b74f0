"""A trace while it is being recorded, and the span life cycle shared by every API.

The fluent API, the client API and the middleware all create spans here.  Ending the root span
turns the live trace into a finished ``Trace`` and hands it to the export pipeline; everything
after that (serialization, sampling, truncation, I/O) happens on the export worker.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tracewire import context as _context
from tracewire import encoding as _encoding
from tracewire import runtime as _runtime
from tracewire.keys import TRACE_ID_PREFIX, TRACE_SCHEMA_VERSION, SpanAttributeKey, TraceMetadataKey
from tracewire.model import Span, Trace, TraceData, TraceInfo, _loads, default_trace_location

logger = logging.getLogger(__name__)

_SPAN_TYPE_JSON = {t: f'"{t}"' for t in (
    "LLM", "CHAT_MODEL", "CHAIN", "AGENT", "TOOL", "RETRIEVER", "EMBEDDING", "RERANKER",
    "PARSER", "MEMORY", "GUARDRAIL", "EVALUATOR", "WORKFLOW", "TASK", "UNKNOWN")}
_SPAN_OVERHEAD_BYTES = 400  # ids, names, timestamps, keys: what a span costs beyond its values
_getrandbits = random.getrandbits
_suppressed = _context.suppressed.get
_time_ns = time.time_ns


def new_trace_hex() -> str:
    return "%032x" % (_getrandbits(128) or 1)


def head_sampled(trace_hex: str, rate: float) -> bool:
    """Deterministic head sampling from the trace id (same decision in every service)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int(trace_hex[16:], 16) < rate * 2**64


class LiveTrace:
    """Spans and trace-level fields of one trace until its root span ends."""

    __slots__ = (
        "_id_json",
        "approx_bytes",
        "client_request_id",
        "deferred",
        "error_codes",
        "finished",
        "max_value_bytes",
        "metadata",
        "request_preview",
        "response_preview",
        "root",
        "sampling_rate",
        "spans",
        "state",
        "tags",
        "trace_id",
        "usage",
    )

    def __init__(self, trace_id: str, max_value_bytes: int, sampling_rate: float):
        self.trace_id = trace_id
        self._id_json = '"' + trace_id + '"'
        self.max_value_bytes = max_value_bytes
        self.sampling_rate = sampling_rate
        self.spans: list[Span] = []
        self.root: Span | None = None
        self.metadata: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.client_request_id: str | None = None
        self.request_preview: str | None = None
        self.response_preview: str | None = None
        self.state: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error_codes: list[str] | None = None
        self.finished = False
        self.approx_bytes = 0  # grows as values are captured; the pipeline's byte bound uses it
        self.deferred: list[Callable[[], None]] | None = None

    def new_span(
        self,
        name: str,
        parent_id: str | None,
        span_type: str,
        attributes: dict[str, Any] | None = None,
    ) -> Span:
        span = Span(
            self.trace_id,
            "%016x" % (_getrandbits(64) or 1),
            parent_id,
            name,
            _time_ns(),
            {
                SpanAttributeKey.REQUEST_ID: self._id_json,
                SpanAttributeKey.SPAN_TYPE: _SPAN_TYPE_JSON.get(span_type)
                or _encoding.dumps(str(span_type)),
            },
            self,
        )
        self.approx_bytes += _SPAN_OVERHEAD_BYTES
        if attributes:
            span.set_attributes(attributes)
        if self.finished:
            logger.debug("span %r started after its trace %s finished; not exported", name, self.trace_id)
        else:
            self.spans.append(span)
        if self.root is None:
            self.root = span
        return span

    def defer(self, work: Callable[[], None], approx_bytes: int = 0) -> None:
        """Run ``work`` on the export worker, just before the trace is built.

        For recording that only needs data already captured (the middleware decodes, redacts
        and encodes request/response bodies this way): the request path keeps the raw bytes
        and moves on.  ``approx_bytes`` is what the work will add, for the queue's byte bound.
        """
        if self.deferred is None:
            self.deferred = []
        self.deferred.append(work)
        self.approx_bytes += approx_bytes

    def note_truncated(self, span: Span, key: str) -> None:
        """A captured value was over ``max_value_bytes`` and was replaced by a marker."""
        if span is self.root and key == SpanAttributeKey.INPUTS:
            code = "MAX_REQUEST_SIZE_EXCEEDED"
        elif span is self.root and key == SpanAttributeKey.OUTPUTS:
            code = "MAX_RESPONSE_SIZE_EXCEEDED"
        else:
            code = "TRACE_TRUNCATED"
        if self.error_codes is None:
            self.error_codes = []
        if code not in self.error_codes:
            self.error_codes.append(code)
        self.metadata[TraceMetadataKey.TRUNCATED] = "true"

    def record_usage(self, span_id: str, usage: Any) -> None:
        if isinstance(usage, dict):
            if self.usage is None:
                self.usage = {}
            self.usage[span_id] = usage

    def span_ended(self, span: Span) -> None:
        if span is self.root and not self.finished:
            self.finished = True
            try:
                _runtime.submit(self)
            except Exception:
                logger.exception("tracewire: could not finish trace %s", self.trace_id)

    def to_trace(self) -> Trace:
        """The finished ``Trace``; built on the export worker, off the request path."""
        if self.deferred:
            work, self.deferred = self.deferred, None
            for item in work:
                try:
                    item()
                except Exception:
                    logger.exception("tracewire: deferred recording failed for trace %s", self.trace_id)
        root = self.root
        assert root is not None and root.end_time_ns is not None
        metadata = dict(_runtime.process_metadata())
        metadata[TraceMetadataKey.SCHEMA_VERSION] = TRACE_SCHEMA_VERSION
        if self.usage:
            metadata[TraceMetadataKey.TOKEN_USAGE] = _aggregate_usage(self.usage.values())
        metadata.update(self.metadata)
        tags = {"mlflow.traceName": root.name}
        tags.update(self.tags)
        state = self.state or ("ERROR" if root.status_code == "ERROR" else "OK")
        request_preview = self.request_preview
        if request_preview is None:
            request_preview = _preview(root.raw_attribute(SpanAttributeKey.INPUTS))
        response_preview = self.response_preview
        if response_preview is None:
            response_preview = _preview(root.raw_attribute(SpanAttributeKey.OUTPUTS))
        info = TraceInfo(
            trace_id=self.trace_id,
            request_time=root.start_time_ns // 1_000_000,
            state=state,
            execution_duration_ms=(root.end_time_ns - root.start_time_ns) // 1_000_000,
            client_request_id=self.client_request_id,
            request_preview=request_preview,
            response_preview=response_preview,
            trace_metadata=metadata,
            tags=tags,
            trace_location=default_trace_location(_runtime.settings().mlflow_experiment_id),
        )
        trace = Trace(info, TraceData(list(self.spans)))
        trace.approx_bytes = self.approx_bytes
        if self.error_codes:
            trace.logging_error_codes = list(self.error_codes)
        for span in trace.data.spans:
            span._live = None  # the finished trace no longer records (and holds no cycle)
        return trace


def _preview(raw: str | None) -> str | None:
    if raw is None:
        return None
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        raw = str(_loads(raw))
    return raw[: _encoding.PREVIEW_CHARS]


def _aggregate_usage(usages: Any) -> str:
    total = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    for usage in usages:
        for key in total:
            value = usage.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] += int(value)
    if not total["total_tokens"]:
        total["total_tokens"] = total["input_tokens"] + total["output_tokens"]
    return _encoding.dumps(total)


def start_trace(
    name: str,
    span_type: str,
    attributes: dict[str, Any] | None = None,
    trace_hex: str | None = None,
) -> Span | None:
    """Start a new trace and return its root span, or None when head sampling says no.

    None too on the export worker (sinks' code is never traced: no trace can beget traces).
    """
    if _suppressed():
        return None
    settings = _runtime.settings()
    trace_hex = trace_hex or new_trace_hex()
    if not head_sampled(trace_hex, settings.sample_rate):
        return None
    live = LiveTrace(TRACE_ID_PREFIX + trace_hex, settings.max_value_bytes, settings.sample_rate)
    return live.new_span(name, None, span_type, attributes)


class _Registry:
    """Live traces by id, for the client API (the fluent API holds its spans directly)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: dict[str, dict[str, Span]] = {}

    def add(self, span: Span) -> None:
        with self._lock:
            self._spans.setdefault(span.trace_id, {})[span.span_id] = span

    def get(self, trace_id: str, span_id: str) -> Span | None:
        with self._lock:
            return self._spans.get(trace_id, {}).get(span_id)

    def pop_trace(self, trace_id: str) -> dict[str, Span] | None:
        with self._lock:
            return self._spans.pop(trace_id, None)


registry = _Registry()
