"""Apps that receive, pass around and return secrets in every way a trace could capture them.

Used in-process by tests/middleware/test_secrets.py and under real uvicorn / gunicorn by
tests/e2e/test_secrets_servers.py (``tests.secrets_apps:asgi_app`` / ``tests.secrets_apps:wsgi_app``).
Every secret value contains ``SECRET``; every value that must stay contains ``VISIBLE``.
"""

from __future__ import annotations

import json
from typing import Any

import tracewire
from middleware import TracingMiddleware, TracingWSGIMiddleware

SECRET = "zq9-SECRET-4ab"
VISIBLE = "VISIBLE-7c1"


@tracewire.trace
def login(username: str, password: str) -> dict[str, Any]:
    return {"user": username, "session_token": SECRET, "note": VISIBLE}


def manual_spans() -> None:
    """set_inputs/set_outputs on a span, metadata and tags of the trace."""
    with tracewire.start_span("manual") as span:
        span.set_inputs({"client_secret": SECRET, "query": VISIBLE, "nested": [{"apiKey": SECRET}]})
        span.set_outputs({"refresh_token": SECRET, "answer": VISIBLE, "max_tokens": 7})
    tracewire.update_current_trace(
        metadata={"api_key": SECRET, "config": {"password": SECRET, "model": VISIBLE}, "keep": VISIBLE},
        tags={"session_token": SECRET, "team": VISIBLE},
    )


def _login_from(body: bytes) -> None:
    data = json.loads(body)
    login(data["username"], data["password"])


# -- ASGI (Starlette; the request body read raw, so no form parser is needed) ----------------------

def _build_asgi() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, media_type=request.headers.get("content-type") or "text/plain")

    async def query(request: Request) -> Response:
        return JSONResponse({"ok": VISIBLE})

    async def login_route(request: Request) -> Response:
        _login_from(await request.body())
        return JSONResponse({"ok": VISIBLE})

    async def manual(request: Request) -> Response:
        manual_spans()
        return JSONResponse({"ok": VISIBLE})

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[
        Route("/echo", echo, methods=["POST"]), Route("/query", query),
        Route("/login", login_route, methods=["POST"]), Route("/manual", manual, methods=["POST"]),
        Route("/health", health),
    ])
    return TracingMiddleware(app, exclude_paths=[r"^/health$"])


# -- WSGI (Flask) ----------------------------------------------------------------------------------

def _build_wsgi() -> Any:
    from flask import Flask, Response, request

    app = Flask(__name__)

    @app.post("/echo")
    def echo() -> Response:
        return Response(request.get_data(), content_type=request.content_type or "text/plain")

    @app.get("/query")
    def query() -> Any:
        return {"ok": VISIBLE}

    @app.post("/login")
    def login_route() -> Any:
        _login_from(request.get_data())
        return {"ok": VISIBLE}

    @app.post("/manual")
    def manual() -> Any:
        manual_spans()
        return {"ok": VISIBLE}

    @app.get("/health")
    def health() -> str:
        return "ok"

    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app, exclude_paths=[r"^/health$"])  # type: ignore[method-assign]
    return app


asgi_app = _build_asgi()
wsgi_app = _build_wsgi()
