"""The Flask example under a real gunicorn (2 workers, --preload), driven with concurrent requests.

The traces are read back after SIGTERM: each worker flushes its own export pipeline when it exits
(tracewire's atexit hook; gunicorn workers leave through ``sys.exit``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import (
    assert_one_complete_trace_each,
    drive,
    free_port,
    gunicorn_argv,
    read_traces,
    running,
    tracing_env,
)

pytestmark = pytest.mark.e2e


def test_every_request_has_one_complete_trace_flushed_at_sigterm(tmp_path: Path) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    # A batch interval longer than the test: only the workers' exit flush can write the traces.
    env = tracing_env(traces_file, TRACING_BATCH_INTERVAL="600", TRACING_BATCH_SIZE="10000")
    with running(gunicorn_argv("examples.flask_app.app:app", port), env, port) as server:
        sent = asyncio.run(drive(server.base_url, n=50))
        assert read_traces(traces_file) == []
        assert server.stop() == 0, server.log()
    traces = read_traces(traces_file)
    assert_one_complete_trace_each(traces, sent)
    for trace in traces:
        root = trace.root_span
        assert root is not None and root.name in ("POST /chat", "POST /chat/stream")


def test_route_template_and_errors_under_gunicorn(tmp_path: Path) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    with running(gunicorn_argv("examples.flask_app.app:app", port), tracing_env(traces_file), port) as server:
        found = httpx.get(server.base_url + "/documents/doc-1", headers={"X-Request-ID": "found"})
        missing = httpx.get(server.base_url + "/documents/nope", headers={"X-Request-ID": "missing"})
        # gunicorn itself refuses control characters; too long and non-UTF-8 values reach the app.
        invalid = httpx.post(server.base_url + "/chat", content=b"{not json",
                             headers={"X-Request-ID": "invalid", "Content-Type": "application/json",
                                      "X-Session-ID": "s" * 300, "X-User-ID": b"\xff\xfeuser"})
        assert (found.status_code, missing.status_code, invalid.status_code) == (200, 404, 422)
        assert server.stop() == 0, server.log()
    traces = {t.info.client_request_id: t for t in read_traces(traces_file)}
    assert set(traces) == {"found", "missing", "invalid"}
    for request_id in ("found", "missing"):
        root = traces[request_id].root_span
        assert root is not None and root.name == "GET /documents/<doc_id>"
    invalid_trace = traces["invalid"]
    assert invalid_trace.info.state == "OK"
    assert invalid_trace.info.trace_metadata["tracewire.rejected_headers"] == "x-session-id,x-user-id"
    assert invalid_trace.info.session_id is None and invalid_trace.info.user_id is None
    assert invalid_trace.root_span is not None
    assert invalid_trace.root_span.attributes["http.status_code"] == 422
