"""What the ASGI and WSGI middleware share before a request: their settings (typed keyword
arguments, resolved once at construction), header validation and the process-wide counters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import tracewire
from middleware._body import Redactor
from tracewire import config
from tracewire.instrumentation import RECORDER

logger = logging.getLogger("middleware")

MAX_HEADER_CHARS = 256
# Credentials never reach a trace, whatever the configuration says.
NEVER_CAPTURED = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
# Settings only the middleware reads; any other keyword argument re-configures the process.
_MIDDLEWARE_ONLY = frozenset({
    "capture_bodies", "exclude_paths", "root_span_type", "request_id_header", "session_id_header",
    "user_id_header", "trace_id_header",
})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DISCONNECT_ERRORS = frozenset({"ClientDisconnect", "CancelledError", "ClosedResourceError",
                                "BrokenResourceError", "ClientDisconnected"})

_counter_lock = threading.Lock()
COUNTERS = {"rejected_headers": 0}
_off_logged = False


def stats() -> dict[str, int]:
    """Process-wide middleware counters (``rejected_headers``: header values not stored)."""
    with _counter_lock:
        return dict(COUNTERS)


def count(name: str, n: int = 1) -> None:
    with _counter_lock:
        COUNTERS[name] += n


class MiddlewareSettings(TypedDict, total=False):
    """The keyword arguments of ``TracingMiddleware`` and ``TracingWSGIMiddleware``: every
    tracewire setting (README, "Settings").  Those that concern the whole process are applied
    with ``tracewire.configure`` once; the request ones (headers, bodies, paths) stay per app."""

    enabled: bool
    destination: str | Sequence[str]
    sinks: Sequence[Any]
    sample_rate: float
    sampling_size_threshold: int
    max_trace_bytes: int
    max_value_bytes: int
    capture_bodies: bool
    exclude_paths: str | Sequence[str]
    metadata_from_env: str | Mapping[str, str]
    queue_max_traces: int
    queue_max_bytes: int
    batch_size: int
    batch_interval: float
    export_timeout: float
    shutdown_timeout: float
    client_max_traces: int
    client_trace_ttl: float
    root_span_type: str
    request_id_header: str
    session_id_header: str
    user_id_header: str
    trace_id_header: str
    redact_fields: str | Sequence[str]
    otlp_headers: str | Mapping[str, str]
    service_name: str
    mlflow_experiment_id: str
    autolog: str | Sequence[str]


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


def resolve(kwargs: Mapping[str, Any]) -> RequestConfig:
    """Middleware keyword arguments: process-level ones go to ``tracewire.configure`` (once)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    sinks = given.pop("sinks", None)
    settings = config.load(**given)  # raises ValueError for a bad or unknown argument
    if sinks is not None or any(k not in _MIDDLEWARE_ONLY for k in given):
        process = {k: v for k, v in given.items() if k not in _MIDDLEWARE_ONLY}
        tracewire.configure(**process, **({"sinks": sinks} if sinks is not None else {}))
    global _off_logged
    if not RECORDER.enabled and not _off_logged:
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


def is_disconnect(exc: BaseException) -> bool:
    """The exceptions servers and frameworks raise when the peer closed the connection."""
    return isinstance(exc, OSError) or type(exc).__name__ in _DISCONNECT_ERRORS
