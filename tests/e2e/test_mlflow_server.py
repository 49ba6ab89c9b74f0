"""A real MLflow tracking server (sqlite store) receives the FastAPI example's traces through
``otlp+http`` and ``mlflow+http``; the traces are found with ``mlflow.search_traces`` by session,
user, tag, client request id, status and name, and compared field by field with what tracewire
wrote (a ``memory:`` destination beside the MLflow one)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import tracewire
from sinks import MemorySink
from tests.e2e.servers import free_port

pytestmark = pytest.mark.e2e

# MLflow's client and server must never phone home: the tests contact 127.0.0.1 only.
_QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
os.environ.update(_QUIET)
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("mlflow.server")  # the full package, not only mlflow-tracing


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/db.sqlite",
         "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env={**os.environ, **_QUIET}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240  # a loaded 2-core machine has taken over 90 s
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start:\n"
                                   + (folder / "server.log").read_text()[-3000:])
            time.sleep(0.25)
        mlflow.set_tracking_uri(url)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture
def memory() -> Iterator[MemorySink]:
    sink = MemorySink.default()
    sink.clear()
    yield sink
    tracewire.shutdown(timeout=5)
    tracewire.configure(enabled=False)
    sink.clear()


async def _serve(tag: str) -> None:
    """Requests through the FastAPI example, each with its own request id, session and user."""
    from examples.fastapi_app.app import app

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        response = await client.post("/chat", json={"question": "what is kafka?", "top_k": 2},
                                     headers={"x-request-id": f"req-chat-{tag}", "x-session-id": f"s-{tag}",
                                              "x-user-id": f"ada-{tag}"})
        assert response.status_code == 200
        response = await client.get("/documents/doc-1", headers={"x-request-id": f"req-doc-{tag}",
                                                                 "x-session-id": f"s-{tag}",
                                                                 "x-user-id": f"bob-{tag}"})
        assert response.status_code == 200


def _record(tag: str) -> None:
    asyncio.run(_serve(tag))
    # An ERROR trace with an exception event, from the fluent API.
    with pytest.raises(ValueError), tracewire.start_span("failing-job"):
        tracewire.update_current_trace(client_request_id=f"req-err-{tag}", tags={"kind": "batch"},
                                       metadata={"mlflow.trace.user": f"eve-{tag}"})
        with tracewire.start_span("step", span_type="TOOL") as step:
            step.set_inputs({"n": 1})
            raise ValueError("no luck")
    assert tracewire.flush(timeout=30)


def _find(experiment: str, filter_string: str) -> Any:
    found = mlflow.search_traces(locations=[experiment], filter_string=filter_string, return_type="list")
    assert len(found) == 1, (filter_string, found)
    return found[0]


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _assert_same(ours: tracewire.Trace, theirs: Any, *, full: bool) -> None:
    info, their_info = ours.info, theirs.info
    assert their_info.trace_id == info.trace_id
    assert their_info.state.value == info.state
    assert their_info.request_time == info.request_time
    assert abs(their_info.execution_duration - (info.execution_duration_ms or 0)) <= 1
    for key, value in info.tags.items():
        assert their_info.tags[key] == value, key
    for key in ("mlflow.trace.session", "mlflow.trace.user"):
        assert their_info.trace_metadata.get(key) == info.trace_metadata.get(key), key
    assert _json(their_info.trace_metadata.get("mlflow.trace.tokenUsage")) == info.token_usage
    if full:
        assert their_info.client_request_id == info.client_request_id
        assert their_info.request_preview == info.request_preview
        assert their_info.response_preview == info.response_preview
        for key, value in info.trace_metadata.items():
            if key != "mlflow.trace.tokenUsage":  # MLflow re-serializes it (compared above)
                assert their_info.trace_metadata[key] == value, key
    else:  # what MLflow's OTLP ingestion cannot hold (listed in the README)
        assert their_info.client_request_id is None
        assert "mlflow.source.name" not in their_info.trace_metadata
    assert their_info.experiment_id == theirs.info.experiment_id

    theirs_by_id = {span.span_id: span for span in theirs.data.spans}
    assert set(theirs_by_id) == {span.span_id for span in ours.data.spans}
    for span in ours.data.spans:
        other = theirs_by_id[span.span_id]
        assert other.name == span.name
        assert other.parent_id == span.parent_id
        assert other.span_type == span.span_type
        assert other.inputs == span.inputs
        assert other.outputs == span.outputs
        assert other.status.status_code.value == span.status_code
        assert (other.status.description or "") == span.status_message
        assert other.start_time_ns == span.start_time_ns
        assert other.end_time_ns == span.end_time_ns
        assert [(e.name, e.attributes) for e in other.events] == [
            (e.name, e.attributes) for e in span.events]
        their_attributes = other.attributes
        for key, value in span.attributes.items():
            assert their_attributes[key] == value, (span.name, key)
        if full:
            assert set(their_attributes) == set(span.attributes), span.name


def _check_all(memory: MemorySink, experiment: str, tag: str, *, full: bool) -> None:
    ours = {t.info.trace_id: t for t in memory.traces}
    assert len(ours) == 3
    chat = _find(experiment, f"metadata.`mlflow.trace.user` = 'ada-{tag}'")
    doc = _find(experiment, f"metadata.`mlflow.trace.user` = 'bob-{tag}'")
    failing = _find(experiment, "trace.status = 'ERROR'")
    assert _find(experiment, "trace.name = 'POST /chat'").info.trace_id == chat.info.trace_id
    assert _find(experiment, "tags.endpoint = 'chat'").info.trace_id == chat.info.trace_id
    assert _find(experiment, "tags.kind = 'batch'").info.trace_id == failing.info.trace_id
    session = mlflow.search_traces(locations=[experiment], return_type="list",
                                   filter_string=f"metadata.`mlflow.trace.session` = 's-{tag}'")
    assert {t.info.trace_id for t in session} == {chat.info.trace_id, doc.info.trace_id}
    if full:
        assert _find(experiment, f"trace.client_request_id = 'req-chat-{tag}'").info.trace_id \
            == chat.info.trace_id
        assert _find(experiment, "metadata.top_k = '2'").info.trace_id == chat.info.trace_id
    for found in (chat, doc, failing):
        # search_traces may return trace info only: read the whole trace
        whole = mlflow.get_trace(found.info.trace_id)
        _assert_same(ours[found.info.trace_id], whole, full=full)


def test_mlflow_destination_keeps_every_field(mlflow_server: str, memory: MemorySink) -> None:
    experiment = mlflow.MlflowClient().create_experiment(f"mlflow-sink-{uuid.uuid4().hex[:8]}")
    tracewire.configure(enabled=True, batch_interval=0.01, mlflow_experiment_id=experiment,
                        destination=f"memory:,mlflow+{mlflow_server}")
    _record("m")
    assert tracewire.stats()["sinks"][f"mlflow:{mlflow_server}"]["exported"] == 3
    _check_all(memory, experiment, "m", full=True)


def test_otlp_destination_keeps_what_mlflow_otlp_can_hold(mlflow_server: str, memory: MemorySink) -> None:
    experiment = mlflow.MlflowClient().create_experiment(f"otlp-sink-{uuid.uuid4().hex[:8]}")
    tracewire.configure(enabled=True, batch_interval=0.01, mlflow_experiment_id=experiment,
                        service_name="rag-chat", destination=f"memory:,otlp+{mlflow_server}")
    _record("o")
    assert tracewire.stats()["sinks"][f"otlp:{mlflow_server}/v1/traces"]["exported"] == 3
    _check_all(memory, experiment, "o", full=False)
    chat = _find(experiment, "metadata.`mlflow.trace.user` = 'ada-o'")
    assert chat.info.tags["service.name"] == "rag-chat"  # resource attributes become tags


def test_experiment_id_setting_reaches_trace_location(memory: MemorySink, tmp_path: Path) -> None:
    tracewire.configure(enabled=True, batch_interval=0.01, mlflow_experiment_id="42", destination="memory:")
    with tracewire.start_span("job"):
        pass
    assert tracewire.flush(timeout=10)
    [trace] = memory.traces
    assert trace.info.trace_location["mlflow_experiment"]["experiment_id"] == "42"


def test_unknown_experiment_is_rejected_and_counted(mlflow_server: str, memory: MemorySink) -> None:
    tracewire.configure(enabled=True, batch_interval=0.01,
                        destination=f"mlflow+{mlflow_server}?experiment_id=987654")
    with tracewire.start_span("orphan"):
        pass
    assert tracewire.flush(timeout=30)
    stats = tracewire.stats()["sinks"][f"mlflow:{mlflow_server}"]
    assert stats["errors"] == 1 and stats["exported"] == 0 and stats["retries"] == 0


def test_unreachable_server_is_retried_not_dropped() -> None:
    from sinks import MlflowSink
    from tracewire.export.record import TraceRecord

    sink = MlflowSink(f"http://127.0.0.1:{free_port()}", timeout=2)
    trace = tracewire.Trace.from_dict({"info": {"trace_id": "tr-" + "ab" * 16, "request_time": 0}})
    record = TraceRecord.from_trace(trace, trace.to_json().encode(), 1.0)

    async def export() -> None:
        try:
            await sink.export([record])
        finally:
            await sink.aclose()

    with pytest.raises(httpx.ConnectError):  # raising makes the pipeline retry with backoff
        asyncio.run(export())


def test_mlflow_credentials_come_from_mlflows_env_never_from_otlp_headers() -> None:
    from sinks.mlflow import auth_headers

    assert auth_headers({"MLFLOW_TRACKING_TOKEN": "t0k"}) == {"authorization": "Bearer t0k"}
    assert auth_headers({"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}) == {
        "authorization": "Basic dTpw"}
    assert auth_headers({"TRACING_OTLP_HEADERS": "x-api-key=secret"}) == {}
