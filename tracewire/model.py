"""The read-only model: ``Trace``, ``TraceInfo``, ``TraceData``, ``Span``, ``SpanEvent``, in the
shape of MLflow's V3 ``Trace.to_dict()``.

Attribute values are kept as JSON text, as MLflow stores them, so serializing a finished trace
never re-encodes user values.  Nothing here records: live spans and traces are the recording
layer's (``tracewire.recording.live``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
import time
from binascii import b2a_base64 as _b2a
from collections.abc import Mapping
from typing import Any

import orjson

from tracewire import encoding as _encoding
from tracewire.encoding import loads_or_text
from tracewire.keys import TRACE_ID_PREFIX, SpanAttributeKey, SpanType, TraceMetadataKey

STATUS_TO_OTEL = {"OK": "STATUS_CODE_OK", "ERROR": "STATUS_CODE_ERROR", "UNSET": "STATUS_CODE_UNSET"}
_OTEL_TO_STATUS = {v: k for k, v in STATUS_TO_OTEL.items()}


def _b64(hex_id: str) -> str:
    return _b2a(bytes.fromhex(hex_id), newline=False).decode("ascii")


def _hex_from_b64_or_hex(value: str, width: int) -> str:
    if len(value) == width and all(c in "0123456789abcdef" for c in value):
        return value
    return base64.b64decode(value).hex().rjust(width, "0")


_last_second: tuple[int, str] = (-1, "")


def format_request_time(ms: int) -> str:
    """Render epoch milliseconds as protobuf's JSON Timestamp (what MLflow writes)."""
    global _last_second
    second, millis = divmod(ms, 1000)
    cached = _last_second  # one tuple read: safe across threads
    if cached[0] != second:
        # Traces finish second after second: format each second once.
        cached = _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return "%s.%03dZ" % (cached[1], millis)


