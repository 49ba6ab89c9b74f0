"""The FastAPI example under a real uvicorn process, driven over HTTP with concurrent requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.e2e.servers import (
    assert_one_complete_trace_each,
    drive,
    free_port,
    read_traces,
    running,
    tracing_env,
    uvicorn_argv,
)

pytestmark = pytest.mark.e2e


def test_every_request_has_one_complete_trace_flushed_at_sigterm(tmp_path: Path) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    # A batch interval longer than the test: only the shutdown flush can have written the traces.
    env = tracing_env(traces_file, TRACING_BATCH_INTERVAL="600", TRACING_BATCH_SIZE="10000")
    with running(uvicorn_argv("examples.fastapi_app.app:app", port), env, port) as server:
        sent = asyncio.run(drive(server.base_url, n=50))
        assert read_traces(traces_file) == []
        assert server.stop() in (0, -15), server.log()  # uvicorn re-raises SIGTERM after shutdown
    assert_one_complete_trace_each(read_traces(traces_file), sent)


def test_sync_endpoint_and_404_under_uvicorn(tmp_path: Path) -> None:
    import httpx

    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    argv = uvicorn_argv("examples.fastapi_app.app:app", port)
    with running(argv, tracing_env(traces_file), port) as server:
        found = httpx.get(server.base_url + "/documents/doc-2", headers={"X-Request-ID": "found"})
        missing = httpx.get(server.base_url + "/documents/nope", headers={"X-Request-ID": "missing"})
        assert (found.status_code, missing.status_code) == (200, 404)
        assert server.stop() in (0, -15), server.log()  # uvicorn re-raises SIGTERM after shutdown
    traces = {t.info.client_request_id: t for t in read_traces(traces_file)}
    assert set(traces) == {"found", "missing"}
    for request_id, status in (("found", 200), ("missing", 404)):
        trace = traces[request_id]
        root = trace.root_span
        assert root is not None
        assert root.name == "GET /documents/{doc_id}"
        assert root.attributes["http.status_code"] == status
        assert trace.info.state == "OK"
        [lookup] = [s for s in trace.data.spans if s.name == "lookup"]
        assert lookup.parent_id == root.span_id  # a sync endpoint: anyio worker thread


def test_demo_command_serves_traces_and_exits(tmp_path: Path) -> None:
    """The README's main-job command: ``python -m examples.fastapi_app --demo``."""
    import os
    import re
    import subprocess
    import sys

    from tests.e2e.servers import REPO

    traces_file = tmp_path / "traces.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), **tracing_env(traces_file)}
    done = subprocess.run(
        [sys.executable, "-m", "examples.fastapi_app", "--demo", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = list(dict.fromkeys(re.findall(r"tr-[0-9a-f]{32}", done.stdout)))  # show repeats one
    assert len(printed) == 4
    assert f"show {traces_file} {printed[-1]}" in done.stdout  # the CLI reads the JSONL file
    assert f"traces are in the JSON-lines file {traces_file}" in done.stdout
    traces = read_traces(traces_file)
    assert sorted(t.info.trace_id for t in traces) == sorted(printed)
    assert {t.info.session_id for t in traces} == {"demo-session"}
