"""Start and stop real servers (uvicorn, gunicorn) on free ports for the end-to-end tests.

Readiness is polled over HTTP (never a fixed sleep); stopping sends SIGTERM and waits, so the
servers' own graceful shutdown paths (ASGI lifespan, gunicorn worker exit) are what is tested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

import tracewire

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server subprocess; ``stop()`` sends SIGTERM and returns the exit code."""

    def __init__(self, argv: list[str], env: Mapping[str, str], port: int) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="tracewire-e2e-", suffix=".log", delete=False)
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
        self.process = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
        return self.process.returncode

    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()
        os.unlink(self._log.name)


DEPLOYMENT = {"APP_VERSION": "9.9.9", "DEPLOYMENT_ID": "dep-e2e", "REGION": "test-1",
              "APP_ENVIRONMENT": "staging"}


def tracing_env(traces: Path, **extra: str) -> dict[str, str]:
    return {"ENABLE_TRACING": "true", "TRACING_DESTINATION": f"jsonl:{traces}", **DEPLOYMENT, **extra}


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]


def gunicorn_argv(app: str, port: int, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "--preload", "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "20", "--log-level", "warning", app]


@contextlib.contextmanager
def running(argv: list[str], env: Mapping[str, str], port: int) -> Iterator[Server]:
    server = Server(argv, env, port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def read_traces(path: Path) -> list[tracewire.Trace]:
    if not path.exists():
        return []
    return [tracewire.Trace.from_json(line) for line in path.read_bytes().splitlines() if line.strip()]


async def drive(base_url: str, n: int = 50, stream_every: int = 5) -> dict[str, dict[str, str]]:
    """``n`` concurrent chat requests (every ``stream_every``-th one streamed) plus health checks.

    Returns, per X-Request-ID, what a trace must show: session, user, trace id, path.
    """
    import asyncio

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, dict[str, str]]:
        request_id = f"e2e-req-{i:03d}"
        path = "/chat/stream" if i % stream_every == 0 else "/chat"
        headers = {"X-Request-ID": request_id, "X-Session-ID": f"session-{i % 7}",
                   "X-User-ID": f"user-{i % 3}"}
        response = await client.post(path, json={"question": f"how do headers reach traces? #{i}"},
                                     headers=headers)
        assert response.status_code == 200, response.text
        if path == "/chat/stream":
            assert response.text.endswith("event: done\ndata: {}\n\n")
        return request_id, {"session": headers["X-Session-ID"], "user": headers["X-User-ID"],
                            "trace_id": response.headers["X-Trace-Id"], "path": path}

    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        results = await asyncio.gather(*(one(client, i) for i in range(n)))
        for _ in range(3):
            health = await client.get("/health")
            assert health.status_code == 200 and "X-Trace-Id" not in health.headers
    return dict(results)


def assert_one_complete_trace_each(traces: list[tracewire.Trace], sent: dict[str, dict[str, str]]) -> None:
    by_request: dict[str, list[tracewire.Trace]] = {}
    for trace in traces:
        by_request.setdefault(str(trace.info.client_request_id), []).append(trace)
    assert set(by_request) == set(sent), sorted(set(by_request) ^ set(sent))
    for request_id, expected in sent.items():
        [trace] = by_request[request_id]
        info = trace.info
        assert info.trace_id == expected["trace_id"]
        assert info.session_id == expected["session"]
        assert info.user_id == expected["user"]
        assert info.state == "OK"
        for key, env in (("app_version", "APP_VERSION"), ("deployment_id", "DEPLOYMENT_ID"),
                         ("region", "REGION"), ("environment", "APP_ENVIRONMENT")):
            assert info.trace_metadata[key] == DEPLOYMENT[env]
        root = trace.root_span
        assert root is not None and root.attributes["http.status_code"] == 200
        assert root.attributes["http.path"] == expected["path"]
        names = sorted(span.name for span in trace.data.spans)
        assert names == sorted([f"POST {expected['path']}", "retrieve", "rerank", "llm.generate"]), names
        for span in trace.data.spans:
            assert span.end_time_ns is not None
            assert span is root or span.parent_id == root.span_id
        assert info.token_usage is not None and info.token_usage["total_tokens"] > 0