def parse_request_time(value: str | int | None) -> int:
    """Epoch milliseconds from an RFC 3339 timestamp (any fraction digits, Z or an offset)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    base, frac, zone = match.groups()
    moment = _dt.datetime.fromisoformat(base + (zone if zone not in (None, "Z", "z") else "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return int(moment.timestamp()) * 1000 + int(((frac or "") + "000")[:3])


_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})?")


class SpanEvent:
    """A timestamped event on a span; exceptions are ``exception`` events."""

    __slots__ = ("attributes", "name", "timestamp_ns")

    def __init__(self, name: str, timestamp_ns: int, attributes: dict[str, Any] | None = None):
        self.name = name
        self.timestamp_ns = timestamp_ns
        self.attributes = attributes or {}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "time_unix_nano": self.timestamp_ns, "attributes": self.attributes}

    def __repr__(self) -> str:
        return f"SpanEvent(name={self.name!r}, attributes={self.attributes!r})"


class Span:
    """One unit of work in a finished trace, as read back (MLflow's ``Span``).

    The spans being recorded are ``LiveSpan`` (``tracewire.recording.live``), which add the
    setters; this class only reads and serializes.
    """

    __slots__ = (
        "_attributes",
        "_events",
        "end_time_ns",
        "name",
        "parent_id",
        "span_id",
        "start_time_ns",
        "status_code",
        "status_message",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        name: str,
        start_time_ns: int,
        attributes: dict[str, str] | None = None,
    ):
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.start_time_ns = start_time_ns
        self.end_time_ns: int | None = None
        self._attributes: dict[str, str] = attributes if attributes is not None else {}
        self.status_code = "UNSET"
        self.status_message = ""
        self._events: list[SpanEvent] | None = None  # most spans have none: allocate lazily

    # -- reading -------------------------------------------------------------------------------
    @property
    def events(self) -> list[SpanEvent]:
        if self._events is None:
            self._events = []
        return self._events

    @events.setter
    def events(self, events: list[SpanEvent]) -> None:
        self._events = events

    @property
    def span_type(self) -> str:
        return str(self.get_attribute(SpanAttributeKey.SPAN_TYPE) or SpanType.UNKNOWN)

    @property
    def inputs(self) -> Any:
        return self.get_attribute(SpanAttributeKey.INPUTS)

    @property
    def outputs(self) -> Any:
        return self.get_attribute(SpanAttributeKey.OUTPUTS)

    @property
    def attributes(self) -> dict[str, Any]:
        """All attributes, decoded from their JSON text."""
        return {k: loads_or_text(v) for k, v in self._attributes.items()}

    @property
    def status(self) -> str:
        return self.status_code

    @property
    def duration_ms(self) -> float | None:
        if self.end_time_ns is None:
            return None
        return (self.end_time_ns - self.start_time_ns) / 1e6

    def get_attribute(self, key: str) -> Any:
        raw = self._attributes.get(key)
        return None if raw is None else loads_or_text(raw)

    def raw_attribute(self, key: str) -> str | None:
        """The attribute's JSON text as stored (what goes on the wire)."""
        return self._attributes.get(key)

    @property
    def raw_attributes(self) -> dict[str, str]:
        """Every attribute as its JSON text: the wire form (the export layer finishing a trace
        redacts and truncates these in place)."""
        return self._attributes

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self, trace_id_b64: str | None = None) -> dict[str, Any]:
        return {
            "trace_id": trace_id_b64 or _b64(self.trace_id[len(TRACE_ID_PREFIX) :]),
            "span_id": _b64(self.span_id),
            "parent_span_id": _b64(self.parent_id) if self.parent_id else None,
            "name": self.name,
            "start_time_unix_nano": self.start_time_ns,
            "end_time_unix_nano": self.end_time_ns,
            "events": [event.to_dict() for event in self._events] if self._events else [],
            "status": {"code": STATUS_TO_OTEL[self.status_code], "message": self.status_message},
            "attributes": self._attributes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Span:
        attributes = {str(k): v if isinstance(v, str) else _encoding.dumps(v)
                      for k, v in (data.get("attributes") or {}).items()}
        trace_id = loads_or_text(attributes.get(SpanAttributeKey.REQUEST_ID, "null"))
        if not trace_id:
            trace_id = TRACE_ID_PREFIX + _hex_from_b64_or_hex(str(data["trace_id"]), 32)
        parent = data.get("parent_span_id")
        status = data.get("status") or {}
        end = data.get("end_time_unix_nano")
        span = cls(
            str(trace_id),
            _hex_from_b64_or_hex(str(data["span_id"]), 16),
            _hex_from_b64_or_hex(str(parent), 16) if parent else None,
            str(data.get("name", "")),
            int(data.get("start_time_unix_nano") or 0),
            attributes,
        )
        span.end_time_ns = int(end) if end else None
        span.status_code = _OTEL_TO_STATUS.get(status.get("code", ""), "UNSET")
        span.status_message = str(status.get("message") or "")
        span.events = [
            SpanEvent(e.get("name", ""), int(e.get("time_unix_nano") or 0), e.get("attributes"))
            for e in data.get("events") or []
        ]
        return span

    def __repr__(self) -> str:
        return (
            f"Span(name={self.name!r}, span_type={self.span_type!r}, span_id={self.span_id!r}, "
            f"parent_id={self.parent_id!r}, status={self.status_code!r})"
        )


class TraceInfo:
    """Trace-level fields (MLflow ``TraceInfoV3``)."""

    __slots__ = (
        "client_request_id",
        "execution_duration_ms",
        "request_preview",
        "request_time",
        "response_preview",
        "state",
        "tags",
        "trace_id",
        "trace_location",
        "trace_metadata",
    )

    def __init__(
        self,
        *,
        trace_id: str,
        request_time: int,
        state: str = "OK",
        execution_duration_ms: int | None = None,
        client_request_id: str | None = None,
        request_preview: str | None = None,
        response_preview: str | None = None,
        trace_metadata: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        trace_location: dict[str, Any] | None = None,
    ):
        self.trace_id = trace_id
        self.request_time = request_time
        self.state = state
        self.execution_duration_ms = execution_duration_ms
        self.client_request_id = client_request_id
        self.request_preview = request_preview
        self.response_preview = response_preview
        self.trace_metadata: dict[str, str] = trace_metadata or {}
        self.tags: dict[str, str] = tags or {}
        self.trace_location = trace_location or default_trace_location()

    @property
    def timestamp_ms(self) -> int:
        return self.request_time

    @property
    def session_id(self) -> str | None:
        return self.trace_metadata.get(TraceMetadataKey.SESSION)

    @property
    def user_id(self) -> str | None:
        return self.trace_metadata.get(TraceMetadataKey.USER)

    @property
    def token_usage(self) -> dict[str, int] | None:
        raw = self.trace_metadata.get(TraceMetadataKey.TOKEN_USAGE)
        return None if raw is None else loads_or_text(raw)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trace_id": self.trace_id,
            "client_request_id": self.client_request_id,
            "trace_location": self.trace_location,
            "request_time": format_request_time(self.request_time),
            "state": self.state,
            "trace_metadata": self.trace_metadata,
            "tags": self.tags,
        }
        if self.execution_duration_ms is not None:
            out["execution_duration_ms"] = self.execution_duration_ms
        if self.request_preview is not None:
            out["request_preview"] = self.request_preview
        if self.response_preview is not None:
            out["response_preview"] = self.response_preview
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceInfo:
        duration = data.get("execution_duration_ms")
        return cls(
            trace_id=str(data["trace_id"]),
            request_time=parse_request_time(data.get("request_time")),
            state=str(data.get("state") or "STATE_UNSPECIFIED"),
            execution_duration_ms=int(duration) if duration is not None else None,
            client_request_id=data.get("client_request_id"),
            request_preview=data.get("request_preview"),
            response_preview=data.get("response_preview"),
            trace_metadata={str(k): str(v) for k, v in (data.get("trace_metadata") or {}).items()},
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            trace_location=data.get("trace_location"),
        )

    def __repr__(self) -> str:
        return f"TraceInfo(trace_id={self.trace_id!r}, state={self.state!r})"


