"""Traces to OTLP protobuf spans, with the attributes each receiver reads (shared by the OTLP and
MLflow sinks).

Every tracewire attribute goes out decoded from its JSON text as a native OTLP value (a dict as a
key-value list, a list as an array), which is how MLflow's own exporter sends them and what its
server turns back into the same JSON.  ``semconv=True`` adds, without overwriting what is there:

- MLflow server (OTLP ingestion): ``session.id``, ``user.id`` and ``mlflow.traceTag.<key>`` on the
  root span (it reads the session, the user and the tags from there); the root span's status
  carries the trace state.
- OpenInference (Phoenix, Arize): ``openinference.span.kind``, ``input.value`` /
  ``output.value`` with their mime types, ``llm.token_count.*``, ``llm.model_name``,
  ``session.id``, ``user.id``, ``metadata``.
- OTel GenAI semantic conventions on LLM/chat/embedding spans (``gen_ai.*``) and HTTP semantic
  conventions on the request's root span.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from tracewire.encoding import truncation_marker
from tracewire.keys import TRACE_ID_PREFIX, SpanAttributeKey, TraceMetadataKey
from tracewire.model import Trace

SCOPE_NAME = "tracewire"
TRACE_TAG_PREFIX = "mlflow.traceTag."  # MLflow's server reads root-span tags from these keys

_INT64 = (-(2**63), 2**63 - 1)
_STATUS = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_OPENINFERENCE_KIND = {
    "LLM": "LLM", "CHAT_MODEL": "LLM", "EMBEDDING": "EMBEDDING", "CHAIN": "CHAIN",
    "AGENT": "AGENT", "TOOL": "TOOL", "RETRIEVER": "RETRIEVER", "RERANKER": "RERANKER",
    "GUARDRAIL": "GUARDRAIL", "EVALUATOR": "EVALUATOR", "PARSER": "CHAIN", "MEMORY": "CHAIN",
    "WORKFLOW": "CHAIN", "TASK": "CHAIN",
}
_GENAI_OPERATION = {"CHAT_MODEL": "chat", "LLM": "text_completion", "EMBEDDING": "embeddings"}
# tracewire's HTTP attribute names (middleware) -> the current HTTP semantic conventions
_HTTP_SEMCONV = {
    "http.method": "http.request.method", "http.route": "http.route",
    "http.status_code": "http.response.status_code", "http.path": "url.path",
    "http.user_agent": "user_agent.original",
}


def set_value(target: AnyValue, value: Any) -> None:
    """Fill an OTLP ``AnyValue`` from a JSON-like Python value (``None`` stays empty)."""
    if value is None:
        return
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if _INT64[0] <= value <= _INT64[1]:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif kind is float:
        target.double_value = value
    elif isinstance(value, Mapping):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            kv = kvlist.values.add()
            kv.key = str(key)
            set_value(kv.value, item)
    elif isinstance(value, (list, tuple)):
        array = target.array_value
        array.SetInParent()
        for item in value:
            set_value(array.values.add(), item)
    elif isinstance(value, (bytes, bytearray)):
        target.bytes_value = bytes(value)
    else:
        target.string_value = str(value)


def _loads(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def key_values(items: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    out = []
    for key, value in items:
        kv = KeyValue(key=key)
        set_value(kv.value, value)
        out.append(kv)
    return out


def resource(attributes: Mapping[str, Any]) -> Resource:
    return Resource(attributes=key_values((k, v) for k, v in attributes.items() if v is not None))


def _io(raw: str) -> tuple[str, str]:
    """``input.value`` text and mime type from a span's JSON inputs/outputs."""
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        value = _loads(raw)
        if isinstance(value, str):
            return value, "text/plain"
    return raw, "application/json"


