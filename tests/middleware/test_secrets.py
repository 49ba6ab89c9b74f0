"""No secret in an exported trace: every capture path x ASGI (httpx, raw ASGI) and WSGI (werkzeug).

Each case asserts on the serialized trace exactly as a sink receives it (``record.payload``): the
secret occurs nowhere, and a non-secret value sent alongside it does (so the body was captured).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from werkzeug.test import Client

import tracewire
from sinks import MemorySink
from tests.secrets_apps import SECRET, VISIBLE, asgi_app, wsgi_app

S, V = SECRET, VISIBLE
OVER_CAP = 300_000  # above the default 256 KB TRACING_MAX_VALUE_BYTES
BOUNDARY = "tw-b0undary-91"


def multipart(*parts: tuple[str, str | bytes, dict[str, str]]) -> bytes:
    """A multipart/form-data body; each part is (Content-Disposition params, value, headers)."""
    out = b""
    for disposition, value, headers in parts:
        out += f"--{BOUNDARY}\r\nContent-Disposition: form-data; {disposition}\r\n".encode()
        for key, header in headers.items():
            out += f"{key}: {header}\r\n".encode()
        out += b"\r\n" + (value.encode() if isinstance(value, str) else value) + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@dataclasses.dataclass
class Case:
    id: str
    url: str
    body: bytes = b""
    content_type: str = "application/json"

    @property
    def method(self) -> str:
        return "POST" if self.body or not self.url.startswith("/query") else "GET"


CASES = [
    Case("json", "/echo", f'{{"note": "{V}", "password": "{S}", "nested": {{"items": [{{"access_token": '
                          f'"{S}"}}]}}, "token_delay_ms": 5}}'.encode()),
    Case("json-plurals", "/echo", f'{{"note": "{V}", "secrets": ["{S}"], "passwords": {{"a": "{S}"}}, '
                                  f'"api_keys": ["{S}", "{S}"], "Cookie": "{S}"}}'.encode()),
    Case("json-escaped-key", "/echo", f'{{"note": "{V}", "pass\\u0077ord": "{S}"}}'.encode()),
    Case("json-untyped", "/echo", f'{{"note": "{V}", "privateKey": "{S}"}}'.encode(), ""),
    Case("json-as-text-plain", "/echo", f'{{"note": "{V}", "password": "{S}"}}'.encode(),
         "text/plain;charset=UTF-8"),
    Case("json-trailing-comma", "/echo", f'{{"note": "{V}", "password": "{S}",}}'.encode()),
    Case("json-too-deep", "/echo",
         b"[" * 1100 + f'{{"note": "{V}", "api_key": ["{S}"]}}'.encode() + b"]" * 1100),
    Case("urlencoded", "/echo", f"note={V}&password={S}&api%5Fkey={S}".encode(),
         "application/x-www-form-urlencoded"),
    Case("multipart", "/echo", multipart(
        ('name="note"', V, {}), ('name="password"', S, {}), ("name*=utf-8''pass%77ord", S, {}),
        ('name="meta"', f'{{"api_key": "{S}", "v": "{V}"}}', {"Content-Type": "application/json"}),
        ('name="upload"; filename="key.txt"', S, {"Content-Type": "text/plain"}),
    ), MULTIPART),
    Case("capped-json", "/echo", (f'{{"note": "{V}", "pass\\u0077ord": "{S}", "api_key": ["a", "{S}"], '
                                  f'"auth": {{"token": "{S}"}}, "blob": "' + "x" * OVER_CAP + '"}').encode()),
    Case("capped-json-as-text", "/echo", (f'{{"note": "{V}", "secrets": ["{S}"], "blob": "'
                                          + "x" * OVER_CAP + '"}').encode(), "text/plain"),
    Case("capped-form", "/echo", f"note={V}&password={S}&blob={'x' * OVER_CAP}".encode(),
         "application/x-www-form-urlencoded"),
    Case("capped-multipart", "/echo", multipart(
        ('name="note"', V, {}), ('name="password"', S, {}), ('name="blob"', "x" * OVER_CAP, {}),
    ), MULTIPART),
    Case("query", f"/query?note={V}&api_key={S}&access_token={S}"),
    Case("function-inputs", "/login", f'{{"username": "{V}", "password": "{S}"}}'.encode()),
    Case("set-inputs-outputs-metadata-tags", "/manual", b"{}"),
]


def _asgi_httpx(case: Case) -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=asgi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers = {"content-type": case.content_type} if case.content_type else {}
            response = await client.request(case.method, case.url, content=case.body or None,
                                            headers=headers)
            assert response.status_code == 200

    asyncio.run(go())


def _asgi_raw(case: Case) -> None:
    url = urlsplit(case.url)
    headers = [(b"content-type", case.content_type.encode())] if case.content_type else []
    half = len(case.body) // 2  # the body arrives in two messages
    incoming = [{"type": "http.request", "body": case.body[:half], "more_body": True},
                {"type": "http.request", "body": case.body[half:], "more_body": False}]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": case.method,
        "scheme": "http", "path": url.path, "raw_path": url.path.encode(), "root_path": "",
        "query_string": url.query.encode(), "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asgi_app(scope, receive, send)

    asyncio.run(go())
    assert sent[0]["status"] == 200


def _wsgi(case: Case) -> None:
    url = urlsplit(case.url)
    kwargs: dict[str, Any] = {"method": case.method, "query_string": url.query}
    if case.body:
        kwargs["data"] = case.body
        kwargs["content_type"] = case.content_type
    response = Client(wsgi_app).open(url.path, **kwargs)
    assert response.status_code == 200
    response.close()


DRIVERS = {"asgi-httpx": _asgi_httpx, "asgi-raw": _asgi_raw, "wsgi-werkzeug": _wsgi}


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_secret_in_the_exported_trace(sink: MemorySink, case: Case, driver: str) -> None:
    DRIVERS[driver](case)
    assert tracewire.flush(timeout=10)
    [record] = sink.records
    assert SECRET.encode() not in record.payload
    assert VISIBLE.encode() in record.payload  # what was sent was captured, minus the secrets
    assert b"[REDACTED]" in record.payload


def test_what_is_redacted_where(sink: MemorySink) -> None:
    """The shape of the redacted trace: names replaced, everything else (token counts too) kept."""
    for case in ("json", "multipart", "function-inputs", "set-inputs-outputs-metadata-tags"):
        _asgi_httpx(next(c for c in CASES if c.id == case))
    assert tracewire.flush(timeout=10)
    traces = {t.root_span.name: t for t in sink.traces if t.root_span is not None}
    assert len(traces) == 3  # two /echo requests share a name
    echoes = [t for t in sink.traces if t.root_span is not None and t.root_span.name == "POST /echo"]
    json_root, multipart_root = (t.root_span for t in echoes)
    assert json_root is not None and multipart_root is not None
    assert json_root.inputs == {"note": V, "password": "[REDACTED]",
                                "nested": {"items": [{"access_token": "[REDACTED]"}]}, "token_delay_ms": 5}
    assert multipart_root.inputs == {  # the RFC 2231 name* is a second "password": one value
        "note": V, "password": "[REDACTED]",
        "meta": {"api_key": "[REDACTED]", "v": V},
        "upload": {"filename": "key.txt", "content_type": "text/plain", "size": len(S)},
    }
    login = {s.name: s for s in traces["POST /login"].data.spans}["login"]
    assert login.inputs == {"username": V, "password": "[REDACTED]"}
    assert login.outputs == {"user": V, "session_token": "[REDACTED]", "note": V}
    manual_trace = traces["POST /manual"]
    manual = {s.name: s for s in manual_trace.data.spans}["manual"]
    assert manual.inputs == {"client_secret": "[REDACTED]", "query": V, "nested": [{"apiKey": "[REDACTED]"}]}
    assert manual.outputs == {"refresh_token": "[REDACTED]", "answer": V, "max_tokens": 7}
    metadata, tags = manual_trace.info.trace_metadata, manual_trace.info.tags
    assert metadata["api_key"] == "[REDACTED]" and metadata["keep"] == V
    assert "[REDACTED]" in metadata["config"] and V in metadata["config"]
    assert tags["session_token"] == "[REDACTED]" and tags["team"] == V


def test_capped_body_preview_is_redacted_before_it_is_cut(sink: MemorySink) -> None:
    case = next(c for c in CASES if c.id == "capped-json")
    _wsgi(case)
    root = tracewire.flush(timeout=10) and sink.traces[0].root_span
    assert root
    marker = root.inputs
    assert marker["tracewire.truncated"] is True and marker["original_size"] == len(case.body)
    assert marker["preview"].startswith(f'{{"note": "{V}", "pass\\u0077ord": "[REDACTED]", '
                                        f'"api_key": "[REDACTED]", "auth": {{"token": "[REDACTED]"}}, '
                                        f'"blob": "xxx')
    assert len(marker["preview"]) == 1000
