"""The viewer's starlette app: static pages plus a read-only JSON API under ``/api/``.

    GET /api/traces?filter=F&errors=1&since_ms=T&sort=time|duration&limit=50&cursor=C
    GET /api/traces/{trace_id}[?details=0]
    GET /api/traces/{trace_id}/spans/{span_id}
    GET /api/sessions/{session_id}
    GET /api/compare?a=ID&b=ID

Every read goes through ``search_traces``; pages are keyset pages expressed as filter clauses.
Trace content is untrusted: the pages render it with ``textContent`` only, and every response
carries a Content-Security-Policy that forbids inline script and any other origin.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracewire.model import Trace
from tracewire.read.filter import SearchFilterError, parse_filter
from tracewire.read.search import open_dataset, search_dataset
from tracewire.read.viewer import views

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_LIMIT = 500
SESSION_MAX_TRACES = 1000
_SELECTIVE = {"session_id", "trace_id", "client_request_id"}
WINDOWS_MS = (86_400_000, 7 * 86_400_000, 30 * 86_400_000)  # day, week, month before a page
TRACE_CACHE = 4  # parsed traces and their pages kept: selecting spans, re-opening cost no re-read
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class _JSON(JSONResponse):
    """orjson: a 20,000-span trace page serializes in ~20 ms instead of ~150 ms."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class SecurityHeadersMiddleware:
    """Adds the CSP and friends to every response (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _bad_request(message: str, **extra: Any) -> JSONResponse:
    return _JSON({"error": {"message": message, **extra}}, status_code=400)


def _filter_error(exc: SearchFilterError) -> JSONResponse:
    return _bad_request(str(exc), problem=exc.problem, position=exc.position, text=exc.text)


class _Source:
    """Where the traces are: a Delta table (re-opened per read, so new commits show) or a
    JSON-lines file (loaded into memory, re-read when it changes)."""

    def __init__(self, table: str, storage_options: dict[str, str] | None, jsonl: bool):
        self.table = table
        self.storage_options = storage_options
        self.jsonl = jsonl
        self._stamp: tuple[int, int] | None = None
        self._loaded: Any = None
        self._lock = threading.Lock()

    def dataset(self) -> Any:
        if not self.jsonl:
            return open_dataset(self.table, self.storage_options)
        import pyarrow.dataset as ds

        from tracewire.read.jsonl import load

        stat = os.stat(self.table)
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                table = load(self.table).table
                self._loaded = None if table is None else ds.dataset(table)
                self._stamp = stamp
            return self._loaded


class _Api:
    def __init__(self, source: _Source):
        self.source = source
        self.table = source.table
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._bodies: OrderedDict[tuple[str, bool], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _search(self, filter_string: str | None, order_by: list[str] | None, limit: int) -> list[Trace]:
        return search_dataset(self.source.dataset(), filter_string or None, order_by, limit)

    def _one(self, trace_id: str) -> Trace | None:
        found = self._search(f"trace_id = {_quote(trace_id)}", None, 1)
        return found[0] if found else None

    def _day_span(self) -> tuple[float, float]:
        """(end of the newest, start of the oldest) ``request_date`` partition, in ms.

        Read from the partition values of the table's files, without scanning any; when they
        are unknown, (now, 0).
        """
        try:
            import pyarrow.dataset as ds

            dataset = self.source.dataset()
            days = [ds.get_partition_keys(f.partition_expression).get("request_date")
                    for f in dataset.get_fragments()] if dataset is not None else []
            dates = [d for d in days if isinstance(d, dt.date)]
        except Exception:  # an unusual layout: the windows just start from now
            logger.debug("viewer: no partition dates for %s", self.table, exc_info=True)
            dates = []
        if not dates:
            return time.time() * 1000, 0.0

        def ms(day: dt.date) -> float:
            return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000

        return ms(max(dates) + dt.timedelta(days=1)), ms(min(dates))

    def info(self, request: Request) -> Response:
        return _JSON({"table": self.table})

    def traces(self, request: Request) -> Response:
        params = request.query_params
        user_filter = params.get("filter", "").strip()
        try:
            parsed = parse_filter(user_filter)
        except SearchFilterError as exc:
            return _filter_error(exc)
        # A lookup by id matches a handful of rows: one scan beats widening time windows.
        selective = any(c.column in _SELECTIVE and c.op in ("=", "IN") for c in parsed)
        try:
            limit = min(max(int(params.get("limit", "50")), 1), MAX_LIMIT)
            since = float(params["since_ms"]) if params.get("since_ms") else None
            cursor = views.decode_cursor(params["cursor"]) if params.get("cursor") else None
        except ValueError as exc:
            return _bad_request(f"bad parameter: {exc}")
        by_duration = params.get("sort", "time") == "duration"
        clauses = [user_filter] if user_filter else []
        if params.get("errors") in ("1", "true"):
            clauses.append("status = 'ERROR'")
        if since is not None:
            clauses.append(f"timestamp_ms >= {since!r}")
        if cursor is not None:
            key, ids = cursor
            # Keyset page: rows at or before the last row's key, minus those already shown there.
            if by_duration:
                clauses.append(f"execution_time_ms <= {int(key)}")
            else:
                clauses.append(f"timestamp_ms < {key + 1!r}")
            if ids:
                clauses.append(f"trace_id NOT IN ({', '.join(_quote(i) for i in ids)})")
        order = ["execution_time_ms DESC"] if by_duration else ["timestamp_ms DESC"]
        # Newest-first pages look at the last day before the page's start (the cursor, or the end
        # of the newest partition) first, then the last week, month, and only then the whole
        # table: a time bound prunes the scan to those days' partitions (an empty window costs
        # ~20 ms on the 1M-trace table).  A window's top rows are the global top once it holds
        # more than a page: every newer row is inside it.
        windows: list[float | None] = [None]
        if not by_duration and not selective:
            newest, oldest = self._day_span()
            anchor = cursor[0] if cursor is not None else newest
            windows = [anchor - w for w in WINDOWS_MS
                       if anchor - w > max(since or 0.0, oldest)]  # else the last scan covers it
            windows.append(None)
        try:
            for lower in windows:
                bound = [] if lower is None else [f"timestamp_ms >= {lower!r}"]
                found = self._search(" AND ".join(clauses + bound), order, limit + 1)
                if len(found) > limit:
                    break
        except SearchFilterError as exc:
            return _filter_error(exc)
        rows = [views.summary(t) for t in found[:limit]]
        next_cursor = None
        if len(found) > limit and rows:
            field = "duration_ms" if by_duration else "time_ms"
            last = rows[-1][field] or 0
            same = [r["trace_id"] for r in rows if (r[field] or 0) == last]
            if cursor is not None and cursor[0] == last:
                same = cursor[1] + same
            next_cursor = views.encode_cursor(last, same)
        return _JSON({"traces": rows, "next_cursor": next_cursor})

    def _cached(self, trace_id: str) -> Trace | None:
        with self._lock:
            trace = self._traces.get(trace_id)
            if trace is not None:
                self._traces.move_to_end(trace_id)
                return trace
        trace = self._one(trace_id)
        if trace is not None:
            with self._lock:
                self._traces[trace_id] = trace
                while len(self._traces) > TRACE_CACHE:
                    self._traces.popitem(last=False)
        return trace

    def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        details = request.query_params.get("details", "1") not in ("0", "false")
        key = (trace_id, details)
        with self._lock:
            body = self._bodies.get(key)
        if body is None:
            trace = self._cached(trace_id)
            if trace is None:
                return _JSON({"error": {"message": "no such trace"}}, status_code=404)
            body = orjson.dumps(views.trace_view(trace, details=details), option=orjson.OPT_NON_STR_KEYS)
            with self._lock:
                self._bodies[key] = body
                while len(self._bodies) > TRACE_CACHE:
                    self._bodies.popitem(last=False)
        return Response(body, media_type="application/json")

    def span(self, request: Request) -> Response:
        trace = self._cached(request.path_params["trace_id"])
        span = views.find_span(trace, request.path_params["span_id"]) if trace is not None else None
        if span is None:
            return _JSON({"error": {"message": "no such span"}}, status_code=404)
        return _JSON(views.span_detail(span))

    def session(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        traces = self._search(f"session_id = {_quote(session_id)}", ["timestamp_ms ASC"], SESSION_MAX_TRACES)
        if not traces:
            return _JSON({"error": {"message": "no such session"}}, status_code=404)
        return _JSON(views.session_view(session_id, traces))

    def compare(self, request: Request) -> Response:
        a_id, b_id = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a_id or not b_id:
            return _bad_request("compare needs two trace ids: ?a=ID&b=ID")
        a, b = self._one(a_id), self._one(b_id)
        missing = [i for i, t in ((a_id, a), (b_id, b)) if t is None]
        if a is None or b is None:
            return _JSON({"error": {"message": f"no such trace: {', '.join(missing)}"}},
                                status_code=404)
        return _JSON(views.compare_view(a, b))


def create_app(
    table: str,
    *,
    storage_options: dict[str, str] | None = None,
    allowed_hosts: list[str] | None = None,
) -> Starlette:
    """The viewer for the inference table at ``table`` (a Delta table path or URI, or
    ``jsonl:PATH`` for a JSON-lines file); only GET routes exist (read-only).

    ``allowed_hosts`` guards against DNS rebinding (default: localhost names only).
    """
    jsonl = table.startswith("jsonl:")
    source = _Source(table.removeprefix("jsonl:"), storage_options, jsonl)
    api = _Api(source)
    # Open the table now: a wrong path fails at start-up, and the first page does not pay for
    # importing pyarrow/deltalake.
    source.dataset()

    def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-store"})

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/info", api.info, methods=["GET"]),
        Route("/api/traces", api.traces, methods=["GET"]),
        Route("/api/traces/{trace_id}", api.trace, methods=["GET"]),
        Route("/api/traces/{trace_id}/spans/{span_id}", api.span, methods=["GET"]),
        Route("/api/sessions/{session_id:path}", api.session, methods=["GET"]),
        Route("/api/compare", api.compare, methods=["GET"]),
        # StaticFiles resolves paths inside STATIC_DIR only (no "..", no symlink escape).
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    hosts = allowed_hosts if allowed_hosts is not None else ["127.0.0.1", "localhost", "[::1]", "::1"]
    middleware = [Middleware(SecurityHeadersMiddleware),
                  Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(routes=routes, middleware=middleware)