def _semconv(trace: Trace, span: Any, attrs: dict[str, Any], is_root: bool) -> None:
    """Add the attributes other receivers read (never overwriting one that is there)."""
    span_type = attrs.get(SpanAttributeKey.SPAN_TYPE)
    span_type = span_type if isinstance(span_type, str) else "UNKNOWN"
    extra: dict[str, Any] = {"openinference.span.kind": _OPENINFERENCE_KIND.get(span_type, "UNKNOWN")}
    raw_in = span.raw_attribute(SpanAttributeKey.INPUTS)
    if raw_in is not None:
        extra["input.value"], extra["input.mime_type"] = _io(raw_in)
    raw_out = span.raw_attribute(SpanAttributeKey.OUTPUTS)
    if raw_out is not None:
        extra["output.value"], extra["output.mime_type"] = _io(raw_out)
    usage = attrs.get(SpanAttributeKey.CHAT_USAGE)
    if isinstance(usage, Mapping):
        for ours, openinference, genai in (
            ("input_tokens", "llm.token_count.prompt", "gen_ai.usage.input_tokens"),
            ("output_tokens", "llm.token_count.completion", "gen_ai.usage.output_tokens"),
            ("total_tokens", "llm.token_count.total", None),
        ):
            count = usage.get(ours)
            if isinstance(count, int) and not isinstance(count, bool):
                extra[openinference] = count
                if genai:
                    extra[genai] = count
    if span_type in _GENAI_OPERATION or any(k.startswith("gen_ai.") for k in attrs):
        extra["gen_ai.operation.name"] = _GENAI_OPERATION.get(span_type, "chat")
        inputs = attrs.get(SpanAttributeKey.INPUTS)
        outputs = attrs.get(SpanAttributeKey.OUTPUTS)
        request_model = (
            attrs.get("gen_ai.request.model") or attrs.get("mlflow.llm.model")
            or attrs.get("llm.model_name") or attrs.get("llm.model")
            or (inputs.get("model") if isinstance(inputs, Mapping) else None))
        response_model = attrs.get("gen_ai.response.model") or (
            outputs.get("model") if isinstance(outputs, Mapping) else None) or request_model
        provider = (attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
                    or attrs.get("mlflow.llm.provider"))
        for key, value in (("gen_ai.request.model", request_model),
                           ("gen_ai.response.model", response_model),
                           ("llm.model_name", response_model),
                           ("gen_ai.provider.name", provider), ("llm.provider", provider)):
            if isinstance(value, str) and value:
                extra[key] = value
    if span_type == "TOOL":
        extra["tool.name"] = span.name
    if is_root:
        info = trace.info
        for ours, theirs in _HTTP_SEMCONV.items():
            if ours in attrs and attrs[ours] is not None:
                extra[theirs] = attrs[ours]
        session = info.trace_metadata.get(TraceMetadataKey.SESSION)
        user = info.trace_metadata.get(TraceMetadataKey.USER)
        if session:
            extra["session.id"] = session
        if user:
            extra["user.id"] = user
        if info.trace_metadata:
            extra["metadata"] = orjson.dumps(info.trace_metadata).decode()
        if info.client_request_id:
            extra["tracewire.client_request_id"] = info.client_request_id
        for key, value in info.tags.items():
            extra[TRACE_TAG_PREFIX + key] = value
    for key, value in extra.items():
        attrs.setdefault(key, value)


def _fill(target: Any, items: Iterable[tuple[str, Any]]) -> None:
    """Append key-values to a repeated ``attributes`` field in place (no message copies)."""
    add = target.add
    for key, value in items:
        kv = add()
        kv.key = key
        set_value(kv.value, value)


