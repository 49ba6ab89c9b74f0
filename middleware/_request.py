"""Request logic shared by the ASGI and WSGI middleware: configuration, header validation, W3C
trace context, opening the root span and finishing it from what the exchange produced.

Nothing here raises into a request: bookkeeping errors are logged and the request goes on.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import tracewire
from middleware._body import BodyCapture, Redactor, form_dict
from tracewire import config
from tracewire import runtime as _runtime
from tracewire.keys import SpanAttributeKey, TraceMetadataKey
from tracewire.recording import live as _live

if TYPE_CHECKING:
    from tracewire.model import Span

logger = logging.getLogger("middleware")

MAX_HEADER_CHARS = 256
REJECTED_HEADERS_KEY = "tracewire.rejected_headers"
# Credentials never reach a trace, whatever the configuration says.
NEVER_CAPTURED = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
# Settings only the middleware reads; any other keyword argument re-configures the process.
_MIDDLEWARE_ONLY = frozenset({
    "capture_bodies", "exclude_paths", "root_span_type", "request_id_header", "session_id_header",
    "user_id_header", "trace_id_header",
})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_MAX_TRACESTATE = 512
_DISCONNECT_ERRORS = frozenset({"ClientDisconnect", "CancelledError", "ClosedResourceError",
                                "BrokenResourceError", "ClientDisconnected"})

_counter_lock = threading.Lock()
COUNTERS = {"rejected_headers": 0}
_off_logged = False


def stats() -> dict[str, int]:
    """Process-wide middleware counters (``rejected_headers``: header values not stored)."""
    with _counter_lock:
        return dict(COUNTERS)


class RequestConfig:
    """What the middleware needs per request, resolved once at construction."""

    __slots__ = (
        "asgi_headers", "capture_bodies", "exclude", "header_names", "redactor", "request_id_header",
        "root_span_type", "session_id_header", "trace_id_header", "user_id_header", "wsgi_headers",
    )

    def __init__(self, settings: config.Settings) -> None:
        for name in (settings.request_id_header, settings.session_id_header, settings.user_id_header,
                     settings.trace_id_header):
            if name in NEVER_CAPTURED:
                raise ValueError(f"tracewire: header {name!r} carries credentials and is never captured")
        self.capture_bodies = settings.capture_bodies
        self.exclude = (
            re.compile("|".join(f"(?:{p})" for p in settings.exclude_paths)).search
            if settings.exclude_paths else None
        )
        self.root_span_type = settings.root_span_type
        self.request_id_header = settings.request_id_header
        self.session_id_header = settings.session_id_header
        self.user_id_header = settings.user_id_header
        self.trace_id_header = settings.trace_id_header
        self.redactor = Redactor(settings.redact_fields)
        self.header_names = frozenset({
            self.request_id_header, self.session_id_header, self.user_id_header,
            "traceparent", "tracestate", "user-agent", "content-type",
        })
        # ASGI header names are lower-case bytes; WSGI ones are HTTP_UPPER_SNAKE environ keys.
        self.asgi_headers = {n.encode("latin-1"): n for n in self.header_names}
        self.wsgi_headers = {
            ("CONTENT_TYPE" if n == "content-type" else "HTTP_" + n.upper().replace("-", "_")): n
            for n in self.header_names
        }


def resolve(kwargs: dict[str, Any]) -> RequestConfig:
    """Middleware keyword arguments: process-level ones go to ``tracewire.configure`` (once)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    sinks = given.pop("sinks", None)
    settings = config.load(**given)  # raises ValueError for a bad or unknown argument
    if sinks is not None or any(k not in _MIDDLEWARE_ONLY for k in given):
        process = {k: v for k, v in given.items() if k not in _MIDDLEWARE_ONLY}
        tracewire.configure(**process, **({"sinks": sinks} if sinks is not None else {}))
    global _off_logged
    if not _runtime.STATE.enabled and not _off_logged:
        _off_logged = True
        logger.info("tracewire: tracing is off (ENABLE_TRACING is not true); requests pass straight through")
    return RequestConfig(settings)


