"""No secret in the exported traces of real servers: uvicorn (ASGI) and gunicorn (WSGI).

The requests of the in-process matrix (tests/middleware/test_secrets.py) that depend most on the
server's body handling — multipart forms and bodies over the value cap, plus the others since
they are cheap — go over real sockets; the JSONL file the sink wrote is searched byte by byte.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.servers import free_port, gunicorn_argv, running, tracing_env, uvicorn_argv
from tests.middleware.test_secrets import CASES
from tests.secrets_apps import SECRET, VISIBLE

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_no_secret_reaches_the_exported_file(tmp_path: Path, server: str) -> None:
    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    argv = (uvicorn_argv("tests.secrets_apps:asgi_app", port) if server == "uvicorn"
            else gunicorn_argv("tests.secrets_apps:wsgi_app", port))
    with running(argv, tracing_env(traces_file), port) as running_server, \
            httpx.Client(base_url=running_server.base_url, timeout=30) as client:
        for case in CASES:
            headers = {"content-type": case.content_type} if case.content_type else {}
            headers["x-request-id"] = case.id
            response = client.request(case.method, case.url, content=case.body or None, headers=headers)
            assert response.status_code == 200, (case.id, response.text)
        assert running_server.stop() in (0, -15), running_server.log()  # uvicorn re-raises SIGTERM
    lines = traces_file.read_bytes().splitlines()
    by_case = {case.id: [line for line in lines if f'"{case.id}"'.encode() in line] for case in CASES}
    for case_id, found in by_case.items():
        assert len(found) == 1, case_id
        assert SECRET.encode() not in found[0], case_id
        assert VISIBLE.encode() in found[0], case_id
    for case_id in ("multipart", "capped-json", "capped-multipart"):
        assert b"[REDACTED]" in by_case[case_id][0]
    assert b"tracewire.truncated" in by_case["capped-multipart"][0]
