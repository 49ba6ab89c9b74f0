"""The fluent API: ``@trace``, ``start_span``, ``update_current_trace`` and friends.

The current span lives in a context variable, so asyncio tasks, ``asyncio.to_thread`` and
anyio worker threads (FastAPI's sync endpoints) keep their parent.  Tracing never raises into
user code: bookkeeping errors are logged, the user's own exceptions pass through unchanged.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

import orjson

from tracewire import context, encoding, redaction
from tracewire.keys import PREVIEW_CHARS, SpanAttributeKey, SpanType, TraceMetadataKey
from tracewire.model import Span
from tracewire.recording.live import NOOP_SPAN, LiveSpan, NoOpSpan, start_trace
from tracewire.recording.recorder import RECORDER

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_current = context.current_span


def current_live_span() -> LiveSpan | None:
    """The span new spans attach to in this context (a NoOpSpan inside an unsampled trace).

    A span of a trace that already finished is no parent: a context can outlive the scope that
    set it (asyncio callbacks copy the context they were scheduled from — uvicorn resuming a
    paused socket from a request's ``receive`` hands that request's span to the connection's
    later requests)."""
    span = _current.get()
    if not isinstance(span, LiveSpan):
        return None
    if span.end_time_ns is not None:
        live = span.live_trace
        if live is None or live.finished:
            return None
    return span


def open_span(
    name: str, span_type: str, attributes: Mapping[str, Any] | None = None, inputs: Any = None,
    has_inputs: bool = False, parent: LiveSpan | None = None,
) -> LiveSpan:
    """A new child of ``parent`` (default: the current span), or a new trace's root when there
    is none; NOOP_SPAN when not recording.  Does not make it current."""
    try:
        if parent is None:
            parent = current_live_span()
        if parent is None:
            span = start_trace(name, span_type, attributes)
            if span is None:
                return NoOpSpan(trace_id="")
        else:
            live = parent.live_trace
            if live is None:
                return parent if isinstance(parent, NoOpSpan) else NOOP_SPAN
            span = live.new_span(name, parent.span_id, span_type, attributes)
        if has_inputs:
            span.set_inputs(inputs)
        return span
    except Exception:
        logger.exception("tracewire: could not start span %r", name)
        return NOOP_SPAN


def close_span(span: LiveSpan, exc: BaseException | None = None) -> None:
    """End ``span``, recording ``exc`` first when given; never raises."""
    if span.__class__ is NoOpSpan:
        return
    try:
        if exc is not None:
            span.record_exception(exc)
        span.end()
    except Exception:
        logger.exception("tracewire: could not end span %r", span.name)


class start_span:
    """Context manager opening a span under the current one (or a new trace).

    ``with tracewire.start_span("retrieve", span_type=SpanType.RETRIEVER) as span: ...``
    """

    __slots__ = ("_attributes", "_name", "_span", "_span_type", "_token")

    def __init__(
        self,
        name: str = "span",
        span_type: str = SpanType.UNKNOWN,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._span_type = span_type
        self._attributes = attributes
        self._span: LiveSpan = NOOP_SPAN
        self._token: contextvars.Token[Span | None] | None = None

    def __enter__(self) -> LiveSpan:
        if not RECORDER.enabled:
            return NOOP_SPAN
        span = self._span = open_span(self._name, self._span_type, self._attributes)
        self._token = _current.set(span)
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is None:
            return
        self._token = None
        try:
            close_span(self._span, exc)
        finally:
            _current.reset(token)


def _make_binder(func: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A fast ``(args, kwargs) -> inputs dict`` for ``func``, dropping self/cls."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return lambda args, kwargs: {"args": list(args), **kwargs}
    params = list(signature.parameters.values())
    skip_first = bool(params) and params[0].name in ("self", "cls")
    simple = all(
        p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params
    )
    if simple:
        names = tuple(p.name for p in params)
        defaults = {p.name: p.default for p in params if p.default is not p.empty}

        def bind_simple(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            inputs = dict(zip(names, args, strict=False))
            if kwargs:
                inputs.update(kwargs)
            if defaults and len(inputs) < len(names):
                for key, value in defaults.items():
                    inputs.setdefault(key, value)
            if skip_first:
                inputs.pop(names[0], None)
            return inputs

        return bind_simple

    def bind_general(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            inputs = dict(bound.arguments)
        except TypeError:
            inputs = {"args": list(args), **kwargs}
        if skip_first:
            inputs.pop(params[0].name, None)
        return inputs

    return bind_general


@overload
def trace(func: F) -> F: ...


@overload
def trace(
    func: None = None,
    *,
    name: str | None = None,
    span_type: str = SpanType.UNKNOWN,
    attributes: Mapping[str, Any] | None = None,
    output_reducer: Callable[[list[Any]], Any] | None = None,
) -> Callable[[F], F]: ...


def trace(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    span_type: str = SpanType.UNKNOWN,
    attributes: Mapping[str, Any] | None = None,
    output_reducer: Callable[[list[Any]], Any] | None = None,
) -> Any:
    """Trace a function: a span named after it, inputs = bound arguments, outputs = result.

    Works on sync, async, generator and async-generator functions, and on ``classmethod`` /
    ``staticmethod`` objects in either decorator order.  The span is named ``__name__`` (as in
    MLflow) and carries ``mlflow.spanFunctionName``.  Generators record the list of yielded
    chunks (or ``output_reducer(chunks)``) and end their span when exhausted, closed early or
    garbage-collected.  Exceptions are recorded on the span and re-raised unchanged.
    """

    def decorate(fn: Any) -> Any:
        if isinstance(fn, (classmethod, staticmethod)):
            return type(fn)(decorate(fn.__func__))
        try:
            spec = _Spec(fn, name, span_type, attributes, output_reducer)
        except Exception:
            logger.exception("tracewire: cannot trace %r; it runs untraced", fn)
            return fn
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(fn, spec)
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(fn, spec)
        if inspect.iscoroutinefunction(fn):
            return _wrap_coroutine(fn, spec)
        return _wrap_function(fn, spec)

    return decorate(func) if func is not None else decorate


class _Spec:
    """What every call of one traced function shares: how to open its span and end it."""

    __slots__ = ("attributes", "bind", "name", "reducer", "span_type")

    def __init__(
        self, fn: Callable[..., Any], name: str | None, span_type: str,
        attributes: Mapping[str, Any] | None, reducer: Callable[[list[Any]], Any] | None,
    ) -> None:
        function_name = str(getattr(fn, "__name__", None) or "span")
        self.name = str(name or function_name)
        self.span_type = span_type
        self.attributes = {SpanAttributeKey.FUNCTION_NAME: function_name, **(attributes or {})}
        self.bind = _make_binder(fn)
        self.reducer = reducer

    def begin(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> LiveSpan:
        try:
            inputs = self.bind(args, kwargs)
        except Exception:
            inputs = {"args": "<unavailable>"}
        return open_span(self.name, self.span_type, self.attributes, inputs, True)

    def succeed(self, span: LiveSpan, result: Any) -> None:
        if span.__class__ is NoOpSpan:
            return
        try:
            span.set_outputs(result)
            span.end()
        except Exception:
            logger.exception("tracewire: could not end span %r", self.name)


def _wrap_function(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not RECORDER.enabled:
            return fn(*args, **kwargs)
        span = spec.begin(args, kwargs)
        token = _current.set(span)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            close_span(span, exc)
            raise
        finally:
            _current.reset(token)
        spec.succeed(span, result)
        return result

    return wrapper


def _wrap_coroutine(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not RECORDER.enabled:
            return await fn(*args, **kwargs)
        span = spec.begin(args, kwargs)
        token = _current.set(span)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            close_span(span, exc)
            raise
        finally:
            _current.reset(token)
        spec.succeed(span, result)
        return result

    return wrapper


class _StreamOutput:
    """The chunks a traced generator yields, kept only up to the trace's value cap.

    A stream can be far larger than any trace may hold (an LLM answer, a file download): past
    ``max_value_bytes`` chunks are counted, not kept, so streaming 300 MB holds ~256 KB.  Chunks
    other than str/bytes are redacted and encoded as they arrive (to know their size); without an
    ``output_reducer`` the encoded text is what is kept, so nothing is encoded twice.
    """

    __slots__ = ("cap", "items", "keep_objects", "kept", "size", "truncated")

    def __init__(self, span: LiveSpan, reducer: Callable[[list[Any]], Any] | None) -> None:
        live = span.live_trace
        self.cap = live.max_value_bytes if live is not None else 0
        self.items: list[Any] = []
        self.keep_objects = reducer is not None
        self.kept = 0
        self.size = 0
        self.truncated = False

    def add(self, item: Any) -> None:
        if not self.cap:
            return  # not recording
        try:
            kind = type(item)
            if kind is str or kind is bytes or kind is bytearray:
                stored = item
                n = len(item) + 3  # quotes and separator
            else:
                text = encoding.dumps(item)  # redacted with the outputs, on the export worker
                n = len(text) + 1
                stored = item if self.keep_objects else orjson.Fragment(text)
            self.size += n
            if self.truncated:
                return
            if self.kept + n <= self.cap:
                self.items.append(stored)
                self.kept += n
            else:
                self.truncated = True
        except Exception:
            logger.debug("tracewire: could not record a stream chunk", exc_info=True)

    def output(self, span: LiveSpan, reducer: Callable[[list[Any]], Any] | None) -> Any:
        output: Any = self.items
        if reducer is not None:
            try:
                output = reducer(self.items)
            except Exception:
                logger.warning("tracewire: output_reducer of span %r failed", span.name, exc_info=True)
        if not self.truncated:
            return output
        output = redaction.redact(output)
        text = output if isinstance(output, str) else encoding.dumps(output)
        live = span.live_trace
        if live is not None:
            live.note_truncated(span, SpanAttributeKey.OUTPUTS)
        return encoding.truncation_marker(self.size, text[:PREVIEW_CHARS])


def _finish_stream(
    span: LiveSpan, chunks: _StreamOutput, reducer: Callable[[list[Any]], Any] | None,
    exc: BaseException | None, closed_early: bool,
) -> None:
    if span.__class__ is NoOpSpan:
        return
    try:
        span.set_outputs(chunks.output(span, reducer))
        if closed_early:
            span.set_attribute("tracewire.generator_closed_early", True)
    except Exception:
        logger.exception("tracewire: could not record stream output of %r", span.name)
    close_span(span, exc)


def _wrap_generator(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    reducer = spec.reducer

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        if not RECORDER.enabled:
            return (yield from fn(*args, **kwargs))
        span = spec.begin(args, kwargs)
        chunks = _StreamOutput(span, reducer)
        token = _current.set(span)
        try:
            gen = fn(*args, **kwargs)
        except BaseException as exc:
            _finish_stream(span, chunks, reducer, exc, False)
            raise
        finally:
            _current.reset(token)
        sent: Any = None
        to_throw: BaseException | None = None
        while True:
            token = _current.set(span)
            try:
                item = gen.throw(to_throw) if to_throw is not None else gen.send(sent)
            except StopIteration as stop:
                _finish_stream(span, chunks, reducer, None, False)
                return stop.value
            except BaseException as exc:
                _finish_stream(span, chunks, reducer, exc, False)
                raise
            finally:
                _current.reset(token)
            chunks.add(item)
            to_throw = None
            try:
                sent = yield item
            except GeneratorExit:
                try:
                    gen.close()
                finally:
                    _finish_stream(span, chunks, reducer, None, True)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


def _wrap_async_generator(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    reducer = spec.reducer

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        if not RECORDER.enabled:
            async for item in fn(*args, **kwargs):
                yield item
            return
        span = spec.begin(args, kwargs)
        chunks = _StreamOutput(span, reducer)
        agen = fn(*args, **kwargs)
        sent: Any = None
        to_throw: BaseException | None = None
        while True:
            token = _current.set(span)
            try:
                if to_throw is not None:
                    item = await agen.athrow(to_throw)
                else:
                    item = await agen.asend(sent)
            except StopAsyncIteration:
                _finish_stream(span, chunks, reducer, None, False)
                return
            except BaseException as exc:
                _finish_stream(span, chunks, reducer, exc, False)
                raise
            finally:
                _current.reset(token)
            chunks.add(item)
            to_throw = None
            try:
                sent = yield item
            except GeneratorExit:
                try:
                    await agen.aclose()
                finally:
                    _finish_stream(span, chunks, reducer, None, True)
                raise
            except BaseException as exc:
                to_throw = exc

    return wrapper


# -- trace-level updates and queries ------------------------------------------------------------


def get_current_active_span() -> LiveSpan | None:
    """The span new spans would attach to in this context, or None."""
    span = current_live_span()
    if span is None or span.__class__ is NoOpSpan:
        return None
    return span


def get_active_trace_id() -> str | None:
    span = get_current_active_span()
    return span.trace_id if span is not None else None


def get_last_active_trace_id() -> str | None:
    """The id of the most recently finished trace in this process."""
    return RECORDER.last_trace_id


def update_current_trace(
    tags: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    client_request_id: str | None = None,
    request_preview: str | None = None,
    response_preview: str | None = None,
    session_id: str | None = None,
    user: str | None = None,
    state: str | None = None,
) -> None:
    """Enrich the trace of the current span; a no-op outside a trace."""
    span = get_current_active_span()
    live = span.live_trace if span is not None else None
    if live is None:
        return
    try:
        policy = redaction.policy()
        if tags:
            live.tags.update({str(k): _redacted_str(policy, str(k), v) for k, v in tags.items()})
        if metadata:
            live.metadata.update({str(k): _redacted_str(policy, str(k), v) for k, v in metadata.items()})
        if client_request_id is not None:
            live.client_request_id = str(client_request_id)
        if request_preview is not None:
            live.request_preview = str(request_preview)[:1000]
        if response_preview is not None:
            live.response_preview = str(response_preview)[:1000]
        if session_id is not None:
            live.metadata[TraceMetadataKey.SESSION] = str(session_id)
        if user is not None:
            live.metadata[TraceMetadataKey.USER] = str(user)
        if state is not None:
            code = str(state).upper()
            if code in ("OK", "ERROR"):
                live.state = code
            else:
                logger.warning("tracewire: ignoring trace state %r (use OK or ERROR)", state)
    except Exception:
        logger.exception("tracewire: update_current_trace failed")


def _redacted_str(policy: redaction.Redactor, key: str, value: Any) -> str:
    """A metadata/tag value as text: redacted when its name is secret, or inside it."""
    if policy.is_secret(key):
        return redaction.REDACTED
    if isinstance(value, str):
        return value
    return encoding.dumps(policy.redact(value))


def propagate(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bind ``fn`` to the current context, so spans it starts in another thread keep their parent.

    ``executor.submit(tracewire.propagate(work), item)`` — one call per submitted function.
    """
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: Any, **kwargs: Any) -> Any:
        # A fresh copy per call: one Context cannot be entered by two threads at once.
        return ctx.copy().run(fn, *args, **kwargs)

    return run_in_context
