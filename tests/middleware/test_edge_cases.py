"""ASGI/WSGI edge cases through the real middleware (issue 12): nested tracing, non-conforming
scopes, the file-send extensions, ``http.route`` under mounts and ``root_path`` (differential
against opentelemetry-instrumentation-asgi), and OpenTelemetry's ASGI middleware tests that
apply to a tracer of ours (long responses, trailers, background work, errors, websockets)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

import tracewire
from middleware import TracingMiddleware, TracingWSGIMiddleware
from sinks import MemorySink
from tests.conftest import only_trace
from tests.middleware.routed_app import routed_app
from tests.middleware.test_asgi import by_name, call, http_scope, raw_call, root_of

REQUEST = [{"type": "http.request", "body": b""}]
TRACE_ID, PARENT_ID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACE_PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def trace_id_headers(response: httpx.Response) -> list[str]:
    return response.headers.get_list("x-trace-id")


def sent_trace_ids(sent: list[dict[str, Any]]) -> list[bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return [value for key, value in start["headers"] if key.lower() == b"x-trace-id"]


@tracewire.trace
def lookup(key: str) -> str:
    return key.upper()


# -- nested tracing ----------------------------------------------------------------------------------


def users_app() -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def user(user_id: str) -> str:
        return lookup(user_id)

    return app


def test_middleware_wrapping_middleware_is_one_trace_one_header(sink: MemorySink) -> None:
    app = TracingMiddleware(TracingMiddleware(users_app()))
    response = call(app, "GET", "/users/ann")
    assert response.json() == "ANN"
    trace = only_trace(sink)
    assert trace_id_headers(response) == [trace.info.trace_id]
    root = root_of(trace)
    [inner] = [s for s in trace.data.spans if s.parent_id == root.span_id and s.name != "lookup"]
    assert root.name == inner.name == "GET /users/{user_id}"
    assert by_name(trace)["lookup"].parent_id == inner.span_id
    assert inner.attributes["http.status_code"] == 200
    assert len(trace.data.spans) == 3


def test_mounted_sub_app_with_its_own_middleware_joins_the_outer_trace(sink: MemorySink) -> None:
    sub = users_app()
    sub.add_middleware(TracingMiddleware)

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home), Mount("/api/v2", app=sub)])
    app.add_middleware(TracingMiddleware)
    response = call(app, "GET", "/api/v2/users/bob", headers={"traceparent": TRACE_PARENT})
    assert response.json() == "BOB"
    trace = only_trace(sink)
    assert trace.info.trace_id == "tr-" + TRACE_ID
    assert trace_id_headers(response) == [trace.info.trace_id]
    root = root_of(trace)
    assert root.attributes["tracewire.remote_parent_span_id"] == PARENT_ID
    spans = by_name(trace)
    assert root.name == "GET /api/v2/users/{user_id}"
    [inner] = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert inner.name == "GET /api/v2/users/{user_id}"
    assert inner.attributes["http.route"] == "/api/v2/users/{user_id}"
    assert spans["lookup"].parent_id == inner.span_id
    assert "tracewire.remote_parent_span_id" not in inner.attributes
    # The outer app's own route is an ordinary single-span trace.
    assert call(app, "GET", "/").text == "home"


def test_request_served_inside_an_active_span_is_its_child(sink: MemorySink) -> None:
    app = TracingMiddleware(users_app())
    with tracewire.start_span("job") as job:
        response = call(app, "GET", "/users/cy")
    trace = only_trace(sink)
    assert trace.info.trace_id == job.trace_id
    assert trace_id_headers(response) == [job.trace_id]  # the trace the request is in
    request_span = by_name(trace)["GET /users/{user_id}"]
    assert request_span.parent_id == job.span_id
    assert by_name(trace)["lookup"].parent_id == request_span.span_id
    assert root_of(trace).name == "job"


def test_request_inside_an_unsampled_trace_is_not_traced(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], sample_rate=0.0)
    app = TracingMiddleware(TracingMiddleware(users_app()))
    response = call(app, "GET", "/users/dee")
    assert response.json() == "DEE"
    assert trace_id_headers(response) == []
    assert tracewire.flush()
    assert sink.records == []


def test_an_app_setting_the_trace_header_itself_keeps_one(sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"X-Trace-Id", b"set-by-app")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    assert sent_trace_ids(sent) == [b"set-by-app"]
    assert only_trace(sink).info.state == "OK"


def flask_users() -> Flask:
    app = Flask("users")

    @app.get("/users/<user_id>")
    def user(user_id: str) -> str:
        return lookup(user_id)

    return app


def test_wsgi_middleware_wrapping_middleware_is_one_trace_one_header(sink: MemorySink) -> None:
    app = flask_users()
    app.wsgi_app = TracingWSGIMiddleware(TracingWSGIMiddleware(app.wsgi_app))  # type: ignore[method-assign]
    response = Client(app).get("/users/ann", buffered=True)
    assert response.text == "ANN"
    trace = only_trace(sink)
    assert response.headers.getlist("X-Trace-Id") == [trace.info.trace_id]
    root = root_of(trace)
    [inner] = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert root.name == inner.name == "GET /users/<user_id>"
    assert by_name(trace)["lookup"].parent_id == inner.span_id


def test_wsgi_mounted_sub_app_with_its_own_middleware_joins_the_outer_trace(sink: MemorySink) -> None:
    sub = flask_users()
    sub.wsgi_app = TracingWSGIMiddleware(sub.wsgi_app)  # type: ignore[method-assign]
    outer = TracingWSGIMiddleware(DispatcherMiddleware(Flask("outer"), {"/api/v2": sub}))
    response = Client(outer).get("/api/v2/users/bo", headers={"traceparent": TRACE_PARENT}, buffered=True)
    assert response.text == "BO"
    trace = only_trace(sink)
    assert trace.info.trace_id == "tr-" + TRACE_ID
    assert response.headers.getlist("X-Trace-Id") == [trace.info.trace_id]
    root = root_of(trace)
    [inner] = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert root.name == inner.name == "GET /api/v2/users/<user_id>"
    assert root.attributes["http.route"] == "/api/v2/users/<user_id>"
    assert by_name(trace)["lookup"].parent_id == inner.span_id


def test_wsgi_request_inside_an_active_span_is_its_child(sink: MemorySink) -> None:
    app = flask_users()
    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    with tracewire.start_span("job") as job:
        response = Client(app).get("/users/cy", buffered=True)
    trace = only_trace(sink)
    assert trace.info.trace_id == job.trace_id
    assert response.headers.getlist("X-Trace-Id") == [job.trace_id]
    assert by_name(trace)["GET /users/<user_id>"].parent_id == job.span_id


def test_wsgi_nested_exception_is_recorded_on_both_request_spans(sink: MemorySink) -> None:
    def boom(environ: Any, start_response: Any) -> Iterable[bytes]:
        raise KeyError("gone")

    app = TracingWSGIMiddleware(TracingWSGIMiddleware(boom))
    with pytest.raises(KeyError):
        Client(app).get("/x")
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    for span in trace.data.spans:
        assert [e.attributes["exception.type"] for e in span.events] == ["KeyError"]
        assert span.attributes["http.status_code"] == 500


# -- non-conforming scopes ------------------------------------------------------------------------------


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.mark.parametrize(
    ("query", "expected"),
    [("q=cats&token=abc", {"q": "cats", "token": "[REDACTED]"}), (b"q=dogs", {"q": "dogs"}),
     (bytearray(b"q=x"), {"q": "x"}), (12345, None), (None, None)],
    ids=["str", "bytes", "bytearray", "int", "none"],
)
def test_query_string_of_any_type_fails_open(sink: MemorySink, query: Any, expected: Any) -> None:
    scope = http_scope("/search")
    scope["query_string"] = query
    sent = raw_call(TracingMiddleware(ok_app), scope, REQUEST)
    assert sent[0]["status"] == 200
    trace = only_trace(sink)
    root = root_of(trace)
    assert sent_trace_ids(sent) == [trace.info.trace_id.encode()]
    assert root.attributes["http.status_code"] == 200
    assert root.inputs == (None if expected is None else {"query_params": expected})


def test_minimal_scope_without_optional_keys(sink: MemorySink) -> None:
    """A server may omit ``server``, ``client``, ``root_path``, ``headers`` ... (OTel's
    ``test_behavior_with_scope_server_as_none`` and friends)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/min", "query_string": b"", "headers": [], "server": None}
    sent = raw_call(TracingMiddleware(ok_app), scope, REQUEST)
    assert sent[0]["status"] == 200
    root = root_of(only_trace(sink))
    assert root.name == "GET /min"
    assert root.attributes["http.route"] == "/min"


