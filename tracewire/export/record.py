"""``TraceRecord``: a finished trace as every sink receives it — serialized once, with the
fields sinks index on (Kafka key and headers, inference-table columns) already pulled out."""

from __future__ import annotations

import dataclasses
from typing import Any

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
        status_code: Any = root.get_attribute("http.status_code") if root is not None else None
        return cls(
            trace_id=info.trace_id,
            payload=payload,
            client_request_id=info.client_request_id,
            request_time_ms=info.request_time,
            state=info.state,
            status_code=status_code if isinstance(status_code, int) else None,
            execution_duration_ms=info.execution_duration_ms,
            sampling_fraction=sampling_fraction,
            session_id=info.trace_metadata.get(TraceMetadataKey.SESSION),
            user_id=info.trace_metadata.get(TraceMetadataKey.USER),
            request=root.raw_attribute(SpanAttributeKey.INPUTS) if root is not None else None,
            response=root.raw_attribute(SpanAttributeKey.OUTPUTS) if root is not None else None,
            metadata=info.trace_metadata,
            tags=info.tags,
            logging_error_codes=list(trace.logging_error_codes),
        )
