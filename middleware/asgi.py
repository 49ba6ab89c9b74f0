"""``TracingMiddleware``: pure ASGI middleware opening a root span per HTTP request.

    app.add_middleware(TracingMiddleware)

``http`` scopes are traced; ``websocket`` scopes pass through untouched; ``lifespan`` passes
through and flushes the export pipeline once the app's own shutdown is complete.  The request
body is teed from ``receive`` as the app reads it, the response from ``send`` as it goes out, so
streams are neither buffered nor delayed and the span ends after the last body message (or when
the app returns, whichever is later: background tasks are part of the request's trace).
"""

from __future__ import annotations

import logging
from typing import Any

from middleware import _request
from middleware._body import BodyCapture
from middleware._types import ASGIApp, Message, Receive, Scope, Send
from tracewire import context as _context
from tracewire import runtime as _runtime

logger = logging.getLogger("middleware")
_STATE = _runtime.STATE
_current = _context.current_span
_now = _request.now_ns


class TracingMiddleware:
    """Trace every HTTP request of an ASGI app (FastAPI, Starlette, ...).

    Keyword arguments are the tracewire settings (``enabled``, ``destination``,
    ``capture_bodies``, ``exclude_paths``, header names, ...) and win over env vars; those that
    concern the whole process (``enabled``, ``destination``, ``sample_rate``, ...) are applied
    with ``tracewire.configure`` once, here.  A bad argument raises ``ValueError``.
    """

    def __init__(self, app: ASGIApp, /, **settings: Any) -> None:
        self.app = app
        self._cfg = _request.resolve(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _STATE.enabled and scope["type"] == "http":
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
        root = _request.begin(cfg, method, path, headers)
        if root is None:
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(root, cfg, receive, send, headers)
        root_path = scope.get("root_path", "")
        token = _current.set(root)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            exchange.finish(scope, root_path, method, exc)
            raise
        finally:
            _current.reset(token)
        exchange.finish(scope, root_path, method, None)


class _Exchange:
    """Per-request state: wraps ``receive`` and ``send`` and finishes the root span."""

    __slots__ = (
        "cfg", "complete", "disconnected", "end_ns", "first_byte_ns", "request_body", "request_type",
        "response_body", "response_type", "root", "status", "trace_header", "upstream_receive",
        "upstream_send",
    )

    def __init__(self, root: Any, cfg: _request.RequestConfig, receive: Receive, send: Send,
                 headers: dict[str, list[bytes]]) -> None:
        self.root = root
        self.cfg = cfg
        self.upstream_receive = receive
        self.upstream_send = send
        cap = root._live.max_value_bytes if root._live is not None else _request.value_cap()
        self.request_body = BodyCapture(cap) if cfg.capture_bodies else None
        self.response_body = BodyCapture(cap) if cfg.capture_bodies else None
        content_type = headers.get("content-type")
        self.request_type = content_type[0].decode("latin-1") if content_type else ""
        self.response_type = ""
        self.status: int | None = None
        self.first_byte_ns: int | None = None
        self.end_ns: int | None = None
        self.complete = False
        self.disconnected = False
        self.trace_header = (cfg.trace_id_header.encode("latin-1"),
                             root.trace_id.encode("ascii"))

    async def receive(self) -> Message:
        message = await self.upstream_receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                if self.request_body is not None:
                    self.request_body.add(message.get("body") or b"")
            elif kind == "http.disconnect" and not self.complete:
                self.disconnected = True
        except Exception:
            logger.exception("tracewire: could not record a request message")
        return message

    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
            if kind == "http.response.body":
                body = message.get("body") or b""
                if body:
                    if self.first_byte_ns is None:
                        self.first_byte_ns = _now()
                    if self.response_body is not None:
                        self.response_body.add(body)
                if not message.get("more_body", False):
                    self.complete = True
                    self.end_ns = _now()
            elif kind == "http.response.start":
                self.status = int(message["status"])
                headers = list(message.get("headers") or ())
                for key, value in headers:
                    if key.lower() == b"content-type":
                        self.response_type = value.decode("latin-1")
                headers.append(self.trace_header)
                message = {**message, "headers": headers}
            elif kind == "http.response.pathsend":
                self.complete = True
                self.end_ns = _now()
        except Exception:
            logger.exception("tracewire: could not record a response message")
        try:
            await self.upstream_send(message)
        except BaseException as exc:
            if _request.is_disconnect(exc):
                self.disconnected = True
            raise

    def finish(self, scope: Scope, root_path: str, method: str, exc: BaseException | None) -> None:
        _request.finish(
            self.root,
            self.cfg,
            method=method,
            route=_route_template(scope, root_path),
            status=self.status,
            exc=exc,
            request_body=self.request_body,
            request_type=self.request_type,
            response_body=self.response_body,
            response_type=self.response_type,
            query=_query(scope),
            first_byte_ns=self.first_byte_ns,
            response_end_ns=self.end_ns,
            disconnected=self.disconnected and not self.complete,
        )


def _route_template(scope: Scope, root_path: str) -> str | None:
    """The matched route's template, with the prefixes of the mounts it is under."""
    try:
        route = scope.get("route")
        if route is None:
            return None
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if not isinstance(template, str):
            return None
        mounted: str = scope.get("root_path", "")
        prefix = mounted[len(root_path):] if mounted.startswith(root_path) else ""
        if hasattr(route, "routes"):
            # A Mount whose app routed nothing further: root_path already holds the mount's path.
            return prefix + "/{path}"
        return prefix + template
    except Exception:
        logger.debug("tracewire: no route template", exc_info=True)
        return None


def _query(scope: Scope) -> str:
    raw = scope.get("query_string") or b""
    return raw.decode("latin-1") if raw else ""


def _flushing_send(send: Send) -> Send:
    async def send_then_flush(message: Message) -> None:
        if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await _flush()
        await send(message)

    return send_then_flush


async def _flush() -> None:
    """Flush traces of the requests served so far, off the event loop thread."""
    if _runtime.pipeline(create=False) is None:
        return
    timeout = _STATE.settings.shutdown_timeout
    try:
        try:
            import anyio.to_thread
        except ImportError:
            _runtime.flush(timeout)
            return
        await anyio.to_thread.run_sync(_runtime.flush, timeout)
    except Exception:
        logger.exception("tracewire: flush at lifespan shutdown failed")

