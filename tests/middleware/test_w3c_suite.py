"""The W3C trace-context test suite (github.com/w3c/trace-context, ``test/test.py``,
``TraceContextTest`` at STRICT_LEVEL 2), ported: each case's request headers go through the real
middleware — raw ASGI (as a server hands them over: names lower-cased, repeats kept), werkzeug's
test client for WSGI (repeats joined with commas, as WSGI servers do) and a real uvicorn over
HTTP — and the trace is checked: the trace id is the ``traceparent``'s when the suite expects it
inherited, a fresh one otherwise; the ``tracestate`` recorded (``tracewire.tracestate``) is the
list the suite expects inherited, or nothing when it expects it discarded.

The suite checks the headers a service sends on; tracewire propagates nothing onwards, so what
it "inherits" is what it records.  Where the suite only asks for "a valid traceparent" (a fresh
trace), the expectation is a fresh random trace id.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from werkzeug.test import Client

import tracewire
from middleware import TracingMiddleware, TracingWSGIMiddleware
from sinks import MemorySink
from tests.conftest import only_trace
from tests.middleware.test_asgi import http_scope, raw_call

TRACE_ID = "12345678901234567890123456789012"
P00 = f"00-{TRACE_ID}-1234567890123456-00"  # the parent the suite's tracestate cases send
P01 = f"00-{TRACE_ID}-1234567890123456-01"
KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
VALUE_CHARS = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))
BAR32 = [",".join(f"bar{i:02d}={i:02d}" for i in range(start, start + 10)) for start in (1, 11, 21)]


class Case(NamedTuple):
    id: str
    headers: list[tuple[str, str]]
    inherited: bool  # the trace id is the traceparent's
    tracestate: str | None = None  # what is recorded; None: nothing


def tp(value: str) -> list[tuple[str, str]]:
    return [("traceparent", value)]


def ts(*values: str, parent: str = P00) -> list[tuple[str, str]]:
    return [("traceparent", parent), *(("tracestate", v) for v in values)]


def members(n: int, value_chars: int) -> str:
    return ",".join(f"k{i:02d}=" + "v" * value_chars for i in range(n))


CASES = [
    # -- traceparent -----------------------------------------------------------------------------
    Case("both-missing", [], False),
    Case("traceparent-only", tp(P01), True),
    Case("traceparent-duplicated", [("traceparent", f"00-{TRACE_ID[:-1]}1-1234567890123456-01"),
                                    ("traceparent", P01)], False),
    Case("name-trace-parent", [("trace-parent", P01)], False),
    Case("name-trace.parent", [("trace.parent", P01)], False),
    Case("name-casing-TraceParent", [("TraceParent", P01)], True),
    Case("name-casing-TrAcEpArEnT", [("TrAcEpArEnT", P01)], True),
    Case("name-casing-TRACEPARENT", [("TRACEPARENT", P01)], True),
    Case("v00-trailing-dot", tp(P01 + "."), False),
    Case("v00-future-suffix", tp(P01 + "-what-the-future-will-be-like"), False),
    Case("vcc", tp("cc" + P01[2:]), True),
    Case("vcc-future-suffix", tp("cc" + P01[2:] + "-what-the-future-will-be-like"), True),
    Case("vcc-dot-suffix", tp("cc" + P01[2:] + ".what-the-future-will-be-like"), False),
    Case("vff", tp("ff" + P01[2:]), False),
    Case("version-illegal-.0", tp(".0" + P01[2:]), False),
    Case("version-illegal-0.", tp("0." + P01[2:]), False),
    Case("version-too-long-3", tp("0" + P01), False),
    Case("version-too-long-4", tp("00" + P01), False),
    Case("version-too-short", tp(P01[1:]), False),
    Case("trace-id-all-zero", tp(f"00-{'0' * 32}-1234567890123456-01"), False),
    Case("trace-id-illegal-first", tp(f"00-.{TRACE_ID[1:]}-1234567890123456-01"), False),
    Case("trace-id-illegal-last", tp(f"00-{TRACE_ID[:-1]}.-1234567890123456-01"), False),
    Case("trace-id-too-long", tp(f"00-{TRACE_ID}3-1234567890123456-01"), False),
    Case("trace-id-too-short", tp(f"00-{TRACE_ID[:-1]}-1234567890123456-01"), False),
    Case("parent-id-all-zero", tp(f"00-{TRACE_ID}-{'0' * 16}-01"), False),
    Case("parent-id-illegal-first", tp(f"00-{TRACE_ID}-.234567890123456-01"), False),
    Case("parent-id-illegal-last", tp(f"00-{TRACE_ID}-123456789012345.-01"), False),
    Case("parent-id-too-long", tp(f"00-{TRACE_ID}-12345678901234567-01"), False),
    Case("parent-id-too-short", tp(f"00-{TRACE_ID}-123456789012345-01"), False),
    Case("flags-illegal-.0", tp(f"00-{TRACE_ID}-1234567890123456-.0"), False),
    Case("flags-illegal-0.", tp(f"00-{TRACE_ID}-1234567890123456-0."), False),
    Case("flags-too-long", tp(f"00-{TRACE_ID}-1234567890123456-001"), False),
    Case("flags-too-short", tp(f"00-{TRACE_ID}-1234567890123456-1"), False),
    Case("ows-leading-space", tp(" " + P01), True),
    Case("ows-leading-tab", tp("\t" + P01), True),
    Case("ows-trailing-space", tp(P01 + " "), True),
    Case("ows-trailing-tab", tp(P01 + "\t"), True),
    Case("ows-both", tp("\t " + P01 + " \t"), True),
    # -- tracestate ------------------------------------------------------------------------------
    Case("tracestate-without-traceparent", [("tracestate", "foo=1")], False),
    Case("tracestate-without-traceparent-2", [("tracestate", "foo=1,bar=2")], False),
    Case("tracestate-with-invalid-traceparent", ts("foo=1", parent="ff" + P00[2:]), False),
    Case("tracestate-inherited", ts("foo=1,bar=2"), True, "foo=1,bar=2"),
    Case("tracestate-name-trace-state", [("traceparent", P00), ("trace-state", "foo=1")], True),
    Case("tracestate-name-trace.state", [("traceparent", P00), ("trace.state", "foo=1")], True),
    Case("tracestate-casing-TraceState", [("traceparent", P00), ("TraceState", "foo=1")], True, "foo=1"),
    Case("tracestate-casing-TrAcEsTaTe", [("traceparent", P00), ("TrAcEsTaTe", "foo=1")], True, "foo=1"),
    Case("tracestate-casing-TRACESTATE", [("traceparent", P00), ("TRACESTATE", "foo=1")], True, "foo=1"),
    Case("tracestate-empty", ts(""), True),
    Case("tracestate-value-then-empty", ts("foo=1", ""), True, "foo=1"),
    Case("tracestate-empty-then-value", ts("", "foo=1"), True, "foo=1"),
    Case("tracestate-multiple-headers", ts("foo=1,bar=2", "rojo=1,congo=2", "baz=3"), True,
         "foo=1,bar=2,rojo=1,congo=2,baz=3"),
    Case("tracestate-duplicated-key-same", ts("foo=1,foo=1"), True),
    Case("tracestate-duplicated-key-different", ts("foo=1,foo=2"), True),
    Case("tracestate-duplicated-key-headers-same", ts("foo=1", "foo=1"), True),
    Case("tracestate-duplicated-key-headers-different", ts("foo=1", "foo=2"), True),
    Case("tracestate-all-allowed-characters", ts(f"{KEY_CHARS}={VALUE_CHARS}"), True,
         f"{KEY_CHARS}={VALUE_CHARS}"),
    Case("tracestate-all-allowed-characters-vendor", ts(f"{KEY_CHARS}@a-z0-9_-*/={VALUE_CHARS}"), True,
         f"{KEY_CHARS}@a-z0-9_-*/={VALUE_CHARS}"),
    Case("tracestate-ows-spaces-tabs", ts("foo=1 \t , \t bar=2, \t baz=3"), True, "foo=1,bar=2,baz=3"),
    Case("tracestate-ows-tabs-spaces", ts("foo=1\t \t,\t \tbar=2,\t \tbaz=3"), True, "foo=1,bar=2,baz=3"),
    Case("tracestate-ows-leading-space", ts(" foo=1"), True, "foo=1"),
    Case("tracestate-ows-leading-tab", ts("\tfoo=1"), True, "foo=1"),
    Case("tracestate-ows-trailing-space", ts("foo=1 "), True, "foo=1"),
    Case("tracestate-ows-trailing-tab", ts("foo=1\t"), True, "foo=1"),
    Case("tracestate-ows-both", ts("\t foo=1 \t"), True, "foo=1"),
    Case("tracestate-key-space", ts("foo =1"), True),
    Case("tracestate-key-upper", ts("FOO=1"), True),
    Case("tracestate-key-dot", ts("foo.bar=1"), True),
    Case("tracestate-vendor-empty", ts("foo@=1,bar=2"), True),
    Case("tracestate-tenant-empty", ts("@foo=1,bar=2"), True),
    Case("tracestate-vendor-double-at", ts("foo@@bar=1,bar=2"), True),
    Case("tracestate-vendor-two-ats", ts("foo@bar@baz=1,bar=2"), True),
    Case("tracestate-32-members", ts(*BAR32, "bar31=31,bar32=32"), True,
         ",".join([*BAR32, "bar31=31,bar32=32"])),
    Case("tracestate-33-members", ts(*BAR32, "bar31=31,bar32=32,bar33=33"), True),
    Case("tracestate-key-256", ts("foo=1", "z" * 256 + "=1"), True, "foo=1," + "z" * 256 + "=1"),
    Case("tracestate-key-257", ts("foo=1", "z" * 257 + "=1"), True),
    Case("tracestate-tenant-241-vendor-14", ts("foo=1", "t" * 241 + "@" + "v" * 14 + "=1"), True,
         "foo=1," + "t" * 241 + "@" + "v" * 14 + "=1"),
    Case("tracestate-tenant-242", ts("foo=1", "t" * 242 + "@v=1"), True),
    Case("tracestate-vendor-15", ts("foo=1", "t@" + "v" * 15 + "=1"), True),
    Case("tracestate-value-equals", ts("foo=bar=baz"), True),
    Case("tracestate-value-empty", ts("foo=,bar=3"), True),
    # -- issue 12: a list over 512 characters is cut on member boundaries, large members first ------
    Case("tracestate-over-512-cut", ts("a=" + "x" * 200, members(14, 30)), True, members(14, 30)),
    Case("tracestate-over-512-small-members-from-the-end", ts(members(14, 40)), True, members(11, 40)),
]
IDS = [case.id for case in CASES]


def check(trace: tracewire.Trace, case: Case) -> None:
    root = trace.root_span
    assert root is not None
    trace_hex = trace.info.trace_id.removeprefix("tr-")
    if case.inherited:
        assert trace_hex == TRACE_ID
        assert root.attributes["tracewire.remote_parent_span_id"] == "1234567890123456"
    else:
        assert trace_hex not in (TRACE_ID, "0" * 32) and len(trace_hex) == 32
        assert "tracewire.remote_parent_span_id" not in root.attributes
    assert root.attributes.get("tracewire.tracestate") == case.tracestate
    assert root.parent_id is None


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_asgi(sink: MemorySink, case: Case) -> None:
    headers = [(name.lower().encode(), value.encode()) for name, value in case.headers]
    sent = raw_call(TracingMiddleware(hello), http_scope("/", headers), [{"type": "http.request"}])
    trace = only_trace(sink)
    assert dict(sent[0]["headers"])[b"x-trace-id"] == trace.info.trace_id.encode()
    check(trace, case)


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_wsgi(sink: MemorySink, case: Case) -> None:
    response = Client(TracingWSGIMiddleware(wsgi_hello)).get("/", headers=case.headers, buffered=True)
    trace = only_trace(sink)
    assert response.headers["X-Trace-Id"] == trace.info.trace_id
    check(trace, case)


def raw_get(port: int, path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.e2e
def test_uvicorn(tmp_path: Path) -> None:
    """Every case over real HTTP to a real uvicorn (h11): header names in any case, repeated
    headers, OWS as the client sent it."""
    from tests.e2e.servers import Server, free_port, read_traces, tracing_env

    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.middleware.routed_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--http", "h11"]
    server = Server(argv, tracing_env(traces_file), port)

    try:
        server.wait_ready("/v2/health")
        for case in CASES:  # raw bytes: HTTP clients refuse to send some of the suite's headers
            headers = [*case.headers, ("X-Request-ID", case.id)]
            assert raw_get(port, "/v2/health", headers).startswith(b"HTTP/1.1 200 "), case.id
        assert server.stop() in (0, -15), server.log()
    finally:
        server.close()
    traces = {t.info.client_request_id: t for t in read_traces(traces_file)}
    for case in CASES:
        check(traces[case.id], case)
