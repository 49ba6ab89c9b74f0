"""OtlpSink against a real OTLP/HTTP receiver on 127.0.0.1 (protobuf decoded with opentelemetry-proto):
what each receiver reads (MLflow keys, OpenInference, gen_ai, HTTP semconv, resource), gzip,
headers, retries, partial success, splitting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

import tracewire
from tests.otlp_receiver import OtlpReceiver, attributes
from tracewire import SpanType

SECRET = "sk-very-secret-123"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    tracewire.shutdown(timeout=5)
    tracewire.configure(enabled=False)
    server.stop()


def _configure(receiver: OtlpReceiver, **kwargs: Any) -> None:
    kwargs.setdefault("batch_interval", 0.01)
    tracewire.configure(enabled=True, destination=f"otlp+http://127.0.0.1:{receiver.port}", **kwargs)


async def _chat(question: str, headers: dict[str, str]) -> dict[str, Any]:
    from examples.fastapi_app.app import app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        response = await client.post("/chat", json={"question": question, "top_k": 2}, headers=headers)
        assert response.status_code == 200
        return dict(response.json())


def _by_name(spans: list[Any]) -> dict[str, Any]:
    return {span.name: span for span in spans}


def test_fastapi_trace_carries_every_receivers_attributes(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_VERSION", "1.2.3")
    monkeypatch.setenv("APP_ENVIRONMENT", "staging")
    monkeypatch.setenv("TRACING_OTLP_HEADERS", f"x-api-key={SECRET},x-tenant=acme%2Cco")
    _configure(receiver, service_name="rag-chat")
    body = asyncio.run(_chat("what is kafka?", {"x-request-id": "req-1", "x-session-id": "sess-9",
                                               "x-user-id": "ada", "user-agent": "pytest-agent"}))
    assert tracewire.flush(timeout=10)

    [request] = receiver.received
    assert request.path == "/v1/traces"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["x-api-key"] == SECRET
    assert request.headers["x-tenant"] == "acme,co"
    assert request.headers["x-mlflow-experiment-id"] == "0"
    assert request.resource["service.name"] == "rag-chat"
    assert request.resource["service.version"] == "1.2.3"
    assert request.resource["deployment.environment"] == "staging"
    scope = request.request.resource_spans[0].scope_spans[0].scope
    assert scope.name == "tracewire"

    spans = _by_name(request.spans)
    root = spans["POST /chat"]
    trace_hex = body["trace_id"].removeprefix("tr-")
    assert {span.trace_id.hex() for span in request.spans} == {trace_hex}
    assert root.parent_span_id == b""
    assert root.kind == root.SPAN_KIND_SERVER
    assert root.status.code == root.status.STATUS_CODE_OK
    attrs = attributes(root)
    # HTTP semantic conventions
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.route"] == "/chat"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/chat"
    assert attrs["user_agent.original"] == "pytest-agent"
    # MLflow's OTLP ingestion: session, user, tags; span keys with native values
    assert attrs["session.id"] == "sess-9"
    assert attrs["user.id"] == "ada"
    assert attrs["mlflow.traceTag.mlflow.traceName"] == "POST /chat"
    assert attrs["mlflow.traceTag.endpoint"] == "chat"
    assert attrs["mlflow.spanType"] == "CHAIN"
    assert attrs["mlflow.spanInputs"] == {"question": "what is kafka?", "top_k": 2}
    assert attrs["mlflow.spanOutputs"]["answer"] == body["answer"]
    # OpenInference
    assert attrs["openinference.span.kind"] == "CHAIN"
    assert orjson.loads(attrs["input.value"]) == {"question": "what is kafka?", "top_k": 2}
    assert attrs["input.mime_type"] == "application/json"
    assert orjson.loads(attrs["output.value"])["answer"] == body["answer"]
    metadata = orjson.loads(attrs["metadata"])
    assert metadata["mlflow.trace.session"] == "sess-9"
    assert metadata["top_k"] == "2"
    assert metadata["app_version"] == "1.2.3"
    assert attrs["tracewire.client_request_id"] == "req-1"

    llm = attributes(spans["llm.generate"])
    assert llm["openinference.span.kind"] == "LLM"
    usage = llm["mlflow.chat.tokenUsage"]
    assert usage["output_tokens"] > 0
    assert llm["llm.token_count.prompt"] == usage["input_tokens"]
    assert llm["llm.token_count.completion"] == usage["output_tokens"]
    assert llm["llm.token_count.total"] == usage["total_tokens"]
    assert llm["gen_ai.usage.input_tokens"] == usage["input_tokens"]
    assert llm["gen_ai.usage.output_tokens"] == usage["output_tokens"]
    assert llm["gen_ai.operation.name"] == "text_completion"
    assert llm["gen_ai.request.model"] == llm["gen_ai.response.model"] == "fake-llm-1"
    assert llm["llm.model_name"] == "fake-llm-1"
    assert llm["output.value"] == body["answer"]  # a plain string goes out as text
    assert llm["output.mime_type"] == "text/plain"
    assert spans["llm.generate"].parent_span_id == root.span_id
    assert attributes(spans["retrieve"])["openinference.span.kind"] == "RETRIEVER"
    assert "session.id" not in llm  # trace-level attributes live on the root only


def test_gen_ai_attributes_set_by_code_win_and_errors_carry_events(receiver: OtlpReceiver) -> None:
    _configure(receiver)
    with pytest.raises(RuntimeError), tracewire.start_span("agent", span_type=SpanType.AGENT):
        with tracewire.start_span("chat", span_type=SpanType.CHAT_MODEL) as chat:
            chat.set_inputs({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]})
            chat.set_attributes({"gen_ai.provider.name": "openai", "gen_ai.response.model": "gpt-x-0613"})
            chat.set_outputs({"choices": [{"message": {"content": "hello"}}]})
        with tracewire.start_span("lookup", span_type=SpanType.TOOL):
            raise RuntimeError("tool broke")
    assert tracewire.flush(timeout=10)
    spans = _by_name(receiver.spans)
    chat_attrs = attributes(spans["chat"])
    assert chat_attrs["gen_ai.operation.name"] == "chat"
    assert chat_attrs["gen_ai.provider.name"] == "openai"
    assert chat_attrs["gen_ai.request.model"] == "gpt-x"
    assert chat_attrs["gen_ai.response.model"] == "gpt-x-0613"
    assert chat_attrs["mlflow.spanInputs"]["messages"] == [{"role": "user", "content": "hi"}]
    tool = spans["lookup"]
    assert attributes(tool)["tool.name"] == "lookup"
    assert tool.status.code == tool.status.STATUS_CODE_ERROR
    [event] = tool.events
    assert event.name == "exception"
    assert attributes(event)["exception.type"] == "RuntimeError"
    root = spans["agent"]
    assert root.kind == root.SPAN_KIND_INTERNAL
    assert root.status.code == root.status.STATUS_CODE_ERROR


def test_trace_state_error_reaches_the_root_status(receiver: OtlpReceiver) -> None:
    _configure(receiver)
    with tracewire.start_span("job"):
        tracewire.update_current_trace(state="ERROR")
    assert tracewire.flush(timeout=10)
    [root] = receiver.spans
    assert root.status.code == root.status.STATUS_CODE_ERROR


def test_503_is_retried_by_the_pipeline_and_delivered_once(receiver: OtlpReceiver) -> None:
    receiver.replies = [lambda _: (503, b""), lambda _: (503, b"")]
    _configure(receiver)
    with tracewire.start_span("job"):
        pass
    assert tracewire.flush(timeout=10)
    assert receiver.attempts == 3
    assert len(receiver.received) == 1
    stats = tracewire.stats()["sinks"][f"otlp:{receiver.url}/v1/traces"]
    assert stats["exported"] == 1 and stats["errors"] == 0 and stats["retries"] == 2


def test_partial_success_is_counted(receiver: OtlpReceiver) -> None:
    def partial(_: Any) -> tuple[int, bytes]:
        answer = ExportTraceServiceResponse()
        answer.partial_success.rejected_spans = 1
        answer.partial_success.error_message = "span too old"
        return 200, answer.SerializeToString()

    receiver.replies = [partial]
    _configure(receiver)
    for name in ("a", "b"):
        with tracewire.start_span(name):
            pass
    assert tracewire.flush(timeout=10)
    stats = tracewire.stats()["sinks"][f"otlp:{receiver.url}/v1/traces"]
    assert stats["errors"] == 1 and stats["exported"] == 1


def test_client_errors_reject_without_retry(receiver: OtlpReceiver) -> None:
    receiver.replies = [lambda _: (400, b"bad")]
    _configure(receiver)
    with tracewire.start_span("job"):
        pass
    assert tracewire.flush(timeout=10)
    assert receiver.attempts == 1
    stats = tracewire.stats()["sinks"][f"otlp:{receiver.url}/v1/traces"]
    assert stats["errors"] == 1 and stats["retries"] == 0


def test_413_splits_the_request_and_everything_arrives(receiver: OtlpReceiver) -> None:
    def too_big(request: Any) -> tuple[int, bytes]:
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if len({s.trace_id for s in spans}) > 1:
            return 413, b""
        return 200, ExportTraceServiceResponse().SerializeToString()

    receiver.replies = [too_big] * 20
    _configure(receiver, batch_interval=0.5)
    for i in range(4):
        with tracewire.start_span(f"job-{i}"):
            pass
    assert tracewire.flush(timeout=10)
    assert sorted(s.name for s in receiver.spans) == ["job-0", "job-1", "job-2", "job-3"]
    assert all(len({s.trace_id for s in r.spans}) == 1 for r in receiver.received)


def test_max_request_bytes_packs_requests(receiver: OtlpReceiver) -> None:
    tracewire.configure(enabled=True, batch_interval=0.5,
                        destination=f"otlp+http://127.0.0.1:{receiver.port}/custom/path"
                                    "?compression=none&max_request_bytes=2048")
    for i in range(6):
        with tracewire.start_span(f"job-{i}") as span:
            span.set_inputs("x" * 900)
    assert tracewire.flush(timeout=10)
    assert len(receiver.spans) == 6
    assert len(receiver.received) >= 3
    assert {r.path for r in receiver.received} == {"/custom/path"}
    assert all("content-encoding" not in r.headers for r in receiver.received)


def test_a_trace_over_the_limit_is_truncated_like_section_7(receiver: OtlpReceiver) -> None:
    def limit(request: Any) -> tuple[int, bytes]:
        if request.ByteSize() > 20_000:
            return 413, b""
        return 200, ExportTraceServiceResponse().SerializeToString()

    receiver.replies = [limit] * 10
    tracewire.configure(enabled=True, batch_interval=0.01, sampling_size_threshold=10**7,
                        destination=f"otlp+http://127.0.0.1:{receiver.port}?max_request_bytes=100000")
    with tracewire.start_span("big") as root:
        root.set_inputs({"text": "i" * 30_000})
        with tracewire.start_span("child") as child:
            child.set_outputs("o" * 150_000)  # over max_request_bytes: cut before sending
    with tracewire.start_span("small") as small:
        small.set_inputs("fits")
    assert tracewire.flush(timeout=10)
    spans = _by_name(receiver.spans)
    assert set(spans) == {"big", "child", "small"}
    child_out = attributes(spans["child"])["mlflow.spanOutputs"]
    assert child_out["tracewire.truncated"] is True
    assert child_out["original_size"] == 150_002
    assert child_out["preview"] == "o" * 256
    root_in = attributes(spans["big"])["mlflow.spanInputs"]
    assert root_in["tracewire.truncated"] is True  # cut again after the receiver's 413
    assert orjson.loads(attributes(spans["big"])["metadata"])["tracewire.truncated"] == "true"
    assert attributes(spans["small"])["mlflow.spanInputs"] == "fits"
    assert tracewire.stats()["export_errors"][f"otlp:{receiver.url}/v1/traces"] == 0


def test_headers_are_never_logged(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TRACING_OTLP_HEADERS", f"authorization=Bearer {SECRET}")
    receiver.replies = [lambda _: (401, b"no"), lambda _: (503, b"")]
    _configure(receiver)
    settings = tracewire.configure(enabled=True, batch_interval=0.01,
                                   destination=f"otlp+http://127.0.0.1:{receiver.port}")
    assert SECRET not in repr(settings)
    for name in ("a", "b"):
        with tracewire.start_span(name):
            pass
        assert tracewire.flush(timeout=10)
    monkeypatch.setenv("TRACING_OTLP_HEADERS", f"broken{SECRET}")
    tracewire.configure(enabled=False)
    with pytest.raises(ValueError) as error:
        tracewire.configure(otlp_headers=f"nope{SECRET}")
    assert SECRET not in str(error.value)
    assert caplog.records
    assert all(SECRET not in record.getMessage() for record in caplog.records)


def test_the_global_tracer_provider_is_left_alone(receiver: OtlpReceiver) -> None:
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    with provider.get_tracer("other-lib").start_as_current_span("someone-elses-span"):
        _configure(receiver)
        with tracewire.start_span("ours"):
            pass
        assert tracewire.flush(timeout=10)
    assert isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider)
    assert [s.name for s in receiver.spans] == ["ours"]


@pytest.mark.parametrize("uri", [
    "otlp+http://", "otlp+http://host:notaport", "otlp+ftp://host", "otlp+http://u:p@host:4318",
    "otlp+http://host:4318?bogus=1", "otlp+http://host:4318?compression=zstd",
], ids=["no-host", "bad-port", "bad-scheme", "credentials", "unknown-option", "bad-compression"])
def test_bad_destinations_fail_at_configuration(uri: str) -> None:
    from tracewire.config import load
    from tracewire.export.destinations import create_sink

    with pytest.raises(ValueError):
        create_sink(uri, load({}))


def test_uri_defaults() -> None:
    from sinks import OtlpSink
    from tracewire.config import load
    from tracewire.export.destinations import create_sink

    sink = create_sink("otlp+https://collector.example:4318", load({}))
    assert isinstance(sink, OtlpSink)
    assert sink.endpoint == "https://collector.example:4318/v1/traces"
    assert load({"OTEL_SERVICE_NAME": "svc"}).service_name == "svc"
    assert load({"OTEL_SERVICE_NAME": "svc", "TRACING_SERVICE_NAME": "mine"}).service_name == "mine"
    assert load({"TRACING_MLFLOW_EXPERIMENT_ID": "7"}).mlflow_experiment_id == "7"
