"""``TracingMiddleware``: pure ASGI middleware opening a root span per HTTP request.

    app.add_middleware(TracingMiddleware)

``http`` scopes are traced; ``websocket`` scopes pass through untouched; ``lifespan`` passes
through and flushes the export pipeline once the app's own shutdown is complete.  The request
body is teed from ``receive`` as the app reads it, the response from ``send`` as it goes out, so
streams are neither buffered nor delayed and the span ends after the last body message (or when
the app returns, whichever is later: background tasks are part of the request's trace).  Under
another tracing middleware (a mounted sub-app with its own), the request joins the outer trace
as a child span.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import tracewire
from middleware import _request
from middleware._exchange import RequestTrace
from middleware._types import ASGIApp, Message, Receive, Scope, Send
from tracewire.instrumentation import RECORDER, activate, deactivate

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

    from middleware._request import MiddlewareSettings

logger = logging.getLogger("middleware")
# Messages after which no more of the response is sent.
_FILE_SENDS = frozenset({"http.response.pathsend", "http.response.zerocopysend"})


class TracingMiddleware:
    """Trace every HTTP request of an ASGI app (FastAPI, Starlette, ...).

    Keyword arguments are the tracewire settings (``enabled``, ``destination``,
    ``capture_bodies``, ``exclude_paths``, header names, ...) and win over env vars; those that
    concern the whole process (``enabled``, ``destination``, ``sample_rate``, ...) are applied
    with ``tracewire.configure`` once, here.  A bad argument raises ``ValueError``.
    """

    def __init__(self, app: ASGIApp, /, **settings: Unpack[MiddlewareSettings]) -> None:
        self.app = app
        self._cfg = _request.resolve(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if RECORDER.enabled and scope["type"] == "http":
            await self._traced(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, _flushing_send(send))
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def stats() -> dict[str, int]:
        """Process-wide middleware counters, e.g. ``rejected_headers``."""
        return _request.stats()

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self._cfg
        path: str = scope.get("path") or "/"
        if cfg.exclude is not None and cfg.exclude(path):
            await self.app(scope, receive, send)
            return
        wanted = cfg.asgi_headers
        headers: dict[str, list[bytes]] = {}
        for key, value in scope.get("headers") or ():
            name = wanted.get(key)
            if name is not None:
                headers.setdefault(name, []).append(value)
        method: str = scope.get("method") or "GET"
        exchange = RequestTrace.begin(cfg, method, path, headers)
        if exchange is None:
            await self.app(scope, receive, send)
            return
        responder = _Responder(exchange, receive, send)
        entry_root = scope.get("root_path") or ""
        token = activate(exchange.span)
        try:
            await self.app(scope, responder.receive, responder.send)
        except BaseException as exc:
            exchange.finish(_route_template(scope, entry_root), exc, _query(scope))
            raise
        finally:
            deactivate(token)
        exchange.finish(_route_template(scope, entry_root), None, _query(scope))


class _Responder:
    """Per-request ``receive``/``send`` wrappers reporting to the request's ``RequestTrace``."""

    __slots__ = ("exchange", "trace_header", "trailers", "upstream_receive", "upstream_send")

    def __init__(self, exchange: RequestTrace, receive: Receive, send: Send) -> None:
        self.exchange = exchange
        self.upstream_receive = receive
        self.upstream_send = send
        # Nested (under an outer middleware, or served inside a span) the header names the
        # trace the request joined; it is added once, by whichever middleware sees it missing.
        self.trace_header = (
            exchange.cfg.trace_id_header.encode("latin-1"), exchange.trace_id.encode("ascii")
        )
        self.trailers = False

    async def receive(self) -> Message:
        message = await self.upstream_receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                self.exchange.request_chunk(message.get("body") or b"")
            elif kind == "http.disconnect":
                self.exchange.client_disconnected()
        except Exception:
            logger.exception("tracewire: could not record a request message")
        return message

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        try:
            kind = message["type"]
            if kind == "http.response.body":
                exchange.response_chunk(message.get("body") or b"")
                if not message.get("more_body", False) and not self.trailers:
                    exchange.response_ended()
            elif kind == "http.response.start":
                headers = list(message.get("headers") or ())
                content_type = ""
                header_name = self.trace_header[0].lower()
                has_header = False
                for key, value in headers:
                    name = bytes(key).lower()
                    if name == b"content-type":
                        content_type = bytes(value).decode("latin-1")
                    elif name == header_name:
                        has_header = True
                exchange.response_started(int(message["status"]), content_type)
                self.trailers = bool(message.get("trailers", False))
                if not has_header:
                    headers.append(self.trace_header)
                    message = {**message, "headers": headers}
            elif kind == "http.response.trailers":
                if not message.get("more_trailers", False):
                    exchange.response_ended()
            elif kind in _FILE_SENDS:
                exchange.response_ended()
        except Exception:
            logger.exception("tracewire: could not record a response message")
        try:
            await self.upstream_send(message)
        except BaseException as exc:
            if _request.is_disconnect(exc):
                exchange.client_disconnected()
            raise


def _route_template(scope: Scope, entry_root: Any = "") -> str | None:
    """The matched route's template under the path the app is mounted at (``root_path``, the
    mounts' prefixes): ``/api/v2/users/{user_id}``, as OpenTelemetry records ``http.route``.
    A mounted app that does no routing of its own (``root_path`` grew, no route):
    ``<mount>/{path}``."""
    try:
        route = scope.get("route")
        mounted = scope.get("root_path") or ""
        if not isinstance(mounted, str):
            mounted = ""
        if route is None:
            grew = isinstance(entry_root, str) and len(mounted) > len(entry_root)
            return mounted + "/{path}" if grew and mounted.startswith(entry_root) else None
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(template, str):
            return None
        if hasattr(route, "routes"):
            # A Mount whose app routed nothing further: root_path already holds the mount's path.
            return mounted + "/{path}"
        return mounted + template
    except Exception:
        logger.debug("tracewire: no route template", exc_info=True)
        return None


def _query(scope: Scope) -> str:
    """The query string, whatever type a (non-conforming) server put in the scope."""
    raw: Any = scope.get("query_string") or b""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray, memoryview)):  # bytes(12345) is 12345 NULs
        return ""
    try:
        return bytes(raw).decode("latin-1")
    except Exception:
        return ""


def _flushing_send(send: Send) -> Send:
    async def send_then_flush(message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await _flush()
        await send(message)

    return send_then_flush


async def _flush() -> None:
    """Flush traces of the requests served so far, off the event loop thread."""
    if not tracewire.stats()["accepted"]:
        return
    timeout = RECORDER.settings.shutdown_timeout
    try:
        try:
            import anyio.to_thread
        except ImportError:
            tracewire.flush(timeout)
            return
        await anyio.to_thread.run_sync(tracewire.flush, timeout)
    except Exception:
        logger.exception("tracewire: flush at lifespan shutdown failed")
