"""The inference table: its columns, types and partitioning, and the rows a trace becomes.

One module owns the schema (SPEC §6, shaped like Databricks inference tables); the Delta sink
writes it, and the consumer, search, push and the viewer read and write it through here.
pyarrow is imported when a function is called, never at import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from tracewire.export.record import TraceRecord

PARTITION_COLUMN = "request_date"


def table_schema() -> Any:
    """The inference-table schema as a pyarrow schema."""
    import pyarrow as pa

    string_map = pa.map_(pa.string(), pa.string())
    return pa.schema([
        ("trace_id", pa.string()),
        ("client_request_id", pa.string()),
        ("request_date", pa.date32()),
        ("request_time", pa.timestamp("us", tz="UTC")),
        ("status_code", pa.int32()),
        ("state", pa.string()),
        ("execution_duration_ms", pa.int64()),
        ("sampling_fraction", pa.float64()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("trace", pa.string()),
        ("request_metadata", string_map),
        ("tags", string_map),
        ("logging_error_codes", pa.list_(pa.string())),
    ])


def records_to_table(records: Sequence[TraceRecord]) -> Any:
    """A pyarrow table of ``records`` in the inference-table schema."""
    import pyarrow as pa

    utc = dt.timezone.utc
    times = [dt.datetime.fromtimestamp(r.request_time_ms / 1000, tz=utc) for r in records]
    columns = {
        "trace_id": [r.trace_id for r in records],
        "client_request_id": [r.client_request_id for r in records],
        "request_date": [t.date() for t in times],
        "request_time": times,
        "status_code": [r.status_code for r in records],
        "state": [r.state for r in records],
        "execution_duration_ms": [r.execution_duration_ms for r in records],
        "sampling_fraction": [r.sampling_fraction for r in records],
        "session_id": [r.session_id for r in records],
        "user_id": [r.user_id for r in records],
        "request": [r.request for r in records],
        "response": [r.response for r in records],
        "trace": pa.array([r.payload for r in records], type=pa.string()),
        "request_metadata": [list(r.metadata.items()) for r in records],
        "tags": [list(r.tags.items()) for r in records],
        "logging_error_codes": [list(r.logging_error_codes) for r in records],
    }
    return pa.table(columns, schema=table_schema())



def dead_letter_schema() -> Any:
    """The dead-letter table: records the consumer could not turn into a valid row."""
    import pyarrow as pa

    return pa.schema([
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("key", pa.binary()), ("value", pa.binary()), ("error", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ])
