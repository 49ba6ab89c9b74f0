"""TracingMiddleware driven in-process: httpx.ASGITransport, Starlette's TestClient, raw ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.websockets import WebSocket

import tracewire
from middleware import TracingMiddleware
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import SpanType

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADERS = {"X-Request-ID": "req-1", "X-Session-ID": "sess-1", "X-User-ID": "user-1"}


def call(app: Any, method: str, url: str, raise_app_exceptions: bool = True, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def raw_call(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Call an ASGI app directly; ``incoming`` are the messages ``receive`` returns, in order."""
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        queue = list(incoming)

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(go())
    return sent


def http_scope(path: str = "/", headers: list[tuple[bytes, bytes]] | None = None,
               method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers or [], "client": ("127.0.0.1", 1), "server": ("t", 80),
    }


def by_name(trace: tracewire.Trace) -> dict[str, tracewire.Span]:
    return {span.name: span for span in trace.data.spans}


def root_of(trace: tracewire.Trace) -> tracewire.Span:
    root = trace.root_span
    assert root is not None
    return root


@tracewire.trace(span_type=SpanType.RETRIEVER)
def retrieve(query: str) -> list[str]:
    return [query, query]


@tracewire.trace(span_type=SpanType.LLM)
async def generate(query: str) -> str:
    return query.upper()


def make_app(**settings: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TracingMiddleware, **settings)

    @app.post("/items/{item_id}")
    async def post_item(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item_id, "docs": retrieve(str(body.get("q"))), "answer": await generate("hi")}

    @app.get("/sync/{name}")
    def sync_endpoint(name: str) -> list[str]:
        return retrieve(name)

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/needs-int/{n}")
    async def needs_int(n: int) -> int:
        return n

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type"))

    @app.post("/ignore-body")
    async def ignore_body() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/big")
    async def big() -> PlainTextResponse:
        return PlainTextResponse("y" * 300_000)

    @app.get("/cookie")
    async def cookie() -> PlainTextResponse:
        response = PlainTextResponse("ok")
        response.set_cookie("session", "SETCOOKIEVALUE")
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# -- root span, children, names ----------------------------------------------------------------


def test_async_endpoint_root_and_children(sink: MemorySink) -> None:
    response = call(make_app(), "POST", "/items/7?x=1", json={"q": "cats"}, headers=HEADERS)
    assert response.status_code == 200
    trace = only_trace(sink)
    root = root_of(trace)
    assert response.headers["x-trace-id"] == trace.info.trace_id
    assert root.name == "POST /items/{item_id}"
    assert trace.info.tags["mlflow.traceName"] == "POST /items/{item_id}"
    assert root.span_type == "CHAIN"
    assert root.parent_id is None
    attrs = root.attributes
    assert attrs["http.method"] == "POST"
    assert attrs["http.route"] == "/items/{item_id}"
    assert attrs["http.path"] == "/items/7"
    assert attrs["http.status_code"] == 200
    assert attrs["http.user_agent"].startswith("python-httpx")
    assert attrs["tracewire.ttfb_ms"] >= 0
    assert root.inputs == {"q": "cats"}
    assert root.outputs == {"item_id": 7, "docs": ["cats", "cats"], "answer": "HI"}
    spans = by_name(trace)
    assert spans["retrieve"].parent_id == root.span_id
    assert spans["generate"].parent_id == root.span_id
    assert trace.info.client_request_id == "req-1"
    assert trace.info.session_id == "sess-1"
    assert trace.info.user_id == "user-1"
    assert trace.info.state == "OK"
    assert sink.records[0].status_code == 200


def test_sync_endpoint_in_threadpool_keeps_parent(sink: MemorySink) -> None:
    response = call(make_app(), "GET", "/sync/bob")
    assert response.json() == ["bob", "bob"]
    trace = only_trace(sink)
    root = root_of(trace)
    assert root.name == "GET /sync/{name}"
    assert by_name(trace)["retrieve"].parent_id == root.span_id


