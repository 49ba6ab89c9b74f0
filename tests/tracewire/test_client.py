from __future__ import annotations

import threading

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import SpanType


def test_client_builds_a_trace_across_threads(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    root = client.start_trace("agent", span_type=SpanType.AGENT, inputs={"task": "t"},
                              tags={"team": "a"}, metadata={"tenant": "x"})
    errors: list[BaseException] = []

    def tool(i: int) -> None:
        try:
            span = client.start_span(f"tool-{i}", trace_id=root.trace_id, parent_id=root.span_id,
                                     span_type=SpanType.TOOL, inputs={"i": i})
            client.end_span(root.trace_id, span.span_id, outputs=i * 2, attributes={"k": i})
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=tool, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    client.end_trace(root.trace_id, outputs="done")
    trace = only_trace(sink)
    assert trace.info.tags["team"] == "a"
    assert trace.info.trace_metadata["tenant"] == "x"
    tools = [s for s in trace.data.spans if s.name.startswith("tool-")]
    assert len(tools) == 20
    assert all(s.parent_id == root.span_id and s.outputs == s.inputs["i"] * 2 for s in tools)
    assert trace.root_span is not None and trace.root_span.outputs == "done"


def test_client_end_trace_closes_open_spans_and_error_status(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    root = client.start_trace("r")
    client.start_span("left-open", root.trace_id, root.span_id)
    client.end_trace(root.trace_id, status="ERROR")
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    open_span = next(s for s in trace.data.spans if s.name == "left-open")
    assert open_span.end_time_ns is not None
    assert open_span.get_attribute("tracewire.ended_by_end_trace") is True


def test_client_with_unknown_ids_is_harmless(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    span = client.start_span("x", "tr-" + "0" * 32, "0" * 16)
    span.set_attribute("a", 1)
    client.end_span("tr-nope", "nope")
    client.end_trace("tr-nope")
    assert tracewire.flush()
    assert sink.traces == []
