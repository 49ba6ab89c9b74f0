"""Recording: a ``LiveSpan`` while it is open, a ``LiveTrace`` until its root span ends.

Every API creates spans here — the fluent API, the client API, the middleware and the autolog
integrations (through ``tracewire.instrumentation``).  Values are captured as JSON text the
moment they are set (later mutation cannot change what was recorded) and capped at
``max_value_bytes``; ending the root span hands the live trace to ``RECORDER.on_finish`` (the
export pipeline), which builds the finished ``Trace`` on the export worker.  Redaction of span
inputs and outputs happens there too (``tracewire.export.finishing``), off the request path.
"""

from __future__ import annotations

import logging
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tracewire import context, encoding, redaction
from tracewire.keys import TRACE_ID_PREFIX, ErrorCode, SpanAttributeKey, TraceMetadataKey
from tracewire.model import STATUS_TO_OTEL, Span, SpanEvent
from tracewire.recording.recorder import RECORDER, head_sampled, new_span_hex, new_trace_hex

logger = logging.getLogger(__name__)

_SPAN_TYPE_JSON = {t: f'"{t}"' for t in (
    "LLM", "CHAT_MODEL", "CHAIN", "AGENT", "TOOL", "RETRIEVER", "EMBEDDING", "RERANKER",
    "PARSER", "MEMORY", "GUARDRAIL", "EVALUATOR", "WORKFLOW", "TASK", "UNKNOWN")}
_SPAN_OVERHEAD_BYTES = 400  # ids, names, timestamps, keys: what a span costs beyond its values
_REDACTED_AT_CAPTURE = frozenset({SpanAttributeKey.INPUTS, SpanAttributeKey.OUTPUTS})
_orjson_dumps = orjson.dumps
_suppressed = context.suppressed.get
_time_ns = time.time_ns


class LiveSpan(Span):
    """A span being recorded.  Every setter takes any value and never raises into user code."""

    __slots__ = ("_live",)

    def __init__(
        self, trace_id: str, span_id: str, parent_id: str | None, name: str, start_time_ns: int,
        attributes: dict[str, str] | None = None, live: LiveTrace | None = None,
    ) -> None:
        super().__init__(trace_id, span_id, parent_id, name, start_time_ns, attributes)
        self._live = live

    @property
    def live_trace(self) -> LiveTrace | None:
        """The trace this span records into (None once it finished, or for a no-op span)."""
        return self._live

    def _encode(self, key: str, value: Any) -> str:
        """JSON text of ``value`` for attribute ``key``, capped at the trace's value limit."""
        live = self._live
        if live is None:
            return encoding.dumps(value)
        limit = live.max_value_bytes
        # Fast path: orjson straight away unless the value is a huge str/bytes (then cut it
        # without encoding it at all, in dumps_capped).
        if not (isinstance(value, (str, bytes, bytearray)) and len(value) > limit):
            try:
                raw = _orjson_dumps(value, default=encoding._default, option=encoding._OPTIONS)
            except Exception:
                raw = None
            if raw is not None:
                if len(raw) <= limit:
                    live.approx_bytes += len(raw)
                    return raw.decode()
                live.note_truncated(self, key)
                if key in _REDACTED_AT_CAPTURE:
                    # The marker keeps a preview of the value: redact before cutting (rare path;
                    # values under the cap are redacted on the export worker).
                    raw = _orjson_dumps(redaction.redact(value), default=encoding._default,
                                        option=encoding._OPTIONS)
                text = encoding.marker_from_json(raw)
                live.approx_bytes += len(text)
                return text
        text, truncated = encoding.dumps_capped(value, limit)
        if truncated:
            live.note_truncated(self, key)
        live.approx_bytes += len(text)
        return text

    def set_inputs(self, inputs: Any) -> None:
        """Record the inputs; values named like secrets are redacted (``tracewire.redaction``)."""
        self._attributes[SpanAttributeKey.INPUTS] = self._encode(SpanAttributeKey.INPUTS, inputs)

    def set_outputs(self, outputs: Any) -> None:
        """Record the outputs; values named like secrets are redacted."""
        self._attributes[SpanAttributeKey.OUTPUTS] = self._encode(SpanAttributeKey.OUTPUTS, outputs)

    def set_attribute(self, key: str, value: Any) -> None:
        if type(key) is not str:
            key = str(key)
        kind = type(value)
        live = self._live
        # Fast path for the scalars that make up most attributes: a short string cannot exceed
        # the value cap (JSON escaping grows a character to at most 6 bytes).
        if live is not None and (
            kind is bool or kind is float or (kind is str and len(value) * 6 < live.max_value_bytes)
            or (kind is int and -(2**63) <= value < 2**64)
        ):
            try:
                raw = _orjson_dumps(value)
            except TypeError:  # a str with lone surrogates: _encode escapes them
                raw = None
            if raw is not None:
                live.approx_bytes += len(raw)
                self._attributes[key] = raw.decode()
                return
        self._attributes[key] = self._encode(key, value)
        if key == SpanAttributeKey.CHAT_USAGE and live is not None:
            live.record_usage(self.span_id, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        set_attribute = self.set_attribute
        for key, value in attributes.items():
            set_attribute(key, value)

    def set_span_type(self, span_type: str) -> None:
        self._attributes[SpanAttributeKey.SPAN_TYPE] = encoding.dumps(str(span_type))

    def set_status(self, code: str, message: str = "") -> None:
        """Set the status: ``"OK"``, ``"ERROR"`` (or ``"UNSET"``); other values are ignored."""
        code = str(getattr(code, "value", code)).upper().removeprefix("STATUS_CODE_")
        if code in STATUS_TO_OTEL:
            self.status_code = code
            self.status_message = str(message or "")

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp_ns: int | None = None
    ) -> None:
        attrs = {str(k): _event_value(v) for k, v in (attributes or {}).items()}
        self.events.append(SpanEvent(str(name), timestamp_ns or _time_ns(), attrs))

    def record_exception(self, exc: BaseException) -> None:
        """Add an ``exception`` event (type, message, stacktrace) and set status ERROR."""
        try:
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:
            stack = ""
        self.add_event(
            "exception",
            {
                "exception.type": type(exc).__name__,
                "exception.message": _safe_str(exc),
                "exception.stacktrace": stack,
            },
        )
        self.set_status("ERROR", f"{type(exc).__name__}: {_safe_str(exc)}")

    def end(self, outputs: Any = None, status: str | None = None) -> None:
        """End the span (idempotent).  Ending a trace's root span finishes the trace."""
        if self.end_time_ns is not None:
            return
        if outputs is not None:
            self._attributes[SpanAttributeKey.OUTPUTS] = self._encode(SpanAttributeKey.OUTPUTS, outputs)
        if status is not None:
            self.set_status(status)
        self.end_time_ns = _time_ns()
        if self.status_code == "UNSET":
            self.status_code = "OK"
        live = self._live
        if live is not None:
            live.span_ended(self)


