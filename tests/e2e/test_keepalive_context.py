"""A connection's later requests get traces of their own, whatever the earlier ones left behind.

uvicorn resumes reading a paused socket (flow control on a large request body) from inside the
app's ``receive``; asyncio then runs the socket's callbacks — and creates the next request's
task — in a copy of that request's context, current span included.  The next request on the
keep-alive connection must still start its own trace, not join (or be lost in) the last one.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import free_port, running, tracing_env, uvicorn_argv

pytestmark = pytest.mark.e2e


def test_requests_after_a_large_body_on_one_connection_are_traced_alone(tmp_path: Path) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    big = json.dumps({"note": "big", "blob": "x" * 600_000}).encode()
    small = json.dumps({"note": "small"}).encode()
    argv = uvicorn_argv("tests.secrets_apps:asgi_app", port)
    with running(argv, tracing_env(traces_file), port) as server, \
            httpx.Client(base_url=server.base_url, timeout=30) as client:
        ids = []
        for n, body in enumerate([big, small, big, small, small]):
            response = client.post("/echo", content=body, headers={"content-type": "application/json",
                                                                    "x-request-id": f"r{n}"})
            assert response.status_code == 200
            ids.append(response.headers.get("x-trace-id"))
        assert server.stop() in (0, -15), server.log()
    assert all(ids) and len(set(ids)) == 5, ids
    rows = [json.loads(line) for line in traces_file.read_text().splitlines()]
    assert sorted(row["info"]["client_request_id"] for row in rows) == [f"r{n}" for n in range(5)]
    assert all(len(row["data"]["spans"]) >= 1 for row in rows)
