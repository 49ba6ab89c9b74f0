"""TracingWSGIMiddleware driven in-process through werkzeug's test client and raw WSGI calls."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder

import tracewire
from middleware import TracingWSGIMiddleware
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import SpanType

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HEADERS = {"X-Request-ID": "req-1", "X-Session-ID": "sess-1", "X-User-ID": "user-1"}


@tracewire.trace(span_type=SpanType.RETRIEVER)
def retrieve(query: str) -> list[str]:
    return [query, query]


@tracewire.trace(name="tokens", span_type=SpanType.LLM, output_reducer="".join)
def tokens(n: int, delay: float) -> Iterator[str]:
    for i in range(n):
        time.sleep(delay)
        yield f"t{i} "


def make_app(**settings: Any) -> Flask:
    app = Flask(__name__)

    @app.post("/items/<int:item_id>")
    def post_item(item_id: int) -> Any:
        body = request.get_json()
        return {"item_id": item_id, "docs": retrieve(str(body.get("q")))}

    @app.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), content_type=request.content_type)

    @app.post("/ignore-body")
    def ignore_body() -> Any:
        return {"ok": "yes"}

    @app.get("/missing")
    def missing() -> Any:
        abort(404)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("kaboom")

    @app.get("/stream")
    def stream() -> Response:
        delay = float(request.args.get("delay", "0"))
        n = int(request.args.get("n", "5"))
        return Response((f"data: {t}\n\n" for t in tokens(n, delay)), mimetype="text/event-stream")

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app, **settings)  # type: ignore[method-assign]
    return app


def root_of(trace: tracewire.Trace) -> tracewire.Span:
    root = trace.root_span
    assert root is not None
    return root


def by_name(trace: tracewire.Trace) -> dict[str, tracewire.Span]:
    return {span.name: span for span in trace.data.spans}


def client(app: Any) -> Client:
    return Client(app)


def test_flask_root_span_children_and_headers(sink: MemorySink) -> None:
    response = client(make_app()).post("/items/7", json={"q": "cats"}, buffered=True,
                                       headers={**HEADERS, "User-Agent": "Werkzeug-test/1"})
    assert response.status_code == 200
    trace = only_trace(sink)
    root = root_of(trace)
    assert response.headers["X-Trace-Id"] == trace.info.trace_id
    assert root.name == "POST /items/<int:item_id>"
    attrs = root.attributes
    assert attrs["http.route"] == "/items/<int:item_id>"
    assert attrs["http.path"] == "/items/7"
    assert attrs["http.method"] == "POST"
    assert attrs["http.status_code"] == 200
    assert attrs["http.user_agent"].startswith("Werkzeug")
    assert root.inputs == {"q": "cats"}
    assert root.outputs == {"item_id": 7, "docs": ["cats", "cats"]}
    assert by_name(trace)["retrieve"].parent_id == root.span_id
    assert (trace.info.client_request_id, trace.info.session_id, trace.info.user_id) == (
        "req-1", "sess-1", "user-1")
    assert trace.info.state == "OK"


def test_mounted_under_script_name(sink: MemorySink) -> None:
    inner = make_app()
    outer = DispatcherMiddleware(Flask("outer"), {"/api": inner})
    response = client(outer).post("/api/items/3", json={"q": "x"}, buffered=True)
    assert response.status_code == 200
    root = root_of(only_trace(sink))
    assert root.name == "POST /api/items/<int:item_id>"
    assert root.attributes["http.path"] == "/api/items/3"


def test_streaming_span_ends_when_the_iterable_is_closed(sink: MemorySink) -> None:
    response = client(make_app()).get("/stream?n=5&delay=0.02")
    try:
        chunks = iter(response.response)
        assert next(chunks) == b"data: t0 \n\n"
        assert tracewire.flush()
        assert sink.records == []  # still streaming: the trace is not finished
        rest = b"".join(chunks)
    finally:
        response.close()
    assert rest == b"".join(f"data: t{i} \n\n".encode() for i in range(1, 5))
    trace = only_trace(sink)
    root = root_of(trace)
    assert root.outputs == "".join(f"data: t{i} \n\n" for i in range(5))
    assert root.duration_ms is not None and root.duration_ms >= 100
    assert root.attributes["tracewire.ttfb_ms"] >= 15
    assert "tracewire.client_disconnected" not in root.attributes
    llm = by_name(trace)["tokens"]
    assert llm.parent_id == root.span_id
    assert llm.outputs == "t0 t1 t2 t3 t4 "


def test_closed_mid_stream_marks_client_disconnect(sink: MemorySink) -> None:
    response = client(make_app()).get("/stream?n=1000")
    chunks = iter(response.response)
    first = [next(chunks) for _ in range(3)]
    response.close()
    assert first[0] == b"data: t0 \n\n"
    trace = only_trace(sink)
    root = root_of(trace)
    assert root.attributes["tracewire.client_disconnected"] is True
    assert trace.info.state == "OK"
    assert by_name(trace)["tokens"].attributes["tracewire.generator_closed_early"] is True


def test_flask_abort_404_is_ok(sink: MemorySink) -> None:
    assert client(make_app()).get("/missing", buffered=True).status_code == 404
    trace = only_trace(sink)
    assert root_of(trace).attributes["http.status_code"] == 404
    assert trace.info.state == "OK"


def test_flask_unhandled_exception_is_error_with_event(sink: MemorySink) -> None:
    assert client(make_app()).get("/boom", buffered=True).status_code == 500
    trace = only_trace(sink)
    root = root_of(trace)
    assert trace.info.state == "ERROR"
    assert root.attributes["http.status_code"] == 500
    [event] = root.events
    assert event.attributes["exception.type"] == "RuntimeError"
    assert sink.records[0].status_code == 500


def test_raw_wsgi_exception_is_reraised_unchanged(sink: MemorySink) -> None:
    error = ValueError("bad")

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        raise error

    with pytest.raises(ValueError) as info:
        client(TracingWSGIMiddleware(app)).get("/x", buffered=True)
    assert info.value is error
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert root_of(trace).attributes["http.status_code"] == 500


def test_exception_while_streaming_is_error(sink: MemorySink) -> None:
    def body() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("stream broke")

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()

    with pytest.raises(RuntimeError, match="stream broke"):
        client(TracingWSGIMiddleware(app)).get("/x", buffered=True)
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert root_of(trace).outputs == "partial"
    assert root_of(trace).attributes["http.status_code"] == 200  # the status line went out


def test_exception_after_start_response_before_body_is_500(sink: MemorySink) -> None:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise KeyError("late")

    with pytest.raises(KeyError):
        client(TracingWSGIMiddleware(app)).get("/x", buffered=True)
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert root_of(trace).attributes["http.status_code"] == 500


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        (b'{"question": "hi"}', "application/json", {"question": "hi"}),
        (b"name=ann&password=pw", "application/x-www-form-urlencoded",
         {"name": "ann", "password": "[REDACTED]"}),
        (b"\xff\x00\xfe", "application/octet-stream",
         {"tracewire.binary": True, "content_type": "application/octet-stream", "size": 3}),
        (b"", "text/plain", None),
    ],
    ids=["json", "form", "binary", "empty"],
)
def test_bodies(sink: MemorySink, content: bytes, content_type: str, expected: Any) -> None:
    response = client(make_app()).post("/echo", data=content, content_type=content_type, buffered=True)
    assert response.data == content
    root = root_of(only_trace(sink))
    assert root.inputs == expected
    assert root.outputs == expected


def test_unread_body_is_not_captured(sink: MemorySink) -> None:
    client(make_app()).post("/ignore-body", json={"unread": True}, buffered=True)
    assert root_of(only_trace(sink)).inputs is None


def test_large_bodies_are_capped(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01, max_value_bytes=4096)
    payload = json.dumps({"token": "TOKSECRET", "data": "z" * 500_000}).encode()
    response = client(make_app()).post("/echo", data=payload, content_type="application/json", buffered=True)
    assert response.data == payload
    assert tracewire.flush()
    [record] = sink.records
    root = root_of(record.to_trace())
    assert root.inputs["original_size"] == len(payload)
    assert root.outputs["original_size"] == len(payload)
    assert {"MAX_REQUEST_SIZE_EXCEEDED", "MAX_RESPONSE_SIZE_EXCEEDED"} <= set(record.logging_error_codes)
    assert b"TOKSECRET" not in record.payload


def test_input_read_styles_are_all_teed(sink: MemorySink) -> None:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline()
        buffer = bytearray(4)
        n = stream.readinto(buffer)
        rest = b"".join(stream)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [first + bytes(buffer[:n]) + rest]

    body = b"line one\nabcdREST\nmore"
    response = client(TracingWSGIMiddleware(app)).post("/x", data=body, content_type="text/plain",
                                                       buffered=True)
    assert response.data == body
    root = root_of(only_trace(sink))
    assert root.inputs == body.decode()


def test_legacy_write_callable_is_teed(sink: MemorySink) -> None:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"returned"]

    response = client(TracingWSGIMiddleware(app)).get("/x")  # werkzeug drops write() when buffered
    assert response.data == b"written returned"
    response.close()
    assert root_of(only_trace(sink)).outputs == "written returned"


def test_secrets_appear_nowhere(sink: MemorySink) -> None:
    headers = {"Authorization": "Bearer AUTHSECRET", "Cookie": "sid=COOKIESECRET",
               "Proxy-Authorization": "Basic PROXYSECRET"}
    client(make_app()).post("/echo", data=b'{"api_key": "KEYSECRET", "x": 1}', headers=headers,
                            content_type="application/json", buffered=True)
    assert tracewire.flush()
    [record] = sink.records
    for secret in (b"AUTHSECRET", b"COOKIESECRET", b"PROXYSECRET", b"KEYSECRET"):
        assert secret not in record.payload


@pytest.mark.parametrize(
    ("key", "value"),
    [("HTTP_X_SESSION_ID", "s" * 257), ("HTTP_X_SESSION_ID", "a\x01b"),
     ("HTTP_X_SESSION_ID", "\xff\xfe"), ("HTTP_X_REQUEST_ID", "r\x7f")],
    ids=["too-long", "control-char", "undecodable", "request-id-del"],
)
def test_bad_header_values_are_rejected(sink: MemorySink, key: str, value: str) -> None:
    before = TracingWSGIMiddleware.stats()["rejected_headers"]
    environ = EnvironBuilder(path="/health", headers={"X-User-ID": "ok-user"}).get_environ()
    environ[key] = value  # as a server hands it over: bytes decoded as latin-1
    response = client(make_app()).open(environ, buffered=True)
    assert response.status_code == 200
    trace = only_trace(sink)
    name = key[5:].lower().replace("_", "-")
    assert trace.info.trace_metadata["tracewire.rejected_headers"] == name
    assert trace.info.user_id == "ok-user"
    assert TracingWSGIMiddleware.stats()["rejected_headers"] == before + 1


@pytest.mark.parametrize(
    ("traceparent", "honoured"),
    [(TRACEPARENT, True), ("00-00000000000000000000000000000000-0000000000000000-00", False),
     ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01, " + TRACEPARENT, False),
     ("nonsense", False)],
    ids=["valid", "all-zero", "repeated", "invalid"],
)
def test_traceparent(sink: MemorySink, traceparent: str, honoured: bool) -> None:
    response = client(make_app()).get("/health", headers={"traceparent": traceparent, "tracestate": "v=1"},
                                      buffered=True)
    trace = only_trace(sink)
    root = root_of(trace)
    assert response.headers["X-Trace-Id"] == trace.info.trace_id
    assert root.parent_id is None
    if honoured:
        assert trace.info.trace_id == "tr-0af7651916cd43dd8448eb211c80319c"
        assert root.attributes["tracewire.remote_parent_span_id"] == "b7ad6b7169203331"
        assert root.attributes["tracewire.tracestate"] == "v=1"
    else:
        assert trace.info.trace_id != "tr-0af7651916cd43dd8448eb211c80319c"
        assert "tracewire.remote_parent_span_id" not in root.attributes
        assert "tracewire.tracestate" not in root.attributes


def test_excluded_paths_and_capture_off(sink: MemorySink) -> None:
    app = make_app(exclude_paths=r"^/health$", capture_bodies=False)
    response = client(app).get("/health", buffered=True)
    assert "X-Trace-Id" not in response.headers
    client(app).post("/echo", data=b"body", content_type="text/plain", buffered=True)
    root = root_of(only_trace(sink))
    assert root.name == "POST /echo"
    assert root.inputs is None and root.outputs is None


def test_tracing_off_passes_straight_through() -> None:
    memory = MemorySink()
    tracewire.configure(enabled=False, sinks=[memory])
    try:
        traced = client(make_app()).post("/items/1", json={"q": "a"}, headers=HEADERS, buffered=True)
        assert "X-Trace-Id" not in traced.headers
        assert traced.json == {"item_id": 1, "docs": ["a", "a"]}
        assert tracewire.flush()
        assert memory.records == []
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


def test_non_seekable_input_with_no_body(sink: MemorySink) -> None:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("204 No Content", [])
        return []

    environ = EnvironBuilder(path="/nothing", method="DELETE").get_environ()
    environ["wsgi.input"] = io.BufferedReader(io.BytesIO(b""))  # type: ignore[arg-type]
    response = client(TracingWSGIMiddleware(app)).open(environ, buffered=True)
    assert response.status_code == 204
    root = root_of(only_trace(sink))
    assert root.name == "DELETE /nothing"
    assert root.attributes["http.status_code"] == 204