def test_mounted_sub_apps_in_span_name(sink: MemorySink) -> None:
    async def user(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["uid"])

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("raw")(scope, receive, send)

    inner = Starlette(routes=[Route("/users/{uid}", user)])
    sub = FastAPI()

    @sub.get("/things/{thing_id}")
    async def thing(thing_id: str) -> str:
        return thing_id

    app = Starlette(routes=[
        Mount("/api", routes=[Mount("/v1", app=inner)]),
        Mount("/raw", app=raw),
    ])
    app.mount("/v2", sub)
    app.add_middleware(TracingMiddleware)
    assert call(app, "GET", "/api/v1/users/42").text == "42"
    assert call(app, "GET", "/v2/things/abc").json() == "abc"
    assert call(app, "GET", "/raw/any/thing").text == "raw"
    assert call(app, "GET", "/nowhere").status_code == 404
    assert tracewire.flush()
    names = sorted(root_of(t).name for t in sink.traces)
    assert names == ["GET /api/v1/users/{uid}", "GET /nowhere", "GET /raw/{path}",
                     "GET /v2/things/{thing_id}"]
    paths = sorted(root_of(t).attributes["http.path"] for t in sink.traces)
    assert paths == ["/api/v1/users/42", "/nowhere", "/raw/any/thing", "/v2/things/abc"]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/needs-int/abc", 422)],
                         ids=["http-exception-404", "validation-422"])
def test_client_errors_are_recorded_state_ok(sink: MemorySink, path: str, status: int) -> None:
    response = call(make_app(), "GET", path)
    assert response.status_code == status
    trace = only_trace(sink)
    assert root_of(trace).attributes["http.status_code"] == status
    assert trace.info.state == "OK"
    assert sink.records[0].status_code == status


def test_unhandled_exception_is_error_and_reraised_unchanged(sink: MemorySink) -> None:
    raised: list[BaseException] = []
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        retrieve("before")
        error = RuntimeError("kaboom")
        raised.append(error)
        raise error

    with pytest.raises(RuntimeError) as info:
        call(app, "GET", "/boom")
    assert info.value is raised[0]
    response = call(app, "GET", "/boom", raise_app_exceptions=False)
    assert response.status_code == 500
    assert tracewire.flush()
    assert len(sink.traces) == 2
    for trace in sink.traces:
        root = root_of(trace)
        assert trace.info.state == "ERROR"
        assert root.attributes["http.status_code"] == 500
        assert root.status == "ERROR"
        [event] = root.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "RuntimeError"
        assert event.attributes["exception.message"] == "kaboom"
    assert [r.status_code for r in sink.records] == [500, 500]


def test_5xx_response_without_exception_is_error(sink: MemorySink) -> None:
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    @app.get("/unavailable")
    async def unavailable() -> PlainTextResponse:
        return PlainTextResponse("down", status_code=503)

    assert call(app, "GET", "/unavailable").status_code == 503
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert root_of(trace).attributes["http.status_code"] == 503


def test_background_tasks_are_part_of_the_trace(sink: MemorySink) -> None:
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    async def audit(item: str) -> None:
        await asyncio.sleep(0.05)
        with tracewire.start_span("audit", span_type=SpanType.TOOL) as span:
            span.set_inputs({"item": item})

    @app.post("/orders")
    async def order(background: BackgroundTasks) -> dict[str, str]:
        background.add_task(audit, "o-1")
        return {"status": "queued"}

    assert call(app, "POST", "/orders").json() == {"status": "queued"}
    trace = only_trace(sink)
    root = root_of(trace)
    audit_span = by_name(trace)["audit"]
    assert audit_span.parent_id == root.span_id
    assert root.end_time_ns is not None and audit_span.end_time_ns is not None
    assert root.end_time_ns >= audit_span.end_time_ns
    sent_ms = root.attributes["tracewire.response_sent_ms"]
    assert sent_ms < (audit_span.start_time_ns - root.start_time_ns) / 1e6