# -- file-send extensions -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http.response.zerocopysend", "http.response.pathsend"])
def test_file_send_extensions_end_the_response(sink: MemorySink, kind: str) -> None:
    with tempfile.NamedTemporaryFile(delete=False) as handle:
        handle.write(b"file body")
    after_send_s = 0.15

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert kind in scope["extensions"]
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        if kind == "http.response.pathsend":
            await send({"type": kind, "path": handle.name})
        else:
            with open(handle.name, "rb") as file:
                await send({"type": kind, "file": file.fileno()})
        await asyncio.sleep(after_send_s)  # work after the response (a background task)

    scope = http_scope("/download")
    scope["extensions"] = {kind: {}}
    try:
        sent = raw_call(TracingMiddleware(app), scope, REQUEST)
    finally:
        os.unlink(handle.name)
    assert [m["type"] for m in sent] == ["http.response.start", kind]
    trace = only_trace(sink)
    root = root_of(trace)
    sent_ms = root.attributes["tracewire.response_sent_ms"]
    assert root.duration_ms is not None and root.duration_ms >= after_send_s * 1000
    assert sent_ms < root.duration_ms - after_send_s * 1000 / 2
    assert "tracewire.client_disconnected" not in root.attributes
    assert trace.info.state == "OK"


# -- http.route under mounts and root_path: differential against OpenTelemetry -------------------------


