"""``TraceRecord``: a finished trace as every sink receives it — serialized once, with the
fields sinks index on (Kafka key and headers, inference-table columns) already pulled out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from tracewire.encoding import loads_or_text
from tracewire.keys import RECORD_SCHEMA_VERSION, SpanAttributeKey, TraceMetadataKey
from tracewire.model import Trace

SCHEMA_VERSION = RECORD_SCHEMA_VERSION  # of the Kafka message layout (header ``tracewire-schema``)


@dataclasses.dataclass(slots=True)
class TraceRecord:
    trace_id: str
    payload: bytes  # the trace JSON (MLflow V3 ``Trace.to_dict()`` shape), UTF-8
    client_request_id: str | None
    request_time_ms: int
    state: str
    status_code: int | None
    execution_duration_ms: int | None
    sampling_fraction: float
    session_id: str | None
    user_id: str | None
    request: str | None  # root span inputs, JSON text
    response: str | None  # root span outputs, JSON text
    metadata: dict[str, str]
    tags: dict[str, str]
    logging_error_codes: list[str]

    @property
    def size(self) -> int:
        return len(self.payload)

    def to_trace(self) -> Trace:
        return Trace.from_json(self.payload)

    @classmethod
    def from_trace(cls, trace: Trace, payload: bytes, sampling_fraction: float) -> TraceRecord:
        info = trace.info
        root = trace.root_span
        columns = indexed_columns(info.trace_metadata,
                                  root.raw_attribute if root is not None else _no_attribute)
        status_code: Any = columns["status_code"]
        if isinstance(status_code, str):
            status_code = loads_or_text(status_code)
        return cls(
            trace_id=info.trace_id,
            payload=payload,
            client_request_id=info.client_request_id,
            request_time_ms=info.request_time,
            state=info.state,
            status_code=status_code if isinstance(status_code, int) else None,
            execution_duration_ms=info.execution_duration_ms,
            sampling_fraction=sampling_fraction,
            session_id=columns["session_id"],
            user_id=columns["user_id"],
            request=columns["request"],
            response=columns["response"],
            metadata=info.trace_metadata,
            tags=info.tags,
            logging_error_codes=list(trace.logging_error_codes),
        )


# Where the inference table's indexed columns come from, for the export worker (from a built
# Trace) and the consumer (from a Kafka message's JSON) alike.
METADATA_COLUMNS = {"session_id": TraceMetadataKey.SESSION, "user_id": TraceMetadataKey.USER}
ROOT_ATTRIBUTE_COLUMNS = {
    "status_code": "http.status_code",
    "request": SpanAttributeKey.INPUTS,
    "response": SpanAttributeKey.OUTPUTS,
}


def indexed_columns(metadata: Mapping[str, Any], root_attribute: Callable[[str], Any]) -> dict[str, Any]:
    """The raw values of the indexed columns: from trace metadata and the root span's
    attributes (JSON text as stored); callers check their types."""
    columns = {column: metadata.get(key) for column, key in METADATA_COLUMNS.items()}
    columns.update((column, root_attribute(key)) for column, key in ROOT_ATTRIBUTE_COLUMNS.items())
    return columns


def _no_attribute(key: str) -> None:
    return None