# -- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b'{"question": "hi", "n": [1, 2]}', "application/json", {"question": "hi", "n": [1, 2]}),
        (b"name=ann&tags=a&tags=b", "application/x-www-form-urlencoded", {"name": "ann", "tags": ["a", "b"]}),
        (b"\x00\x01\xfe\xff" * 4, "application/octet-stream",
         {"tracewire.binary": True, "content_type": "application/octet-stream", "size": 16}),
        (b"plain words", "text/plain", "plain words"),
    ],
    ids=["json", "form", "binary", "text"],
)
def test_request_and_response_bodies(sink: MemorySink, content: bytes, content_type: str,
                                     expected: Any) -> None:
    response = call(make_app(), "POST", "/echo", content=content, headers={"content-type": content_type})
    assert response.content == content
    root = root_of(only_trace(sink))
    assert root.inputs == expected
    assert root.outputs == expected


def test_queue_bytes_return_to_zero_after_bodies_recorded_on_the_worker(sink: MemorySink) -> None:
    """Bodies are recorded on the worker, after submit, so a trace grows while queued: the
    byte bound must release exactly what it counted, or it drifts (negative here)."""
    app = make_app()
    for _ in range(20):
        call(app, "POST", "/echo", content=json.dumps({"text": "x" * 2000}).encode(),
             headers={"content-type": "application/json"})
    assert tracewire.flush(10)
    stats = tracewire.stats()
    assert stats["exported"] == {sink.name: 20}
    assert stats["queue_traces"] == 0 and stats["queue_bytes"] == 0


def test_empty_body_records_no_inputs(sink: MemorySink) -> None:
    call(make_app(), "POST", "/echo", content=b"")
    root = root_of(only_trace(sink))
    assert root.inputs is None
    assert "mlflow.spanInputs" not in root.attributes


def test_get_query_params_become_inputs_redacted(sink: MemorySink) -> None:
    call(make_app(), "GET", "/sync/x?page=2&api_key=SECRETKEY")
    record = sink.records[0] if tracewire.flush() else None
    assert record is not None
    assert root_of(record.to_trace()).inputs == {"query_params": {"page": "2", "api_key": "[REDACTED]"}}
    assert b"SECRETKEY" not in record.payload


def test_body_the_app_never_reads_is_not_captured(sink: MemorySink) -> None:
    response = call(make_app(), "POST", "/ignore-body", content=b'{"unread": true}',
                    headers={"content-type": "application/json"})
    assert response.json() == {"ok": "yes"}
    assert root_of(only_trace(sink)).inputs is None


def test_bodies_over_max_value_bytes_are_truncated(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01, max_value_bytes=4096)
    payload = json.dumps({"password": "hunter2", "data": "z" * 200_000}).encode()
    call(make_app(), "POST", "/echo", content=payload, headers={"content-type": "application/json"})
    assert tracewire.flush()
    [record] = sink.records
    root = root_of(record.to_trace())
    assert root.inputs["tracewire.truncated"] is True
    assert root.inputs["original_size"] == len(payload)
    assert root.outputs["original_size"] == len(payload)
    assert "MAX_REQUEST_SIZE_EXCEEDED" in record.logging_error_codes
    assert "MAX_RESPONSE_SIZE_EXCEEDED" in record.logging_error_codes
    assert b"hunter2" not in record.payload
    assert record.to_trace().info.trace_metadata["tracewire.truncated"] == "true"


def test_capture_bodies_off(sink: MemorySink) -> None:
    call(make_app(capture_bodies=False), "POST", "/items/1", json={"q": "x"})
    root = root_of(only_trace(sink))
    assert root.inputs is None and root.outputs is None
    assert root.attributes["http.status_code"] == 200