def otel_targets(root_path: str, urls: list[str]) -> list[str | None]:
    """``http.route`` as opentelemetry-instrumentation-asgi records it (the ``http.target`` of its
    duration metric: ``root_path`` + the matched route's ``path_format``), one per request."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    targets: list[str | None] = []
    for url in urls:
        reader = InMemoryMetricReader()
        app = OpenTelemetryMiddleware(routed_app(), tracer_provider=TracerProvider(),
                                      meter_provider=MeterProvider(metric_readers=[reader]))
        _get(app, root_path, url)
        data = reader.get_metrics_data()
        assert data is not None
        [point] = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                   if m.name == "http.server.duration" for p in m.data.data_points]
        target = point.attributes.get("http.target")
        targets.append(None if target is None else str(target))
    return targets


def _get(app: Any, root_path: str, url: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(url)

    return asyncio.run(go())


ROUTE_URLS = ["/v2/users/42", "/v2/health", "/items/7", "/nested/deeper/things/x", "/raw/a/b", "/nowhere"]


@pytest.mark.parametrize("root_path", ["", "/api", "/api/gw"], ids=["no-root-path", "api", "api-gw"])
def test_http_route_matches_opentelemetry(sink: MemorySink, root_path: str) -> None:
    urls = [root_path + url for url in ROUTE_URLS]
    ours_app = TracingMiddleware(routed_app())
    statuses = [_get(ours_app, root_path, url).status_code for url in urls]
    assert statuses == [200, 200, 200, 200, 200, 404]
    assert tracewire.flush()
    by_path = {root_of(t).attributes["http.path"]: root_of(t).attributes["http.route"] for t in sink.traces}
    ours = [by_path[url] for url in urls]
    theirs = otel_targets(root_path, urls)
    # OpenTelemetry records no template for a raw mounted app or an unmatched path; there we
    # record the mount's template ("/raw/{path}") and the path, never the (high-cardinality) None.
    assert ours[:4] == theirs[:4]
    assert ours[:4] == [root_path + "/v2/users/{user_id}", root_path + "/v2/health",
                        root_path + "/items/{item_id}", root_path + "/nested/deeper/things/{thing}"]
    assert theirs[4:] == [None, None]
    assert ours[4:] == [root_path + "/raw/{path}", root_path + "/nowhere"]


def test_http_route_with_root_path_through_uvicorn(tmp_path: Any) -> None:
    """A real uvicorn with ``--root-path /api`` behind a proxy that stripped the prefix: the
    route is recorded with the prefix, as the client outside the proxy sees it."""
    from tests.e2e.servers import Server, free_port, read_traces, tracing_env

    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.middleware.routed_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--root-path", "/api"]
    server = Server(argv, tracing_env(traces_file), port)
    try:
        server.wait_ready("/v2/health")
        assert httpx.get(server.base_url + "/v2/users/7").json() == "7"
        assert httpx.get(server.base_url + "/raw/x").text == "raw"
        assert server.stop() in (0, -15), server.log()
    finally:
        server.close()
    routes = {t.root_span.attributes["http.route"] for t in read_traces(traces_file) if t.root_span}
    assert routes == {"/api/v2/health", "/api/v2/users/{user_id}", "/api/raw/{path}"}


# -- OpenTelemetry's ASGI middleware tests, ported ---------------------------------------------------


def test_long_response_ends_on_the_final_body_message(sink: MemorySink) -> None:
    """OTel ``test_long_response``: four body messages, the span covers all of them."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [[b"Content-Type", b"text/plain"], [b"content-length", b"4"]]})
        for more in (True, True, True, False):
            await asyncio.sleep(0.02)
            await send({"type": "http.response.body", "body": b"*", "more_body": more})

    sent = raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    assert [m.get("body") for m in sent[1:]] == [b"*"] * 4
    assert sent[0]["headers"][:2] == [[b"Content-Type", b"text/plain"], [b"content-length", b"4"]]
    root = root_of(only_trace(sink))
    assert root.outputs == "****"
    assert root.attributes["tracewire.response_sent_ms"] >= 60
    assert root.attributes["tracewire.ttfb_ms"] < root.attributes["tracewire.response_sent_ms"]