def encode_trace(trace: Trace, *, semconv: bool = True) -> bytes:
    """The trace's spans as one serialized ``ScopeSpans`` holding only its spans (no scope):
    serialized ScopeSpans concatenate into one (protobuf merges repeated fields), so a request is
    framed from these bytes without copying messages (see ``request_bytes``)."""
    container = ScopeSpans()
    spans = trace.data.spans
    if not spans:
        return b""
    trace_id = bytes.fromhex(trace.info.trace_id.removeprefix(TRACE_ID_PREFIX))
    add_span = container.spans.add
    for span in spans:
        attrs = span.attributes
        is_root = span.parent_id is None
        if semconv:
            _semconv(trace, span, attrs, is_root)
        code = span.status_code
        message = span.status_message
        if is_root and trace.info.state == "ERROR" and code != "ERROR":
            # MLflow's server takes the trace state from the root span's status.
            code, message = "ERROR", message or "trace state ERROR"
        proto = add_span()
        proto.trace_id = (trace_id if span.trace_id == trace.info.trace_id
                          else bytes.fromhex(span.trace_id.removeprefix(TRACE_ID_PREFIX)))
        proto.span_id = bytes.fromhex(span.span_id)
        if span.parent_id:
            proto.parent_span_id = bytes.fromhex(span.parent_id)
        proto.name = span.name
        proto.kind = (ProtoSpan.SPAN_KIND_SERVER if is_root and "http.method" in attrs
                      else ProtoSpan.SPAN_KIND_INTERNAL)
        proto.start_time_unix_nano = span.start_time_ns
        proto.end_time_unix_nano = span.end_time_ns or span.start_time_ns
        _fill(proto.attributes, attrs.items())
        status = proto.status
        status.code = _STATUS.get(code, Status.STATUS_CODE_UNSET)
        if message:
            status.message = message
        for event in span.events:
            proto_event = proto.events.add()
            proto_event.time_unix_nano = event.timestamp_ns
            proto_event.name = event.name
            _fill(proto_event.attributes, event.attributes.items())
    data: bytes = container.SerializeToString()
    return data


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def request_bytes(resource_msg: Resource, scope_version: str, traces: Sequence[bytes]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` of one resource and one scope holding the
    spans of ``traces`` (``encode_trace`` outputs)."""
    scope: bytes = InstrumentationScope(name=SCOPE_NAME, version=scope_version).SerializeToString()
    scope_spans = _field(1, scope) + b"".join(traces)  # ScopeSpans: scope = 1, spans = 2
    resource_spans = _field(1, resource_msg.SerializeToString()) + _field(2, scope_spans)
    return _field(1, resource_spans)  # ExportTraceServiceRequest.resource_spans = 1


_PROTECTED = frozenset({SpanAttributeKey.REQUEST_ID, SpanAttributeKey.SPAN_TYPE})
_PREVIEW_CHARS = 256


def shrink(trace: Trace, budget: int, *, semconv: bool = True) -> bytes:
    """The trace's spans with their largest attribute values replaced, largest first, by the
    SPEC §7 truncation marker until they fit ``budget`` bytes (or nothing large is left); the
    trace is marked ``tracewire.truncated``."""
    candidates = []
    for span in trace.data.spans:
        for key in span.attributes:
            raw = span.raw_attribute(key) or ""
            if key not in _PROTECTED and len(raw) > _PREVIEW_CHARS:
                candidates.append((len(raw), span, key))
    candidates.sort(key=lambda item: item[0], reverse=True)
    trace.info.trace_metadata[TraceMetadataKey.TRUNCATED] = "true"
    encoded = encode_trace(trace, semconv=semconv)
    while candidates and len(encoded) > budget:
        excess = len(encoded) - budget
        while candidates and excess > 0:
            size, span, key = candidates.pop(0)
            text = span.raw_attribute(key) or ""
            marker = truncation_marker(len(text.encode()), str(_loads(text))[:_PREVIEW_CHARS])
            span.raw_attributes[key] = orjson.dumps(marker).decode()
            # inputs/outputs also go out as input.value/output.value
            excess -= size * (2 if semconv and key in (SpanAttributeKey.INPUTS, SpanAttributeKey.OUTPUTS)
                              else 1)
        encoded = encode_trace(trace, semconv=semconv)
    return encoded


def experiment_of(trace: Trace, default: str) -> str:
    location = trace.info.trace_location or {}
    experiment = (location.get("mlflow_experiment") or {}).get("experiment_id")
    return str(experiment) if experiment else default
