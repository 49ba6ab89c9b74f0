"""SSE streaming through real servers: the request span covers the whole stream, holds the joined
chunks, and a client that hangs up mid-stream ends it with a mark."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import free_port, gunicorn_argv, read_traces, running, tracing_env, uvicorn_argv

pytestmark = pytest.mark.e2e

SERVERS = {
    "fastapi-uvicorn": lambda port: uvicorn_argv("examples.fastapi_app.app:app", port),
    "flask-gunicorn": lambda port: gunicorn_argv("examples.flask_app.app:app", port),
}
DELAY_MS = 40


@pytest.mark.parametrize("server_kind", list(SERVERS), ids=list(SERVERS))
def test_root_span_covers_the_stream(tmp_path: Path, server_kind: str) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    arrivals: list[float] = []
    with running(SERVERS[server_kind](port), tracing_env(traces_file), port) as server:
        start = time.monotonic()
        with httpx.stream("POST", server.base_url + "/chat/stream", timeout=30,
                          json={"question": "how do streamed responses work?", "token_delay_ms": DELAY_MS},
                          headers={"X-Request-ID": "stream-1"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            trace_id = response.headers["X-Trace-Id"]
            received = []
            for chunk in response.iter_text():
                arrivals.append(time.monotonic() - start)
                received.append(chunk)
        server.stop()
    body = "".join(received)
    assert body.endswith("event: done\ndata: {}\n\n")
    assert arrivals[-1] - arrivals[0] >= 0.3  # it really streamed, chunk by chunk
    [trace] = read_traces(traces_file)
    assert trace.info.trace_id == trace_id
    root = trace.root_span
    assert root is not None and root.duration_ms is not None
    tokens = body.count('data: {"delta"')
    assert root.duration_ms >= tokens * DELAY_MS * 0.9
    assert root.duration_ms >= (arrivals[-1] - arrivals[0]) * 1000 * 0.9
    assert root.outputs == body
    assert root.attributes["tracewire.ttfb_ms"] >= DELAY_MS * 0.9
    assert root.attributes["tracewire.response_sent_ms"] >= tokens * DELAY_MS * 0.9
    [llm] = [s for s in trace.data.spans if s.name == "llm.generate"]
    assert llm.parent_id == root.span_id
    deltas = [json.loads(event[len("data: "):])["delta"] for event in body.split("\n\n")
              if event.startswith('data: {"delta"')]
    assert "".join(deltas) == llm.outputs
    assert trace.info.response_preview == llm.outputs
    assert "tracewire.client_disconnected" not in root.attributes


@pytest.mark.parametrize("server_kind", list(SERVERS), ids=list(SERVERS))
def test_client_disconnect_mid_stream(tmp_path: Path, server_kind: str) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    with running(SERVERS[server_kind](port), tracing_env(traces_file), port) as server:
        with httpx.Client(timeout=30) as client, client.stream(
            "POST", server.base_url + "/chat/stream", headers={"X-Request-ID": "gone"},
            json={"question": "how do streamed responses work?", "token_delay_ms": 150},
        ) as response:
            events = response.iter_text()
            first = next(events)
            assert first.startswith("data:")
        # The connection is closed; the trace is exported once the server noticed (bounded poll).
        deadline = time.monotonic() + 10
        while not read_traces(traces_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
    [trace] = read_traces(traces_file)
    root = trace.root_span
    assert root is not None
    assert root.attributes["tracewire.client_disconnected"] is True
    assert trace.info.state == "OK"
    assert "event: done" not in root.outputs

