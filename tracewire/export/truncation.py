"""Making a kept trace fit ``max_trace_bytes``, whatever its shape (SPEC §7.4).

1. span attribute values (inputs/outputs first of all), largest first, become truncation markers
   at most half their size (a marker never grows a value);
2. then metadata/tag values, then event attribute values, the same way;
3. then whole spans go, latest started first (with their subtrees), keeping the root, the error
   spans and their ancestors;
4. as a last resort, events, long names and attributes of what is left, the remaining spans, and
   optional metadata/tags go, until only a skeleton of the root is left — which always fits.

What went is counted in the trace metadata (``tracewire.truncation``: ``spans_dropped=1138,
span_values=4``, ...).  The trace being fitted belongs to the export worker that is finishing
it: its spans' attribute texts are edited in place.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from tracewire.encoding import truncation_marker
from tracewire.keys import SpanAttributeKey, TraceMetadataKey, TraceTagKey
from tracewire.model import Trace

_PROTECTED_ATTRIBUTES = frozenset({SpanAttributeKey.REQUEST_ID, SpanAttributeKey.SPAN_TYPE})
ERROR_CODES_KEY = TraceMetadataKey.LOGGING_ERROR_CODES
COUNTS_KEY = TraceMetadataKey.TRUNCATION_COUNTS
# What the truncation counts, in one metadata value: "spans_dropped=1138,span_values=4" (the
# non-zero ones, in this order).
COUNT_KEYS = (
    "span_values",  # span attribute values (inputs, outputs, ...) replaced by markers
    "metadata_values",  # metadata/tag values replaced by markers (or entries with huge keys removed)
    "event_attributes",  # event attribute values replaced by markers
    "spans_dropped",  # whole spans removed
    "events_dropped",  # events removed from the spans that were kept (last resort)
    "attributes_dropped",  # attributes removed from the spans that were kept (last resort)
)
_PROTECTED_METADATA = frozenset(
    {
        TraceMetadataKey.SCHEMA_VERSION,
        TraceMetadataKey.SAMPLING_FRACTION,
        TraceMetadataKey.SIZE_BYTES,
        TraceMetadataKey.TRUNCATED,
        ERROR_CODES_KEY,
        COUNTS_KEY,
    }
)
_PREVIEW_CHARS = 256  # the most a marker keeps of the value it replaces
_MIN_VALUE_BYTES = 192  # smaller values are not worth a marker (one costs ~80 bytes)
_SKELETON_CHARS = 16  # what the last step keeps of names
_KAFKA_ROOM = 512  # record framing, key and headers beside the payload (sinks/kafka.py)



def payload(info_json: bytes, spans_json: bytes) -> bytes:
    return b"".join((b'{"info":', info_json, b',"data":{"spans":', spans_json, b"}}"))


ENVELOPE = len(payload(b"", b""))


def serialize_spans(trace: Trace) -> bytes:
    return orjson.dumps(trace.data.spans_to_list())


def target_bytes(max_trace_bytes: int, session_id: str | None) -> int:
    """The payload size truncation aims at: the cap less room for the Kafka record around it."""
    room = _KAFKA_ROOM + (len(session_id.encode("utf-8")) if session_id else 0)
    return max_trace_bytes - min(room, max_trace_bytes // 32)


def fit(trace: Trace, target: int) -> bytes:
    """The trace's payload, truncated to at most ``target`` bytes."""
    return _Fitter(trace, target).run()


def _encoded_len(text: str) -> int:
    return len(orjson.dumps(text))


