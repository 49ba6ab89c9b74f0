"""Finishing a trace, on the export worker: build it, redact it, sample it, fit it, record it.

``finish(live, ...)`` turns a ``LiveTrace`` whose root span ended into the ``TraceRecord`` every
sink receives:

1. **build** the read-only ``Trace``: run the deferred recording (the middleware's bodies), add
   process metadata and token usage (MLflow's rule: a span whose ancestor already carries usage
   is not counted again), the trace name tag, previews and state;
2. **redact** span inputs and outputs under the one policy (``tracewire.redaction``) — here, so
   the request path never walks user values;
3. **sample** by size (SPEC §7.2): ``p = threshold / size`` over the threshold, ERROR traces
   always kept; the kept trace records ``tracewire.sampling_fraction = head_rate * p``;
4. **fit** a kept trace over ``max_trace_bytes`` (``tracewire.export.truncation``);
5. **record**: the payload bytes with the indexed columns pulled out (``TraceRecord``).

Strings that cannot be encoded as UTF-8 (lone surrogates, e.g. from ``os.fsdecode``) anywhere in
a trace are escaped here rather than dropping the trace; the request path never pays for that.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import orjson

from tracewire import encoding, redaction
from tracewire.config import Settings
from tracewire.encoding import clean_str
from tracewire.export.record import TraceRecord
from tracewire.export.truncation import ENVELOPE, fit, payload, serialize_spans, target_bytes
from tracewire.keys import (
    PREVIEW_CHARS,
    TRACE_SCHEMA_VERSION,
    SpanAttributeKey,
    TraceMetadataKey,
    TraceTagKey,
)
from tracewire.model import Trace, TraceData, TraceInfo, default_trace_location
from tracewire.recording.live import LiveTrace

_REDACTED_ATTRIBUTES = (SpanAttributeKey.INPUTS, SpanAttributeKey.OUTPUTS)


def build_trace(live: LiveTrace, process_metadata: Mapping[str, str] | None = None,
                experiment_id: str = "0") -> Trace:
    """The finished, read-only ``Trace`` of a live trace whose root span ended."""
    live.run_deferred()
    root = live.root
    assert root is not None and root.end_time_ns is not None
    live.detach()
    metadata = dict(process_metadata or {})
    metadata[TraceMetadataKey.SCHEMA_VERSION] = TRACE_SCHEMA_VERSION
    if live.usage:
        usage = aggregate_usage(live.usage, {s.span_id: s.parent_id for s in live.spans})
        metadata[TraceMetadataKey.TOKEN_USAGE] = encoding.dumps(usage)
    metadata.update(live.metadata)
    tags = {TraceTagKey.TRACE_NAME: root.name}
    tags.update(live.tags)
    state = live.state or ("ERROR" if root.status_code == "ERROR" else "OK")
    policy = redaction.policy()
    if policy.active:
        for span in live.spans:
            texts = span.raw_attributes
            for key in _REDACTED_ATTRIBUTES:
                text = texts.get(key)
                if text is not None:
                    texts[key] = redaction.redact_json(text)
    request_preview = live.request_preview
    if request_preview is None:
        request_preview = _preview(root.raw_attribute(SpanAttributeKey.INPUTS))
    response_preview = live.response_preview
    if response_preview is None:
        response_preview = _preview(root.raw_attribute(SpanAttributeKey.OUTPUTS))
    info = TraceInfo(
        trace_id=live.trace_id,
        request_time=root.start_time_ns // 1_000_000,
        state=state,
        execution_duration_ms=(root.end_time_ns - root.start_time_ns) // 1_000_000,
        client_request_id=live.client_request_id,
        request_preview=request_preview,
        response_preview=response_preview,
        trace_metadata=metadata,
        tags=tags,
        trace_location=default_trace_location(experiment_id),
    )
    trace = Trace(info, TraceData(list(live.spans)))
    if live.error_codes:
        trace.logging_error_codes = list(live.error_codes)
    return trace


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
# Summed only when some counted span reports them (MLflow's TokenUsageKey.cache_keys()).
_USAGE_OPTIONAL_KEYS = (
    "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation_input_tokens_above_1hr",
)


def aggregate_usage(usage: Mapping[str, Any], parents: Mapping[str, str | None]) -> dict[str, int]:
    """The trace's token usage: the sum over spans carrying ``mlflow.chat.tokenUsage``, skipping
    a span whose ancestor carries usage too (it is already in the ancestor's roll-up), as MLflow
    aggregates it — the three counts always, the cache counts when reported; a missing count is
    0 (no ``total_tokens`` is made up)."""
    total = dict.fromkeys(_USAGE_KEYS, 0)
    for span_id, counts in usage.items():
        if _has_ancestor_in(span_id, usage, parents):
            continue
        for key in _USAGE_KEYS:
            total[key] += _count(counts.get(key))
        for key in _USAGE_OPTIONAL_KEYS:
            if key in counts:
                total[key] = total.get(key, 0) + _count(counts[key])
    return total


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _has_ancestor_in(span_id: str, usage: Mapping[str, Any], parents: Mapping[str, str | None]) -> bool:
    seen = {span_id}
    parent = parents.get(span_id)
    while parent is not None and parent not in seen:
        if parent in usage:
            return True
        seen.add(parent)
        parent = parents.get(parent)
    return False


def _preview(raw: str | None) -> str | None:
    if raw is None:
        return None
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        raw = str(encoding.loads_or_text(raw))
    return raw[:PREVIEW_CHARS]


def keep_probability(size: int, threshold: int, is_error: bool) -> float:
    if is_error or size <= threshold:
        return 1.0
    return threshold / size


def finish(
    item: LiveTrace | Trace, settings: Settings, rng: random.Random,
    process_metadata: Mapping[str, str] | None = None,
) -> TraceRecord | None:
    """Build, redact, sample, fit and record one trace; None when size-aware sampling drops it.

    ``item`` is a live trace whose root ended, or a ``Trace`` already built (re-sent, replayed)."""
    if isinstance(item, LiveTrace):
        item = build_trace(item, process_metadata, settings.mlflow_experiment_id)
    return process(item, settings, rng)


def approx_bytes(item: LiveTrace | Trace) -> int:
    """What a queued trace holds, for the pipeline's byte bound (before it is serialized)."""
    if isinstance(item, LiveTrace):
        return item.approx_bytes
    return sum(400 + sum(map(len, span.raw_attributes.values())) for span in item.data.spans)


def process(trace: Trace, settings: Settings, rng: random.Random) -> TraceRecord | None:
    """Serialize, sample and truncate a built trace; None when size-aware sampling drops it."""
    info = trace.info
    info_dict = info.to_dict()  # holds info.trace_metadata itself: the updates below show in it
    try:
        spans_json = serialize_spans(trace)
        info_size = len(orjson.dumps(info_dict))
    except TypeError:  # a string with lone surrogates somewhere: escape them, keep the trace
        scrub(trace)
        info_dict = info.to_dict()
        spans_json = serialize_spans(trace)
        info_size = len(orjson.dumps(info_dict))
    size = len(spans_json) + info_size + ENVELOPE
    p = keep_probability(size, settings.sampling_size_threshold, info.state == "ERROR")
    if p < 1.0 and rng.random() >= p:
        return None
    fraction = settings.sample_rate * p
    metadata = info.trace_metadata
    metadata[TraceMetadataKey.SAMPLING_FRACTION] = repr(fraction)
    metadata[TraceMetadataKey.SIZE_BYTES] = str(size)
    target = target_bytes(settings.max_trace_bytes, info.session_id)
    if trace.logging_error_codes:
        # Also in the JSON, so a consumer rebuilding inference-table rows from Kafka has them.
        metadata[TraceMetadataKey.LOGGING_ERROR_CODES] = ",".join(trace.logging_error_codes)
    data = payload(orjson.dumps(info_dict), spans_json)
    if len(data) > target:
        data = fit(trace, target)
    return TraceRecord.from_trace(trace, data, fraction)


def _clean_all(mapping: dict[str, str]) -> None:
    cleaned = {clean_str(str(k)): clean_str(str(v)) for k, v in mapping.items()}
    mapping.clear()
    mapping.update(cleaned)


def scrub(trace: Trace) -> None:
    """Escape every string of ``trace`` that is not valid UTF-8 (lone surrogates), in place."""
    info = trace.info
    for mapping in (info.trace_metadata, info.tags):
        _clean_all(mapping)
    for name in ("client_request_id", "request_preview", "response_preview", "state", "trace_id"):
        value = getattr(info, name)
        if isinstance(value, str):
            setattr(info, name, clean_str(value))
    for span in trace.data.spans:
        span.name = clean_str(span.name)
        span.status_message = clean_str(span.status_message)
        _clean_all(span.raw_attributes)
        for event in span.events:
            event.name = clean_str(event.name)
            event.attributes = {
                clean_str(k): clean_str(v) if isinstance(v, str) else v
                for k, v in event.attributes.items()
            }
