"""Our trace JSON loads with the real ``mlflow-tracing`` package and keeps what matters."""

from __future__ import annotations

import pytest

import tracewire
from sinks import MemorySink
from tracewire import SpanType

mlflow_entities = pytest.importorskip("mlflow.entities")


def test_trace_loads_in_mlflow(sink: MemorySink) -> None:
    @tracewire.trace(span_type=SpanType.RETRIEVER)
    def retrieve(query: str) -> list[dict[str, str]]:
        return [{"doc": "d1"}]

    @tracewire.trace(span_type=SpanType.CHAT_MODEL)
    def generate(prompt: str) -> str:
        span = tracewire.get_current_active_span()
        assert span is not None
        span.set_attribute("mlflow.chat.tokenUsage",
                           {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5})
        return "answer"

    @tracewire.trace(name="POST /chat", span_type=SpanType.CHAIN)
    def chat(question: str) -> str:
        tracewire.update_current_trace(
            tags={"route": "chat"}, metadata={"tenant": "acme"}, client_request_id="req-1",
            session_id="s-1", user="u-1",
        )
        retrieve(question)
        return generate(question)

    chat("q?")
    with pytest.raises(RuntimeError), tracewire.start_span("failing"):
        raise RuntimeError("x")
    assert tracewire.flush()
    ours = {t.info.trace_id: t for t in sink.traces}
    for record in sink.records:
        ml = mlflow_entities.Trace.from_json(record.payload.decode())
        mine = ours[record.trace_id]
        assert ml.info.trace_id == mine.info.trace_id
        assert ml.info.client_request_id == mine.info.client_request_id
        assert ml.info.state.value == mine.info.state
        assert ml.info.trace_metadata == mine.info.trace_metadata
        assert ml.info.tags == mine.info.tags
        assert ml.info.request_time == mine.info.request_time
        assert ml.info.execution_duration == mine.info.execution_duration_ms
        ml_spans = {s.span_id: s for s in ml.data.spans}
        assert set(ml_spans) == {s.span_id for s in mine.data.spans}
        for span in mine.data.spans:
            other = ml_spans[span.span_id]
            assert other.name == span.name
            assert other.parent_id == span.parent_id
            assert other.span_type == span.span_type
            assert other.inputs == span.inputs
            assert other.outputs == span.outputs
            assert other.trace_id == mine.info.trace_id
            assert other.start_time_ns == span.start_time_ns
            assert other.end_time_ns == span.end_time_ns
            assert other.status.status_code.value == span.status_code
        # And MLflow writes back what we read back.
        again = tracewire.Trace.from_dict(ml.to_dict())
        assert [s.span_id for s in again.data.spans] == [s.span_id for s in mine.data.spans]

    chat_trace = next(t for t in ours.values() if t.info.tags["mlflow.traceName"] == "POST /chat")
    ml_chat = mlflow_entities.Trace.from_dict(chat_trace.to_dict())
    assert ml_chat.info.client_request_id == "req-1"
    assert ml_chat.info.trace_metadata["mlflow.trace.session"] == "s-1"
    assert ml_chat.info.trace_metadata["mlflow.trace.user"] == "u-1"
    assert ml_chat.info.trace_metadata["tenant"] == "acme"
    assert ml_chat.info.tags["route"] == "chat"
    assert ml_chat.info.token_usage == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert ml_chat.search_spans(span_type="RETRIEVER")[0].outputs == [{"doc": "d1"}]
    failing = next(t for t in ours.values() if t.info.tags["mlflow.traceName"] == "failing")
    ml_failing = mlflow_entities.Trace.from_dict(failing.to_dict())
    assert ml_failing.info.state.value == "ERROR"
    assert ml_failing.data.spans[0].events[0].name == "exception"