def test_background_execution_after_the_response(sink: MemorySink) -> None:
    """OTel ``test_background_execution``: OTel ends its span before the background work; we keep
    the work in the trace and mark when the response was sent."""
    background_s = 0.2

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"*"})
        time.sleep(background_s)

    raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    root = root_of(only_trace(sink))
    assert root.attributes["tracewire.response_sent_ms"] < background_s * 1000 / 2
    assert root.duration_ms is not None and root.duration_ms >= background_s * 1000


def test_trailers_end_the_response(sink: MemorySink) -> None:
    """OTel ``test_trailers``: with ``trailers: True`` the response ends with the last trailers."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"*", "more_body": True})
        await send({"type": "http.response.body", "body": b"*", "more_body": False})
        await asyncio.sleep(0.1)  # computing the trailer
        await send({"type": "http.response.trailers", "headers": [[b"trailer", b"t1"]],
                    "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [[b"trailer", b"t2"]],
                    "more_trailers": False})
        time.sleep(0.2)

    sent = raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    assert [m["type"] for m in sent][-2:] == ["http.response.trailers"] * 2
    root = root_of(only_trace(sink))
    assert root.outputs == "**"
    assert 100 <= root.attributes["tracewire.response_sent_ms"] < 250
    assert "tracewire.client_disconnected" not in root.attributes


def test_exc_info_kept_by_the_app_is_not_an_error(sink: MemorySink) -> None:
    """OTel ``test_asgi_exc_info``: an exception the app caught and answered 200 is not an error."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            raise ValueError("handled")
        except ValueError:
            scope["hack_exc_info"] = "caught"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"*"})

    raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    trace = only_trace(sink)
    assert trace.info.state == "OK"
    assert root_of(trace).events == []


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
def test_exception_is_recorded_and_reraised(sink: MemorySink, started: bool) -> None:
    """OTel's error tests: the exception propagates unchanged, the span is ERROR with an event."""
    error = RuntimeError("app broke")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    with pytest.raises(RuntimeError) as info:
        raw_call(TracingMiddleware(app), http_scope("/"), REQUEST)
    assert info.value is error
    trace = only_trace(sink)
    root = root_of(trace)
    assert trace.info.state == "ERROR"
    assert root.attributes["http.status_code"] == (200 if started else 500)
    assert [e.attributes["exception.message"] for e in root.events] == ["app broke"]


def test_websocket_is_passed_through_untouched(sink: MemorySink) -> None:
    """OTel ``test_websocket``: ping/pong through the middleware; we trace no websocket."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.receive" and message.get("text") == "ping":
                await send({"type": "websocket.send", "text": "pong"})
            elif message["type"] == "websocket.disconnect":
                break

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws", "raw_path": b"/ws",
             "root_path": "", "query_string": b"", "headers": [], "subprotocols": []}
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "ping"},
                {"type": "websocket.disconnect", "code": 1000}]
    sent = raw_call(TracingMiddleware(app), scope, incoming)
    assert sent == [{"type": "websocket.accept"}, {"type": "websocket.send", "text": "pong"}]
    assert tracewire.flush()
    assert sink.records == []


def test_lifespan_failure_passes_through(sink: MemorySink) -> None:
    """OTel passes lifespan through; a failing startup reaches the server unchanged."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sent = raw_call(TracingMiddleware(app), {"type": "lifespan", "asgi": {"version": "3.0"}},
                    [{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.failed", "message": "no database"}]


@pytest.mark.parametrize("layout", ["middleware-in-middleware", "inside-a-span"])
def test_flask_exception_recorded_on_a_nested_request_span(sink: MemorySink, layout: str) -> None:
    app = Flask("boom")

    @app.get("/boom")
    def boom() -> str:
        raise LookupError("flask handler broke")

    inner = TracingWSGIMiddleware(app.wsgi_app)
    nested = TracingWSGIMiddleware(inner) if layout == "middleware-in-middleware" else inner
    app.wsgi_app = nested  # type: ignore[method-assign]
    if layout == "inside-a-span":
        with tracewire.start_span("job"):
            response = Client(app).get("/boom", buffered=True)
    else:
        response = Client(app).get("/boom", buffered=True)
    assert response.status_code == 500
    trace = only_trace(sink)
    request_span = next(s for s in trace.data.spans if s.name == "GET /boom" and s.parent_id is not None)
    assert [e.attributes["exception.type"] for e in request_span.events] == ["LookupError"]
    assert request_span.status == "ERROR"
    # The trace's state is its root's: the outer request answered 500; the user's span did not fail.
    assert trace.info.state == ("ERROR" if layout == "middleware-in-middleware" else "OK")