def test_keyword_arguments_win_over_env(sink: MemorySink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACING_CAPTURE_BODIES", "false")
    call(make_app(capture_bodies=True), "POST", "/items/1", json={"q": "x"})
    assert root_of(only_trace(sink)).inputs == {"q": "x"}


# -- headers, secrets, trace context ----------------------------------------------------------------


def test_secrets_appear_nowhere_in_the_trace(sink: MemorySink) -> None:
    headers = {"Authorization": "Bearer AUTHSECRET", "Cookie": "sid=COOKIESECRET",
               "Proxy-Authorization": "Basic PROXYSECRET", "content-type": "application/json"}
    call(make_app(), "POST", "/echo", headers=headers,
         content=b'{"user": "ann", "password": "PWSECRET", "nested": {"api_key": "KEYSECRET"}}')
    call(make_app(), "GET", "/cookie", headers=headers)
    assert tracewire.flush()
    assert len(sink.records) == 2
    for record in sink.records:
        for secret in (b"AUTHSECRET", b"COOKIESECRET", b"PROXYSECRET", b"PWSECRET", b"KEYSECRET",
                       b"SETCOOKIEVALUE"):
            assert secret not in record.payload
    assert root_of(sink.records[0].to_trace()).inputs["password"] == "[REDACTED]"


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"x-session-id", b"s" * 257), (b"x-session-id", b"bad\x01id"), (b"x-session-id", b"\xff\xfe"),
     (b"x-request-id", b"r" * 300), (b"x-user-id", b"evil\r\nInjected: 1")],
    ids=["too-long", "control-char", "undecodable", "request-id-too-long", "crlf"],
)
def test_bad_header_values_are_rejected_not_fatal(sink: MemorySink, name: bytes, value: bytes) -> None:
    before = TracingMiddleware.stats()["rejected_headers"]
    app = make_app()
    headers = [(b"x-user-id", b"ok-user"), (name, value)] if name != b"x-user-id" else [(name, value)]
    sent = raw_call(app, http_scope("/health", headers), [{"type": "http.request", "body": b""}])
    assert sent[0]["status"] == 200
    trace = only_trace(sink)
    metadata = trace.info.trace_metadata
    assert metadata["tracewire.rejected_headers"] == name.decode()
    assert TracingMiddleware.stats()["rejected_headers"] == before + 1
    stored = [trace.info.client_request_id, trace.info.session_id, trace.info.user_id]
    assert value.decode("utf-8", "replace") not in stored
    if name != b"x-user-id":
        assert trace.info.user_id == "ok-user"


