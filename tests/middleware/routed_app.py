"""The app of the ``http.route`` tests: FastAPI with a mounted FastAPI sub-app, nested Starlette
mounts and a raw mounted ASGI app.  ``app`` (traced) is what the uvicorn test serves."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from middleware import TracingMiddleware


def _thing(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["thing"])


def routed_app() -> FastAPI:
    app = FastAPI()
    v2 = FastAPI()

    @v2.get("/users/{user_id}")
    async def user(user_id: str) -> str:
        return user_id

    @v2.get("/health")
    async def health() -> str:
        return "ok"

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("raw")(scope, receive, send)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> int:
        return item_id

    app.mount("/v2", v2)
    app.router.routes.append(Mount("/nested", routes=[Mount("/deeper", routes=[
        Route("/things/{thing}", _thing)])]))
    app.mount("/raw", raw)
    return app


app = TracingMiddleware(routed_app())
