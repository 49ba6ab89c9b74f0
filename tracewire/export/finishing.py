"""Size-aware sampling and truncation (SPEC §7), applied on the export worker.

A finished trace is serialized once; its exact size decides the keep probability
``p = threshold / size`` (ERROR traces are always kept), the kept trace records
``tracewire.sampling_fraction = head_rate * p`` so counts can be re-weighted, and a kept trace
over ``max_trace_bytes`` has its largest values replaced by truncation markers until it fits.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from tracewire.config import Settings
from tracewire.encoding import truncation_marker
from tracewire.export.record import TraceRecord
from tracewire.keys import SpanAttributeKey, TraceMetadataKey
from tracewire.model import Trace

_PROTECTED = frozenset({SpanAttributeKey.REQUEST_ID, SpanAttributeKey.SPAN_TYPE})
_MARKER_PREVIEW_CHARS = 256
_ENVELOPE = len(b'{"info":,"data":{"spans":}}')


def keep_probability(size: int, threshold: int, is_error: bool) -> float:
    if is_error or size <= threshold:
        return 1.0
    return threshold / size


def _serialize_spans(trace: Trace) -> bytes:
    return orjson.dumps(trace.data.spans_to_list())


def _truncate(trace: Trace, spans_json: bytes, budget: int) -> bytes:
    """Replace the largest span values, largest first, until the spans fit ``budget`` bytes."""
    candidates: list[tuple[int, Any, str]] = []
    for span in trace.data.spans:
        for key, text in span._attributes.items():
            if key not in _PROTECTED and len(text) > _MARKER_PREVIEW_CHARS:
                candidates.append((len(orjson.dumps(text)), span, key))
    candidates.sort(key=lambda item: item[0], reverse=True)
    size = len(spans_json)
    for encoded_size, span, key in candidates:
        if size <= budget:
            break
        text = span._attributes[key]
        marker = orjson.dumps(
            truncation_marker(len(text.encode("utf-8")), text[:_MARKER_PREVIEW_CHARS])
        ).decode()
        span._attributes[key] = marker
        size -= encoded_size - len(orjson.dumps(marker))
    return _serialize_spans(trace)


def process(trace: Trace, settings: Settings, rng: random.Random) -> TraceRecord | None:
    """Serialize, sample and truncate one trace; None when size-aware sampling drops it."""
    info = trace.info
    spans_json = _serialize_spans(trace)
    info_dict = info.to_dict()  # holds info.trace_metadata itself: the updates below show in it
    info_size = len(orjson.dumps(info_dict))
    size = len(spans_json) + info_size + _ENVELOPE
    p = keep_probability(size, settings.sampling_size_threshold, info.state == "ERROR")
    if p < 1.0 and rng.random() >= p:
        return None
    fraction = settings.sample_rate * p
    metadata = info.trace_metadata
    metadata[TraceMetadataKey.SAMPLING_FRACTION] = repr(fraction)
    metadata[TraceMetadataKey.SIZE_BYTES] = str(size)
    if size > settings.max_trace_bytes:
        metadata[TraceMetadataKey.TRUNCATED] = "true"
        # Room for the info block (metadata grew by a few keys) and the envelope.
        budget = settings.max_trace_bytes - info_size - _ENVELOPE - 512
        spans_json = _truncate(trace, spans_json, max(budget, 0))
        if "TRACE_TRUNCATED" not in trace.logging_error_codes:
            trace.logging_error_codes.append("TRACE_TRUNCATED")
    if trace.logging_error_codes:
        # Also in the JSON, so a consumer rebuilding inference-table rows from Kafka has them.
        metadata["tracewire.logging_error_codes"] = ",".join(trace.logging_error_codes)
    payload = b"".join(
        (b'{"info":', orjson.dumps(info_dict), b',"data":{"spans":', spans_json, b"}}")
    )
    return TraceRecord.from_trace(trace, payload, fraction)