def clean_header(raw: bytes) -> str | None:
    """The header value if it may be stored: UTF-8, at most 256 chars, no control characters."""
    if len(raw) > MAX_HEADER_CHARS * 4:
        return None
    try:
        text = raw.decode("utf-8").strip(" \t")
    except UnicodeDecodeError:
        return None
    if len(text) > MAX_HEADER_CHARS or _CONTROL.search(text):
        return None
    return text


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` from a W3C traceparent, or None when it is invalid."""
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":  # future versions may append fields after a dash
        return None
    return trace_id, parent_id, flags


def begin(
    cfg: RequestConfig, method: str, path: str, headers: dict[str, list[bytes]]
) -> Span | None:
    """Open the root span of a request (None when head sampling says no or tracing failed).

    ``headers`` holds the raw values of the header names in ``cfg.header_names`` that were sent.
    """
    try:
        attributes: dict[str, Any] = {"http.method": method, "http.path": path}
        trace_hex = None
        traceparent = headers.get("traceparent")
        if traceparent is not None and len(traceparent) == 1:  # a repeated traceparent is invalid
            text = clean_header(traceparent[0])
            parsed = parse_traceparent(text) if text is not None else None
            if parsed is not None:
                trace_hex = parsed[0]
                attributes["tracewire.remote_parent_span_id"] = parsed[1]
                attributes["tracewire.remote_trace_flags"] = parsed[2]
                states = [clean_header(v[:_MAX_TRACESTATE * 2]) for v in headers.get("tracestate", ())]
                tracestate = ",".join(s for s in states if s)
                if tracestate:
                    attributes["tracewire.tracestate"] = tracestate[:_MAX_TRACESTATE]
        agent = headers.get("user-agent")
        if agent:
            attributes["http.user_agent"] = agent[0][:512].decode("utf-8", "replace")
        root = _live.start_trace(f"{method} {path}", cfg.root_span_type, attributes, trace_hex)
        if root is None:
            return None
        live = root._live
        assert live is not None
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
            live.metadata[REJECTED_HEADERS_KEY] = ",".join(rejected)
            with _counter_lock:
                COUNTERS["rejected_headers"] += len(rejected)
        return root
    except Exception:
        logger.exception("tracewire: could not start the request trace")
        return None


def finish(
    root: Span,
    cfg: RequestConfig,
    *,
    method: str,
    route: str | None,
    status: int | None,
    exc: BaseException | None,
    request_body: BodyCapture | None,
    request_type: str,
    response_body: BodyCapture | None,
    response_type: str,
    query: str = "",
    first_byte_ns: int | None = None,
    response_end_ns: int | None = None,
    disconnected: bool = False,
) -> None:
    """Record what the exchange produced on the root span and end it (which ends the trace)."""
    try:
        if route:
            root.name = f"{method} {route}"
        root.set_attribute("http.route", route or root.get_attribute("http.path"))
        if status is None and exc is not None:
            status = 500  # what the server's outermost error handler will answer
        if status is not None:
            root.set_attribute("http.status_code", status)
        live = root._live
        if cfg.capture_bodies and live is not None:
            # Decoding, redacting and encoding the bodies needs nothing but the captured bytes:
            # it runs on the export worker, not in the request's latency.
            held = (request_body.kept if request_body else 0) + (response_body.kept if response_body else 0)
            live.defer(functools.partial(_record_bodies, root, cfg, request_body, request_type,
                                         response_body, response_type, query), 2 * held + len(query))
        start = root.start_time_ns
        if first_byte_ns is not None:
            root.set_attribute("tracewire.ttfb_ms", round((first_byte_ns - start) / 1e6, 3))
        if response_end_ns is not None:
            root.set_attribute("tracewire.response_sent_ms", round((response_end_ns - start) / 1e6, 3))
        if disconnected:
            root.set_attribute("tracewire.client_disconnected", True)
        if exc is not None and disconnected and is_disconnect(exc):
            # The client went away: the server did nothing wrong, so the trace stays OK.
            root.add_event("client_disconnected", {"exception.type": type(exc).__name__})
        elif exc is not None:
            root.record_exception(exc)
        elif status is not None and status >= 500:
            root.set_status("ERROR", f"HTTP {status}")
    except Exception:
        logger.exception("tracewire: could not record the request on trace %s", root.trace_id)
    try:
        root.end()
    except Exception:
        logger.exception("tracewire: could not end trace %s", root.trace_id)


def _record_bodies(
    root: Span, cfg: RequestConfig, request_body: BodyCapture | None, request_type: str,
    response_body: BodyCapture | None, response_type: str, query: str,
) -> None:
    if not cfg.capture_bodies:
        return
    live = root._live
    if request_body is not None:
        inputs = request_body.value(request_type, cfg.redactor)
        if inputs is None and query:
            inputs = {"query_params": cfg.redactor.redact(form_dict(query))}
        if inputs is not None:
            root.set_inputs(inputs)
            if request_body.truncated and live is not None:
                live.note_truncated(root, SpanAttributeKey.INPUTS)
    if response_body is not None:
        outputs = response_body.value(response_type, cfg.redactor)
        if outputs is not None:
            root.set_outputs(outputs)
            if response_body.truncated and live is not None:
                live.note_truncated(root, SpanAttributeKey.OUTPUTS)


def is_disconnect(exc: BaseException) -> bool:
    """The exceptions servers and frameworks raise when the peer closed the connection."""
    return isinstance(exc, OSError) or type(exc).__name__ in _DISCONNECT_ERRORS


def now_ns() -> int:
    return time.time_ns()


def value_cap() -> int:
    return _runtime.STATE.settings.max_value_bytes