class TraceData:
    __slots__ = ("spans",)

    def __init__(self, spans: list[Span] | None = None):
        self.spans: list[Span] = spans or []

    def to_dict(self) -> dict[str, Any]:
        return {"spans": self.spans_to_list()}

    def spans_to_list(self) -> list[dict[str, Any]]:
        if not self.spans:
            return []
        trace_b64 = _b64(self.spans[0].trace_id[len(TRACE_ID_PREFIX) :])
        return [
            span.to_dict(trace_b64 if span.trace_id == self.spans[0].trace_id else None)
            for span in self.spans
        ]


class Trace:
    """A finished trace: ``info`` plus ``data.spans``; JSON-compatible with MLflow V3."""

    __slots__ = ("data", "info", "logging_error_codes")

    def __init__(self, info: TraceInfo, data: TraceData):
        self.info = info
        self.data = data
        self.logging_error_codes: list[str] = []

    @property
    def trace_id(self) -> str:
        return self.info.trace_id

    @property
    def root_span(self) -> Span | None:
        return next((s for s in self.data.spans if s.parent_id is None), None)

    def search_spans(self, name: str | None = None, span_type: str | None = None) -> list[Span]:
        return [
            s
            for s in self.data.spans
            if (name is None or s.name == name) and (span_type is None or s.span_type == span_type)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info.to_dict(), "data": self.data.to_dict()}

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trace:
        spans = [Span.from_dict(s) for s in (data.get("data") or {}).get("spans") or []]
        return cls(TraceInfo.from_dict(data["info"]), TraceData(spans))

    @classmethod
    def from_json(cls, text: str | bytes) -> Trace:
        return cls.from_dict(orjson.loads(text))

    def __repr__(self) -> str:
        return f"Trace(trace_id={self.info.trace_id!r}, spans={len(self.data.spans)})"


def default_trace_location(experiment_id: str = "0") -> dict[str, Any]:
    return {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}