def shrink(text: str, encoded: int | None = None) -> str | None:
    """A truncation marker (JSON text) whose encoding is at most half of ``text``'s, or None.

    The marker keeps a preview of up to 256 characters: as many as fit in half the size.
    """
    if encoded is None:
        encoded = _encoded_len(text)
    limit = encoded // 2
    original = len(text.encode("utf-8"))
    chars = min(_PREVIEW_CHARS, len(text), limit)
    while True:
        marker = orjson.dumps(truncation_marker(original, text[:chars])).decode()
        size = _encoded_len(marker)
        if size <= limit:
            return marker
        if chars == 0:
            return None
        chars = max(0, min(chars - 1, chars * limit // size - 1))


class _Fitter:
    """Applies truncation steps, cheapest loss first, until the trace fits ``target`` bytes."""

    def __init__(self, trace: Trace, target: int) -> None:
        self.trace = trace
        self.target = target
        self.counts: collections.Counter[str] = collections.Counter()
        self.spans = trace.data.spans
        self.gone: set[int] = set()  # ids of the spans dropped
        self.dropped_since = False  # spans were dropped since the last serialize
        self.root = trace.root_span
        self.b64 = ""
        self.payload = b""

    # -- measuring --------------------------------------------------------------------------------
    def serialize(self) -> int:
        if self.dropped_since:
            self.trace.data.spans = self.spans = [s for s in self.spans if id(s) not in self.gone]
            self.dropped_since = False
        metadata = self.trace.info.trace_metadata
        counts = ",".join(f"{key}={self.counts[key]}" for key in COUNT_KEYS if self.counts[key])
        if counts:
            metadata[COUNTS_KEY] = counts
        if self.trace.logging_error_codes:
            metadata[ERROR_CODES_KEY] = ",".join(self.trace.logging_error_codes)
        self.payload = payload(orjson.dumps(self.trace.info.to_dict()), serialize_spans(self.trace))
        return len(self.payload)

    def run(self) -> bytes:
        self.trace.info.trace_metadata[TraceMetadataKey.TRUNCATED] = "true"
        if "TRACE_TRUNCATED" not in self.trace.logging_error_codes:
            self.trace.logging_error_codes.append("TRACE_TRUNCATED")
        size = self.serialize()
        if size <= self.target:
            return self.payload
        # Each step estimates what it saved (exactly, but for the counts it adds to the
        # metadata): the JSON is measured again when the estimate says it fits.
        estimate = size
        for step in self._steps():
            estimate += step()
            if estimate <= self.target:
                estimate = self.serialize()
                if estimate <= self.target:
                    return self.payload
        if self.serialize() <= self.target:
            return self.payload
        for brutal in self._last_resort():
            brutal()
            if self.serialize() <= self.target:
                return self.payload
        return self.payload  # a bare root with the required fields: over only under a tiny cap

    def _steps(self) -> Iterator[Callable[[], int]]:
        """Truncation steps in order; each returns the (estimated) change in bytes."""
        yield from self._span_values()
        yield from self._metadata_values()
        yield from self._event_attributes()
        yield from self._drop_spans()

    # -- 1. span values ---------------------------------------------------------------------------
    def _span_values(self) -> Iterator[Callable[[], int]]:
        candidates = [
            (len(text), span, key)
            for span in self.spans
            for key, text in span.raw_attributes.items()
            if len(text) * 6 >= _MIN_VALUE_BYTES and key not in _PROTECTED_ATTRIBUTES
        ]
        candidates.sort(key=lambda c: c[0], reverse=True)
        for _, span, key in candidates:
            yield functools.partial(self._replace, span.raw_attributes, key, "span_values")

    def _replace(self, mapping: dict[str, Any], key: str, counter: str) -> int:
        value = mapping[key]
        if not isinstance(value, str):
            return 0
        encoded = _encoded_len(value)
        if encoded < _MIN_VALUE_BYTES:
            return 0
        marker = shrink(value, encoded)
        if marker is None:
            return 0
        mapping[key] = marker
        self.counts[counter] += 1
        return _encoded_len(marker) - encoded

    # -- 2. metadata and tags -----------------------------------------------------------------------
    def _metadata_values(self) -> Iterator[Callable[[], int]]:
        info = self.trace.info
        candidates: list[tuple[int, dict[str, Any], str]] = []
        for mapping in (info.trace_metadata, info.tags):
            for key, value in mapping.items():
                if key not in _PROTECTED_METADATA and (len(key) + len(value)) * 6 >= _MIN_VALUE_BYTES:
                    candidates.append((len(key) + len(value), mapping, key))
        candidates.sort(key=lambda c: c[0], reverse=True)
        for _, mapping, key in candidates:
            yield functools.partial(self._trim_entry, mapping, key)
        yield self._trim_previews

    def _trim_entry(self, mapping: dict[str, Any], key: str) -> int:
        if len(key) <= _PREVIEW_CHARS:
            return self._replace(mapping, key, "metadata_values")
        value = mapping.pop(key)
        self.counts["metadata_values"] += 1
        return -(_encoded_len(key) + _encoded_len(value) + 2)

    def _trim_previews(self) -> int:
        info = self.trace.info
        saved = 0
        for name in ("request_preview", "response_preview"):
            text = getattr(info, name)
            if text is not None and len(text) > _PREVIEW_CHARS // 2:
                before = _encoded_len(text)
                text = text[: _PREVIEW_CHARS // 2]
                setattr(info, name, text)
                saved += before - _encoded_len(text)
        return -saved

    # -- 3. event attributes --------------------------------------------------------------------------
    def _event_attributes(self) -> Iterator[Callable[[], int]]:
        candidates = [
            (len(value), event.attributes, key)
            for span in self.spans
            if span._events
            for event in span._events
            for key, value in event.attributes.items()
            if isinstance(value, str) and len(value) * 6 >= _MIN_VALUE_BYTES
        ]
        candidates.sort(key=lambda c: c[0], reverse=True)
        for _, attributes, key in candidates:
            yield functools.partial(self._replace, attributes, key, "event_attributes")

    # -- 4. whole spans -------------------------------------------------------------------------------
    def _protected_spans(self) -> set[int]:
        """The root, the error spans and their ancestors (ids of the objects)."""
        by_id = {span.span_id: span for span in self.spans}
        keep: set[int] = set()
        if self.root is not None:
            keep.add(id(self.root))
        for span in self.spans:
            if span.status_code != "ERROR":
                continue
            node: Any = span
            while node is not None and id(node) not in keep:
                keep.add(id(node))
                node = by_id.get(node.parent_id) if node.parent_id else None
        return keep

    def _drop_spans(self) -> Iterator[Callable[[], int]]:
        if len(self.spans) < 2:
            return
        keep = self._protected_spans()
        self.b64 = self.spans[0].to_dict()["trace_id"]
        children: dict[str, list[Any]] = collections.defaultdict(list)
        for span in self.spans:
            if span.parent_id:
                children[span.parent_id].append(span)
        # Latest started first (children start after their parents: leaves go first).
        order = sorted(
            (i for i, span in enumerate(self.spans) if id(span) not in keep),
            key=lambda i: (self.spans[i].start_time_ns, i),
            reverse=True,
        )
        spans = list(self.spans)
        for index in order:
            yield functools.partial(self._drop_subtree, spans[index], children)

    def _drop_subtree(self, span: Any, children: dict[str, list[Any]]) -> int:
        saved = 0
        stack = [span]
        while stack:
            node = stack.pop()
            if id(node) in self.gone:
                continue
            self.gone.add(id(node))
            self.dropped_since = True
            self.counts["spans_dropped"] += 1
            saved += len(orjson.dumps(node.to_dict(self.b64 or None))) + 1
            stack.extend(children.get(node.span_id, ()))
        return -saved

    # -- 5. last resort -------------------------------------------------------------------------------
    def _last_resort(self) -> Iterator[Callable[[], None]]:
        yield self._strip_spans
        yield self._drop_all_but_root
        yield self._strip_info
        yield self._bare_root

    def _strip_spans(self) -> None:
        for span in self.spans:
            if span._events:
                self.counts["events_dropped"] += len(span._events)
                span._events = None
            span.name = span.name[:_PREVIEW_CHARS]
            span.status_message = span.status_message[:_PREVIEW_CHARS]
            for key in [k for k, v in span.raw_attributes.items() if len(v) > 32 or len(k) > 64]:
                if key not in _PROTECTED_ATTRIBUTES:
                    del span.raw_attributes[key]
                    self.counts["attributes_dropped"] += 1

    def _drop_all_but_root(self) -> None:
        keep = self.root if self.root is not None else self.spans[0] if self.spans else None
        for span in self.spans:
            if span is not keep:
                self.gone.add(id(span))
                self.dropped_since = True
                self.counts["spans_dropped"] += 1

    def _strip_info(self) -> None:
        info = self.trace.info
        metadata = info.trace_metadata
        for key in [k for k in metadata if k not in _PROTECTED_METADATA]:
            if len(key) > 64 or len(metadata[key]) > _PREVIEW_CHARS:
                del metadata[key]
                self.counts["metadata_values"] += 1
        name = info.tags.get(TraceTagKey.TRACE_NAME)
        dropped_tags = len(info.tags) - (name is not None)
        info.tags.clear()
        if name is not None:
            info.tags[TraceTagKey.TRACE_NAME] = name[:_PREVIEW_CHARS]
        self.counts["metadata_values"] += dropped_tags
        info.request_preview = info.response_preview = None
        if info.client_request_id is not None and len(info.client_request_id) > 64:
            info.client_request_id = info.client_request_id[:64]

    def _bare_root(self) -> None:
        info = self.trace.info
        metadata = info.trace_metadata
        for key in [k for k in metadata if k not in _PROTECTED_METADATA]:
            del metadata[key]
            self.counts["metadata_values"] += 1
        self.counts["metadata_values"] += len(info.tags)
        info.tags.clear()
        info.client_request_id = None
        for span in self.spans:
            span.name = span.name[:_SKELETON_CHARS]
            span.status_message = span.status_message[:_SKELETON_CHARS]
            for key in [k for k in span.raw_attributes if k not in _PROTECTED_ATTRIBUTES]:
                del span.raw_attributes[key]
                self.counts["attributes_dropped"] += 1