class NoOpSpan(LiveSpan):
    """Stands in for a span when tracing is off or the trace was not sampled; ignores writes."""

    __slots__ = ()

    def __init__(self, trace_id: str = "", span_id: str = "") -> None:
        super().__init__(trace_id, span_id, None, "", 0)

    def set_inputs(self, inputs: Any) -> None:
        pass

    def set_outputs(self, outputs: Any) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_span_type(self, span_type: str) -> None:
        pass

    def set_status(self, code: str, message: str = "") -> None:
        pass

    def add_event(self, name: str, attributes: Any = None, timestamp_ns: int | None = None) -> None:
        pass

    def record_exception(self, exc: BaseException) -> None:
        pass

    def end(self, outputs: Any = None, status: str | None = None) -> None:
        pass


NOOP_SPAN = NoOpSpan()


class LiveTrace:
    """Spans and trace-level fields of one trace until its root span ends."""

    __slots__ = (
        "__weakref__",
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
        self.spans: list[LiveSpan] = []
        self.root: LiveSpan | None = None
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
        attributes: Mapping[str, Any] | None = None,
    ) -> LiveSpan:
        span = LiveSpan(
            self.trace_id,
            new_span_hex(),
            parent_id,
            name,
            _time_ns(),
            {
                SpanAttributeKey.REQUEST_ID: self._id_json,
                SpanAttributeKey.SPAN_TYPE: _SPAN_TYPE_JSON.get(span_type)
                or encoding.dumps(str(span_type)),
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

    def run_deferred(self) -> None:
        """Run the deferred recording (on the export worker); a failing item is logged."""
        work, self.deferred = self.deferred, None
        for item in work or ():
            try:
                item()
            except Exception:
                logger.exception("tracewire: deferred recording failed for trace %s", self.trace_id)

    def note_truncated(self, span: Span, key: str) -> None:
        """A captured value was over ``max_value_bytes`` and was replaced by a marker."""
        if span is self.root and key == SpanAttributeKey.INPUTS:
            code = ErrorCode.MAX_REQUEST_SIZE_EXCEEDED
        elif span is self.root and key == SpanAttributeKey.OUTPUTS:
            code = ErrorCode.MAX_RESPONSE_SIZE_EXCEEDED
        else:
            code = ErrorCode.TRACE_TRUNCATED
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
            RECORDER.last_trace_id = self.trace_id
            try:
                RECORDER.on_finish(self)
            except Exception:
                logger.exception("tracewire: could not finish trace %s", self.trace_id)

    def abandon(self) -> None:
        """Never export this trace (a client trace dropped unended): its spans stop counting."""
        self.finished = True

    def detach(self) -> None:
        """The trace is being built: its spans stop recording (and hold no cycle)."""
        for span in self.spans:
            span._live = None


def start_trace(
    name: str,
    span_type: str,
    attributes: Mapping[str, Any] | None = None,
    trace_hex: str | None = None,
) -> LiveSpan | None:
    """Start a new trace and return its root span, or None when head sampling says no.

    None too on the export worker (sinks' code is never traced: no trace can beget traces).
    """
    if _suppressed():
        return None
    settings = RECORDER.settings
    trace_hex = trace_hex or new_trace_hex()
    if not head_sampled(trace_hex, settings.sample_rate):
        return None
    live = LiveTrace(TRACE_ID_PREFIX + trace_hex, settings.max_value_bytes, settings.sample_rate)
    if RECORDER.index_live:
        LIVE_TRACES[live.trace_id] = live
    return live.new_span(name, None, span_type, attributes)


# Live traces by id, for the client API to attach to fluent traces too; filled only once a
# TracingClient exists (RECORDER.index_live), so apps that never use one pay nothing.
LIVE_TRACES: weakref.WeakValueDictionary[str, LiveTrace] = weakref.WeakValueDictionary()


def find_live_span(trace_id: str, span_id: str) -> LiveSpan | None:
    """An open span of a live trace (fluent or client) by ids, or None."""
    live = LIVE_TRACES.get(trace_id)
    if live is None or live.finished:
        return None
    return next((span for span in reversed(live.spans) if span.span_id == span_id), None)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _event_value(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    return encoding.dumps(value)
