"""``RequestTrace``: one HTTP exchange as a span, the same for ASGI and WSGI.

The protocol adapters (``asgi.py``, ``wsgi.py``) only translate their messages into these
calls: ``request_chunk``, ``response_started``, ``response_chunk``, ``response_ended``,
``client_disconnected`` and, once, ``finish``.  The exchange records them on the request's span
and ends it.  Nothing here raises into a request: bookkeeping errors are logged.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from middleware._body import BodyCapture, form_dict
from middleware._request import (
    COUNTERS,
    RequestConfig,
    clean_header,
    count,
    is_disconnect,
)
from middleware._tracecontext import parse_traceparent, parse_tracestate
from tracewire import instrumentation
from tracewire.instrumentation import LiveSpan
from tracewire.keys import SpanAttributeKey, TraceMetadataKey

logger = logging.getLogger("middleware")
_now = time.time_ns

__all__ = ["COUNTERS", "RequestTrace"]


class RequestTrace:
    """The span of one request and what the exchange produced so far."""

    __slots__ = (
        "cfg", "complete", "disconnected", "end_ns", "first_byte_ns", "method", "nested",
        "request_body", "request_type", "response_body", "response_type", "span", "status",
    )

    def __init__(self, span: LiveSpan, nested: bool, cfg: RequestConfig, method: str,
                 request_type: str) -> None:
        self.span = span
        self.nested = nested  # a child of a span already active (e.g. an outer middleware's)
        self.cfg = cfg
        self.method = method
        live = span.live_trace
        cap = live.max_value_bytes if live is not None else instrumentation.max_value_bytes()
        self.request_body = BodyCapture(cap) if cfg.capture_bodies else None
        self.response_body = BodyCapture(cap) if cfg.capture_bodies else None
        self.request_type = request_type
        self.response_type = ""
        self.status: int | None = None
        self.first_byte_ns: int | None = None
        self.end_ns: int | None = None
        self.complete = False
        self.disconnected = False

    @classmethod
    def begin(
        cls, cfg: RequestConfig, method: str, path: str, headers: dict[str, list[bytes]]
    ) -> RequestTrace | None:
        """Open the request's span (None when head sampling says no or tracing failed).

        ``headers`` holds the raw values of the header names in ``cfg.header_names`` that were
        sent."""
        try:
            attributes: dict[str, Any] = {"http.method": method, "http.path": path}
            trace_hex = None
            traceparent = headers.get("traceparent")
            # Nested in an active span (an outer middleware's), the request's parent is local.
            nested = instrumentation.current_live_span() is not None
            if not nested and traceparent is not None and len(traceparent) == 1:  # repeated: invalid
                text = clean_header(traceparent[0])
                parsed = parse_traceparent(text) if text is not None else None
                if parsed is not None:
                    trace_hex = parsed[0]
                    attributes["tracewire.remote_parent_span_id"] = parsed[1]
                    attributes["tracewire.remote_trace_flags"] = parsed[2]
                    tracestate = parse_tracestate(headers.get("tracestate", ()))
                    if tracestate:
                        attributes["tracewire.tracestate"] = tracestate
            agent = headers.get("user-agent")
            if agent:
                attributes["http.user_agent"] = agent[0][:512].decode("utf-8", "replace")
            started = instrumentation.start_request_trace(
                f"{method} {path}", cfg.root_span_type, attributes, trace_hex
            )
            if started is None:
                return None
            span, nested = started
            content_type = headers.get("content-type")
            request_type = content_type[0].decode("latin-1") if content_type else ""
            exchange = cls(span, nested, cfg, method, request_type)
            exchange._identify(headers)
            return exchange
        except Exception:
            logger.exception("tracewire: could not start the request trace")
            return None

    def _identify(self, headers: dict[str, list[bytes]]) -> None:
        """X-Request-ID / X-Session-ID / X-User-ID onto the trace; bad values are noted."""
        live = self.span.live_trace
        if live is None:
            return
        cfg = self.cfg
        rejected = []
        for name, target in ((cfg.request_id_header, None),
                             (cfg.session_id_header, TraceMetadataKey.SESSION),
                             (cfg.user_id_header, TraceMetadataKey.USER)):
            values = headers.get(name)
            if not values:
                continue
            value = clean_header(values[0]) if len(values) == 1 else None
            if value is None:
                rejected.append(name)
            elif target is None:
                live.client_request_id = value
            else:
                live.metadata[target] = value
        if rejected:
            live.metadata[TraceMetadataKey.REJECTED_HEADERS] = ",".join(rejected)
            count("rejected_headers", len(rejected))

    @property
    def trace_id(self) -> str:
        return self.span.trace_id

    # -- what the protocol adapters report -------------------------------------------------------
    def request_chunk(self, data: bytes) -> None:
        if self.request_body is not None and data:
            self.request_body.add(data)

    def response_started(self, status: int, content_type: str) -> None:
        self.status = status
        if content_type:
            self.response_type = content_type

    def response_chunk(self, data: bytes) -> None:
        if data:
            if self.first_byte_ns is None:
                self.first_byte_ns = _now()
            if self.response_body is not None:
                self.response_body.add(data)

    def response_ended(self) -> None:
        self.complete = True
        self.end_ns = _now()

    def client_disconnected(self) -> None:
        if not self.complete:
            self.disconnected = True

    def failed_before_body(self) -> None:
        """The app raised before any body byte: the server answers 500, whatever was started."""
        if self.first_byte_ns is None:
            self.status = 500

    # -- the end -----------------------------------------------------------------------------------
    def finish(self, route: str | None, exc: BaseException | None, query: str = "") -> None:
        """Record what the exchange produced on the span and end it (which ends the trace)."""
        span = self.span
        status = self.status
        try:
            if route:
                span.name = f"{self.method} {route}"
            span.set_attribute("http.route", route or span.get_attribute("http.path"))
            if status is None and exc is not None:
                status = 500  # what the server's outermost error handler will answer
            if status is not None:
                span.set_attribute("http.status_code", status)
            self._defer_bodies(query)
            start = span.start_time_ns
            if self.first_byte_ns is not None:
                span.set_attribute("tracewire.ttfb_ms", round((self.first_byte_ns - start) / 1e6, 3))
            if self.end_ns is not None:
                span.set_attribute("tracewire.response_sent_ms", round((self.end_ns - start) / 1e6, 3))
            disconnected = self.disconnected and not self.complete
            if disconnected:
                span.set_attribute("tracewire.client_disconnected", True)
            if exc is not None and disconnected and is_disconnect(exc):
                # The client went away: the server did nothing wrong, so the trace stays OK.
                span.add_event("client_disconnected", {"exception.type": type(exc).__name__})
            elif exc is not None:
                if not _recorded(span, exc):
                    span.record_exception(exc)
            elif status is not None and status >= 500:
                span.set_status("ERROR", f"HTTP {status}")
        except Exception:
            logger.exception("tracewire: could not record the request on trace %s", span.trace_id)
        try:
            span.end()
        except Exception:
            logger.exception("tracewire: could not end trace %s", span.trace_id)

    def _defer_bodies(self, query: str) -> None:
        live = self.span.live_trace
        if not self.cfg.capture_bodies or live is None:
            return
        # Decoding, redacting and encoding the bodies needs nothing but the captured bytes:
        # it runs on the export worker, not in the request's latency.
        held = sum(body.kept for body in (self.request_body, self.response_body) if body is not None)
        live.defer(functools.partial(self._record_bodies, query), 2 * held + len(query))

    def _record_bodies(self, query: str) -> None:
        span, cfg = self.span, self.cfg
        live = span.live_trace
        if self.request_body is not None:
            inputs = self.request_body.value(self.request_type, cfg.redactor)
            if inputs is None and query:
                inputs = {"query_params": cfg.redactor.redact(form_dict(query))}
            if inputs is not None:
                span.set_inputs(inputs)
                if self.request_body.truncated and live is not None:
                    live.note_truncated(span, SpanAttributeKey.INPUTS)
        if self.response_body is not None:
            outputs = self.response_body.value(self.response_type, cfg.redactor)
            if outputs is not None:
                span.set_outputs(outputs)
                if self.response_body.truncated and live is not None:
                    live.note_truncated(span, SpanAttributeKey.OUTPUTS)


def _recorded(span: LiveSpan, exc: BaseException) -> bool:
    """Whether ``exc`` is already on the span (Flask's error signal records it first).

    Matched by type and message: an earlier, different exception of the same type that the app
    recorded itself does not hide the one escaping now."""
    name = type(exc).__name__
    try:
        message = str(exc)
    except Exception:
        return False
    return any(
        event.name == "exception" and event.attributes.get("exception.type") == name
        and event.attributes.get("exception.message") == message
        for event in span.events
    )
