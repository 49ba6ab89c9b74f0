"""``TracingWSGIMiddleware``: a root span per request for any WSGI app (Flask, Django, ...).

    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app)

The span ends when the server closes the response iterable, so a streamed body is timed fully;
the body is teed chunk by chunk as the server pulls it, never buffered.  The request body is teed
from ``wsgi.input`` as the app reads it.  Flask's route template (``/items/<int:item_id>``) is
read from the request object werkzeug keeps in the environ while ``start_response`` is called;
other frameworks get the path.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import tracewire  # noqa: F401  (tracewire.configure through _request.resolve)
from middleware import _request
from middleware._exchange import RequestTrace
from middleware._types import Environ, ExcInfo, Headers, StartResponse, WSGIApp
from tracewire.instrumentation import RECORDER, LiveSpan, activate, deactivate

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

    from middleware._body import BodyCapture
    from middleware._request import MiddlewareSettings

logger = logging.getLogger("middleware")
# The span of the request being handled (innermost middleware), for Flask's error signal.
_request_span: contextvars.ContextVar[LiveSpan | None] = contextvars.ContextVar(
    "tracewire_wsgi_request_span", default=None)


class TracingWSGIMiddleware:
    """Trace every request of a WSGI app; keyword arguments as for ``TracingMiddleware``."""

    def __init__(self, app: WSGIApp, /, **settings: Unpack[MiddlewareSettings]) -> None:
        self.app = app
        self._cfg = _request.resolve(settings)
        self._trace_header = "-".join(p.capitalize() for p in self._cfg.trace_id_header.split("-"))
        _record_flask_errors(app)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not RECORDER.enabled:
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
        request = RequestTrace.begin(cfg, method, path, headers)
        if request is None:
            return self.app(environ, start_response)
        exchange = _Exchange(request, self, environ, start_response, script_name)
        if request.request_body is not None and environ.get("wsgi.input") is not None:
            environ["wsgi.input"] = _TeeInput(environ["wsgi.input"], request.request_body)
        token = activate(request.span)
        request_token = _request_span.set(request.span)
        try:
            result = self.app(environ, exchange.start_response)
            return _ClosingIterator(result, exchange)
        except BaseException as exc:
            request.failed_before_body()
            exchange.finish(exc)
            raise
        finally:
            _request_span.reset(request_token)
            deactivate(token)


class _Exchange:
    """Per-request WSGI state: wraps ``start_response`` and finishes the request at close."""

    __slots__ = ("environ", "error", "request", "route", "script_name", "tracing", "upstream_start")

    def __init__(self, request: RequestTrace, tracing: TracingWSGIMiddleware, environ: Environ,
                 start_response: StartResponse, script_name: str) -> None:
        self.request = request
        self.tracing = tracing
        self.environ = environ
        self.upstream_start = start_response
        self.script_name = script_name
        self.route: str | None = None
        self.error: BaseException | None = None

    def start_response(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        request = self.request
        try:
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
            request.response_started(int(status[:3]), content_type)
            # Flask's request context is still active here and is gone once the app returns.
            rule = getattr(getattr(self.environ.get("werkzeug.request"), "url_rule", None), "rule", None)
            if isinstance(rule, str):
                # SCRIPT_NAME now, not at entry: a dispatcher below us may have mounted the app.
                self.route = _text(self.environ.get("SCRIPT_NAME", self.script_name)) + rule
            # Nested, the header names the trace the request joined; added once, when missing.
            name = self.tracing._trace_header.lower()
            if not any(key.lower() == name for key, _ in headers):
                headers = [*headers, (self.tracing._trace_header, request.trace_id)]
        except Exception:
            logger.exception("tracewire: could not record the response start")
        write = self.upstream_start(status, headers, exc_info)
        if request.response_body is None:
            return write

        def tee_write(data: bytes) -> object:
            request.response_chunk(data)
            return write(data)

        return tee_write

    def finish(self, exc: BaseException | None) -> None:
        request = self.request
        if not request.complete and exc is None and request.status is not None:
            request.client_disconnected()  # closed before the last chunk: the client went away
        request.finish(self.route, exc, _text(self.environ.get("QUERY_STRING", "")))


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
        request = exchange.request
        # Generators producing the body run here, after the app returned: keep the span current.
        token = activate(request.span)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            request.response_ended()
            raise
        except BaseException as exc:
            exchange.error = exc
            request.failed_before_body()
            raise
        finally:
            deactivate(token)
        try:
            request.response_chunk(chunk)
        except Exception:
            logger.exception("tracewire: could not record a response chunk")
        return chunk

    def close(self) -> None:
        exchange = self._exchange
        token = activate(exchange.request.span)
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            exchange.error = exchange.error or exc
            raise
        finally:
            deactivate(token)
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
        span = _request_span.get()
        if span is not None and span.live_trace is not None:
            span.record_exception(exception)

    flask.got_request_exception.connect(on_exception, owner, weak=False)
