"""``TracingWSGIMiddleware``: a root span per request for any WSGI app (Flask, Django, ...).

    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app)

The span ends when the server closes the response iterable, so a streamed body is timed fully;
the body is teed chunk by chunk as the server pulls it, never buffered.  The request body is teed
from ``wsgi.input`` as the app reads it.  Flask's route template (``/items/<int:item_id>``) is
read from the request object werkzeug keeps in the environ while ``start_response`` is called;
other frameworks get the path.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from middleware import _request
from middleware._body import BodyCapture
from middleware._types import Environ, ExcInfo, Headers, StartResponse, WSGIApp
from tracewire import context as _context
from tracewire import runtime as _runtime

logger = logging.getLogger("middleware")
_STATE = _runtime.STATE
_current = _context.current_span
_now = _request.now_ns


class TracingWSGIMiddleware:
    """Trace every request of a WSGI app; keyword arguments as for ``TracingMiddleware``."""

    def __init__(self, app: WSGIApp, **settings: Any) -> None:
        self.app = app
        self._cfg = _request.resolve(settings)
        self._trace_header = "-".join(p.capitalize() for p in self._cfg.trace_id_header.split("-"))
        _record_flask_errors(app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not _STATE.enabled:
            return self.app(environ, start_response)
        return self._traced(environ, start_response)

    @staticmethod
    def stats() -> dict[str, int]:
        """Process-wide middleware counters, e.g. ``rejected_headers``."""
        return _request.stats()

    def _traced(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        cfg = self._cfg
        script_name = _text(environ.get("SCRIPT_NAME", ""))
        path = script_name + _text(environ.get("PATH_INFO", "")) or "/"
        if cfg.exclude is not None and cfg.exclude(path):
            return self.app(environ, start_response)
        headers: dict[str, list[bytes]] = {}
        for key, name in cfg.wsgi_headers.items():
            value = environ.get(key)
            if value is not None:
                headers[name] = [value.encode("latin-1", "replace")]
        method = str(environ.get("REQUEST_METHOD") or "GET")
        root = _request.begin(cfg, method, path, headers)
        if root is None:
            return self.app(environ, start_response)
        exchange = _Exchange(root, self, environ, start_response, method, script_name)
        if exchange.request_body is not None and environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = _TeeInput(environ["wsgi.input"], exchange.request_body)
        token = _current.set(root)
        try:
            result = self.app(environ, exchange.start_response)
            return _ClosingIterator(result, exchange)
        except BaseException as exc:
            exchange.failed_before_body()
            exchange.finish(exc)
            raise
        finally:
            _current.reset(token)


class _Exchange:
    """Per-request state: wraps ``start_response`` and finishes the root span at close."""

    __slots__ = (
        "complete", "end_ns", "environ", "error", "first_byte_ns", "method", "request_body",
        "response_body", "response_type", "root", "route", "script_name", "status", "tracing",
        "upstream_start",
    )

    def __init__(self, root: Any, tracing: TracingWSGIMiddleware, environ: Environ,
                 start_response: StartResponse, method: str, script_name: str) -> None:
        self.root = root
        self.tracing = tracing
        self.environ = environ
        self.upstream_start = start_response
        self.method = method
        self.script_name = script_name
        cap = root._live.max_value_bytes if root._live is not None else _request.value_cap()
        capture = tracing._cfg.capture_bodies
        self.request_body = BodyCapture(cap) if capture else None
        self.response_body = BodyCapture(cap) if capture else None
        self.response_type = ""
        self.status: int | None = None
        self.route: str | None = None
        self.first_byte_ns: int | None = None
        self.end_ns: int | None = None
        self.complete = False
        self.error: BaseException | None = None

    def start_response(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        try:
            self.status = int(status[:3])
            for key, value in headers:
                if key.lower() == "content-type":
                    self.response_type = value
            # Flask's request context is still active here and is gone once the app returns.
            rule = getattr(getattr(self.environ.get("werkzeug.request"), "url_rule", None), "rule", None)
            if isinstance(rule, str):
                self.route = self.script_name + rule
            headers = [*headers, (self.tracing._trace_header, self.root.trace_id)]
        except Exception:
            logger.exception("tracewire: could not record the response start")
        write = self.upstream_start(status, headers, exc_info)
        if self.response_body is None:
            return write

        def tee_write(data: bytes) -> object:
            self.chunk(data)
            return write(data)

        return tee_write

    def failed_before_body(self) -> None:
        """The app raised before any body byte: the server answers 500, whatever was started."""
        if self.first_byte_ns is None:
            self.status = 500

    def chunk(self, data: bytes) -> None:
        if data:
            if self.first_byte_ns is None:
                self.first_byte_ns = _now()
            if self.response_body is not None:
                self.response_body.add(data)

    def finish(self, exc: BaseException | None) -> None:
        if self.complete is False and exc is None and self.end_ns is None and self.status is not None:
            disconnected = True  # closed before the last chunk: the client went away
        else:
            disconnected = False
        _request.finish(
            self.root,
            self.tracing._cfg,
            method=self.method,
            route=self.route,
            status=self.status,
            exc=exc,
            request_body=self.request_body,
            request_type=self.environ.get("CONTENT_TYPE") or "",
            response_body=self.response_body,
            response_type=self.response_type,
            query=_text(self.environ.get("QUERY_STRING", "")),
            first_byte_ns=self.first_byte_ns,
            response_end_ns=self.end_ns,
            disconnected=disconnected,
        )


class _ClosingIterator:
    """The response iterable, teed; ending the root span when the server closes it."""

    __slots__ = ("_exchange", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], exchange: _Exchange) -> None:
        self._result = result
        self._exchange = exchange
        self._iterator: Iterator[bytes] = iter(result)

    def __iter__(self) -> _ClosingIterator:
        return self

    def __next__(self) -> bytes:
        exchange = self._exchange
        # Generators producing the body run here, after the app returned: keep the root current.
        token = _current.set(exchange.root)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            exchange.complete = True
            exchange.end_ns = _now()
            raise
        except BaseException as exc:
            exchange.error = exc
            exchange.failed_before_body()
            raise
        finally:
            _current.reset(token)
        try:
            exchange.chunk(chunk)
        except Exception:
            logger.exception("tracewire: could not record a response chunk")
        return chunk

    def close(self) -> None:
        exchange = self._exchange
        token = _current.set(exchange.root)
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            exchange.error = exchange.error or exc
            raise
        finally:
            _current.reset(token)
            exchange.finish(exchange.error)


class _TeeInput:
    """``wsgi.input`` that records what the app reads (and nothing it does not read)."""

    __slots__ = ("_capture", "_stream")

    def __init__(self, stream: Any, capture: BodyCapture) -> None:
        self._stream = stream
        self._capture = capture

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self._capture.add(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self._capture.add(data)
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        for line in lines:
            self._capture.add(line)
        return lines

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            n: int = readinto(view) or 0
        else:
            data = self._stream.read(len(view))
            n = len(data)
            view[:n] = data
        self._capture.add(view[:n].tobytes())
        return n

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._capture.add(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _text(value: Any) -> str:
    """A PEP 3333 environ string (bytes smuggled as latin-1) as the text the client sent."""
    if not isinstance(value, str):
        return ""
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


_flask_apps: weakref.WeakSet[Any] = weakref.WeakSet()


def _record_flask_errors(app: Any) -> None:
    """Flask turns unhandled exceptions into a 500 itself; record them on the request's trace."""
    flask = sys.modules.get("flask")
    owner = getattr(app, "__self__", None)
    if flask is None or owner is None or not isinstance(owner, flask.Flask) or owner in _flask_apps:
        return
    _flask_apps.add(owner)

    def on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
        span = _current.get()
        if span is not None and span.parent_id is None and span._live is not None:
            span.record_exception(exception)

    flask.got_request_exception.connect(on_exception, owner, weak=False)