def test_traceparent_valid(sink: MemorySink) -> None:
    response = call(make_app(), "GET", "/sync/a",
                    headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc,other=1"})
    trace = only_trace(sink)
    root = root_of(trace)
    assert trace.info.trace_id == "tr-0af7651916cd43dd8448eb211c80319c"
    assert response.headers["x-trace-id"] == trace.info.trace_id
    assert root.parent_id is None
    assert root.attributes["tracewire.remote_parent_span_id"] == "b7ad6b7169203331"
    assert root.attributes["tracewire.tracestate"] == "vendor=abc,other=1"


@pytest.mark.parametrize(
    "traceparent",
    ["00-00000000000000000000000000000000-0000000000000000-00",
     "00-00000000000000000000000000000000-b7ad6b7169203331-01",
     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
     "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
    ids=["all-zero", "zero-trace-id", "missing-flags", "bad-version"],
)
def test_traceparent_invalid_is_ignored(sink: MemorySink, traceparent: str) -> None:
    call(make_app(), "GET", "/sync/a", headers={"traceparent": traceparent, "tracestate": "vendor=abc"})
    trace = only_trace(sink)
    root = root_of(trace)
    assert trace.info.trace_id != "tr-0af7651916cd43dd8448eb211c80319c"
    assert trace.info.trace_id != "tr-" + "0" * 32
    assert "tracewire.remote_parent_span_id" not in root.attributes
    assert "tracewire.tracestate" not in root.attributes


def test_repeated_traceparent_is_ignored(sink: MemorySink) -> None:
    headers = [(b"traceparent", TRACEPARENT.encode()), (b"traceparent", TRACEPARENT.encode())]
    raw_call(make_app(), http_scope("/sync/a", headers), [{"type": "http.request", "body": b""}])
    assert only_trace(sink).info.trace_id != "tr-0af7651916cd43dd8448eb211c80319c"


# -- switches ------------------------------------------------------------------------------------------


def test_excluded_paths_are_not_traced(sink: MemorySink) -> None:
    app = make_app(exclude_paths=[r"^/health$", r"^/needs-"])
    response = call(app, "GET", "/health")
    assert response.json() == {"status": "ok"}
    assert "x-trace-id" not in response.headers
    assert call(app, "GET", "/needs-int/3").json() == 3
    call(app, "GET", "/missing")
    assert tracewire.flush()
    assert [root_of(t).name for t in sink.traces] == ["GET /missing"]


def test_tracing_off_passes_straight_through(caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from middleware import _request

    memory = MemorySink()
    tracewire.configure(enabled=False, sinks=[memory])
    monkeypatch.setattr(_request, "_off_logged", False)
    try:
        with caplog.at_level("INFO", logger="middleware"):
            traced = call(make_app(), "POST", "/items/3", json={"q": "a"}, headers=HEADERS)
        bare = FastAPI()
        bare.router = make_app().router
        plain = call(bare, "POST", "/items/3", json={"q": "a"}, headers=HEADERS)
        assert traced.status_code == plain.status_code == 200
        assert traced.content == plain.content
        assert dict(traced.headers) == dict(plain.headers)
        assert tracewire.flush()
        assert memory.records == []
        assert sum("tracing is off" in r.getMessage() for r in caplog.records) == 1
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


def test_head_sampled_out_requests_are_untouched(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], sample_rate=0.0)
    response = call(make_app(), "GET", "/sync/a")
    assert response.status_code == 200
    assert "x-trace-id" not in response.headers
    assert tracewire.flush()
    assert sink.records == []


def test_process_level_keyword_arguments_configure_tracing() -> None:
    memory = MemorySink.default()
    memory.clear()
    try:
        app = make_app(enabled=True, destination="memory:", batch_interval=0.01)
        response = call(app, "GET", "/sync/q")
        assert tracewire.is_enabled()
        assert tracewire.flush()
        assert [r.trace_id for r in memory.records] == [response.headers["x-trace-id"]]
    finally:
        memory.clear()
        tracewire.shutdown()
        tracewire.configure(enabled=False)


def test_request_path_never_waits_on_a_hung_sink() -> None:
    class HungSink(MemorySink):
        async def export(self, batch: Any) -> None:
            await asyncio.sleep(3600)

    tracewire.configure(enabled=True, sinks=[HungSink()], batch_interval=0.001, export_timeout=30,
                        shutdown_timeout=0.2)
    try:
        app = make_app()
        loop_time = asyncio.run(_timed_requests(app, 50))
        assert loop_time < 5.0
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


async def _timed_requests(app: Any, n: int) -> float:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        start = asyncio.get_running_loop().time()
        for i in range(n):
            assert (await client.get(f"/sync/{i}")).status_code == 200
        return asyncio.get_running_loop().time() - start


# -- streaming -----------------------------------------------------------------------------------------


def stream_app(delay: float = 0.0, chunks: int = 5) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    @tracewire.trace(name="tokens", span_type=SpanType.LLM, output_reducer="".join)
    async def tokens() -> AsyncIterator[str]:
        for i in range(chunks):
            await asyncio.sleep(delay)
            yield f"t{i} "

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for token in tokens():
                yield f"data: {token}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_streaming_span_covers_the_whole_stream(sink: MemorySink) -> None:
    response = call(stream_app(delay=0.02), "GET", "/sse")
    assert response.text == "".join(f"data: t{i} \n\n" for i in range(5))
    trace = only_trace(sink)
    root = root_of(trace)
    assert root.outputs == response.text
    assert root.attributes["tracewire.ttfb_ms"] >= 15
    assert root.duration_ms is not None and root.duration_ms >= 100
    assert root.attributes["tracewire.response_sent_ms"] >= 100
    llm = by_name(trace)["tokens"]
    assert llm.parent_id == root.span_id
    assert llm.outputs == "t0 t1 t2 t3 t4 "
    assert "tracewire.client_disconnected" not in root.attributes


def test_client_disconnect_mid_stream_ends_and_marks_the_span(sink: MemorySink) -> None:
    app = stream_app(delay=0.01, chunks=1000)
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        state = {"n": 0}

        async def receive() -> dict[str, Any]:
            state["n"] += 1
            if state["n"] == 1:
                return {"type": "http.request", "body": b"", "more_body": False}
            while sum(1 for m in sent if m.get("body")) < 3:
                await asyncio.sleep(0.005)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(app(http_scope("/sse"), receive, send), timeout=10)

    asyncio.run(go())
    root = root_of(only_trace(sink))
    assert root.attributes["tracewire.client_disconnected"] is True
    assert root.outputs.startswith("data: t0 \n\ndata: t1 \n\ndata: t2 \n\n")
    assert len(root.outputs) < 1000 * 8
    assert only_trace(sink).info.state == "OK"


def test_send_failing_with_oserror_marks_disconnect_and_reraises(sink: MemorySink) -> None:
    app = stream_app(chunks=50)
    scope = http_scope("/sse")
    scope["asgi"]["spec_version"] = "2.4"  # Starlette then relies on send raising OSError
    count = {"n": 0}

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            count["n"] += 1
            if count["n"] > 3:
                raise OSError("connection reset")

        await app(scope, receive, send)

    with pytest.raises(Exception) as info:
        asyncio.run(go())
    assert type(info.value).__name__ == "ClientDisconnect"
    trace = only_trace(sink)
    assert root_of(trace).attributes["tracewire.client_disconnected"] is True
    assert trace.info.state == "OK"


def test_exception_mid_stream_is_error_with_partial_output(sink: MemorySink) -> None:
    app = FastAPI()
    app.add_middleware(TracingMiddleware)

    @app.get("/broken")
    async def broken() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "data: one\n\n"
            raise ValueError("generator broke")

        return StreamingResponse(events(), media_type="text/event-stream")

    with pytest.raises(ValueError, match="generator broke"):
        call(app, "GET", "/broken")
    trace = only_trace(sink)
    root = root_of(trace)
    assert trace.info.state == "ERROR"
    assert root.attributes["http.status_code"] == 200  # the status line was already sent
    assert root.outputs == "data: one\n\n"
    assert root.events[0].attributes["exception.type"] == "ValueError"


# -- websocket and lifespan -------------------------------------------------------------------------------


def test_websocket_passes_through_and_lifespan_flushes() -> None:
    memory = MemorySink()
    # No periodic export: only an explicit flush (the lifespan's) can deliver the traces.
    tracewire.configure(enabled=True, sinks=[memory], batch_interval=3600, batch_size=10_000)
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")
        with tracewire.start_span("shutdown-hook"):
            pass

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(TracingMiddleware)

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(text[::-1])
        await websocket.close()

    lifespan_sent: list[str] = []
    ws_sent: list[dict[str, Any]] = []

    async def go() -> None:
        started, stop = asyncio.Event(), asyncio.Event()
        steps = iter([{"type": "lifespan.startup"}])

        async def lifespan_receive() -> dict[str, Any]:
            step = next(steps, None)
            if step is not None:
                return step
            await stop.wait()
            return {"type": "lifespan.shutdown"}

        async def lifespan_send(message: dict[str, Any]) -> None:
            lifespan_sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                started.set()

        task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       lifespan_receive, lifespan_send))
        await started.wait()
        ws_in = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hello"},
                 {"type": "websocket.disconnect", "code": 1000}]

        async def ws_receive() -> dict[str, Any]:
            return ws_in.pop(0)

        async def ws_send(message: dict[str, Any]) -> None:
            ws_sent.append(message)

        scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws", "raw_path": b"/ws",
                 "root_path": "", "query_string": b"", "headers": [], "subprotocols": [], "state": {}}
        await app(scope, ws_receive, ws_send)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/ping")).json() == "pong"
        assert memory.records == []  # nothing exported before the shutdown flush
        stop.set()
        await task

    try:
        asyncio.run(go())
        assert events == ["startup", "shutdown"]
        assert lifespan_sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert ws_sent == [{"type": "websocket.accept", "subprotocol": None, "headers": []},
                           {"type": "websocket.send", "text": "olleh"},
                           {"type": "websocket.close", "code": 1000, "reason": ""}]
        names = sorted(r.to_trace().data.spans[0].name for r in memory.records)
        assert names == ["GET /ping", "shutdown-hook"]
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
