"""A Delta table for the search tests with controlled fields: timestamps that tie, states, tags,
metadata and span shapes.  The spans are recorded through the real tracing API and pipeline; the
trace-level fields are then set per row and the rows written with the sink's own schema."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import tracewire
from tracewire.export.record import TraceRecord
from tracewire.export.table import PARTITION_COLUMN, records_to_table
from tracewire.model import Trace, format_request_time

BASE_MS = 1_767_225_599_000  # 2025-12-31T23:59:59Z: the rows span two request_date partitions
COUNT = 24


def _templates(path: Path) -> list[Trace]:
    """Four span shapes, recorded for real."""
    tracewire.configure(enabled=True, destination=f"delta:{path}", batch_interval=0.01)
    try:
        with tracewire.start_span("POST /chat", span_type="CHAIN") as root:
            root.set_inputs({"question": "what is the weather in Paris?"})
            with tracewire.start_span("retrieve", span_type="RETRIEVER") as span:
                span.set_outputs([{"doc": "weather report"}])
            with tracewire.start_span("llm", span_type="LLM") as span:
                span.set_outputs({"text": "the weather is sunny"})
            tracewire.update_current_trace(client_request_id="t0")
        with tracewire.start_span("GET /items/{id}") as root:
            root.set_outputs({"item": "Zürich \"quoted\" item"})
            tracewire.update_current_trace(client_request_id="t1")
        with tracewire.start_span("agent", span_type="AGENT"):
            try:
                with tracewire.start_span("tool_call", span_type="TOOL"):
                    raise RuntimeError("tool down")
            except RuntimeError:
                pass
            tracewire.update_current_trace(client_request_id="t2")
        with tracewire.start_span("POST /embed", span_type="CHAIN"):
            with tracewire.start_span("embed", span_type="EMBEDDING") as span:
                span.set_outputs([0.1, 0.2])
            tracewire.update_current_trace(client_request_id="t3")
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    found = tracewire.search_traces(str(path), order_by=["client_request_id ASC"])
    assert [t.info.client_request_id for t in found] == ["t0", "t1", "t2", "t3"]
    return found


def shaped_id(n: int) -> str:
    return f"tr-{n:032x}"


def shaped_trace(template: Trace, i: int) -> Trace:
    """Row ``i``: three rows per timestamp (ties), ids not in time order, two states, durations
    that tie, some tags/metadata present and some absent."""
    data = template.to_dict()
    info: dict[str, Any] = data["info"]
    hex_id = f"{(i * 7) % COUNT:032x}"
    info["trace_id"] = f"tr-{hex_id}"
    for span in data["data"]["spans"]:  # spans name their trace too (MLflow's store keys on it)
        span["trace_id"] = base64.b64encode(bytes.fromhex(hex_id)).decode()
        if "mlflow.traceRequestId" in span.get("attributes", {}):
            span["attributes"]["mlflow.traceRequestId"] = json.dumps(info["trace_id"])
    info["request_time"] = format_request_time(BASE_MS + (i // 3) * 250)
    info["state"] = "ERROR" if i % 4 == 1 else "OK"
    info["execution_duration_ms"] = (i * 5) % 7 * 100
    info["client_request_id"] = None if i % 6 == 5 else f"req-{i}"
    tags = dict(info.get("tags") or {})
    if i % 3 == 0:
        tags["env"] = "prod"
    elif i % 3 == 1:
        tags["env"] = "dev"
    info["tags"] = tags
    metadata = dict(info.get("trace_metadata") or {})
    metadata["tenant"] = "acme" if i < COUNT // 2 else "globex"
    if i % 5 == 0:
        metadata["mlflow.sourceRun"] = f"run-{i % 2}"
    info["trace_metadata"] = metadata
    return Trace.from_dict(data)


def write_shaped_table(tmp: Path) -> tuple[str, list[Trace]]:
    """The table (written in three commits) and its traces."""
    from deltalake import write_deltalake

    templates = _templates(tmp / "templates")
    traces = [shaped_trace(templates[i % 4], i) for i in range(COUNT)]
    path = tmp / "shaped"
    for start in range(0, COUNT, COUNT // 3):
        records = [TraceRecord.from_trace(t, t.to_json().encode(), 1.0)
                   for t in traces[start : start + COUNT // 3]]
        write_deltalake(str(path), records_to_table(records), mode="append", partition_by=[PARTITION_COLUMN])
    return str(path), traces
