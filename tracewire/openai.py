"""OpenAI autolog: every call of the ``openai`` client (>= 1.0) becomes a span.

    import tracewire.openai
    tracewire.openai.autolog()          # or: TRACING_AUTOLOG=openai

Patches ``create`` (and ``parse``) of the chat completions, responses, embeddings and legacy
completions resources, sync and async, at the class level, so clients created before or after
``autolog()`` are traced, through any ``base_url``.  Each call records a span named like MLflow's
(the resource class: ``Completions``, ``AsyncCompletions``, ``Responses``, ``Embeddings``, ...)
under the current span, with the call's arguments as inputs (never the API key or the client's
headers), the response as outputs, token usage (``mlflow.chat.tokenUsage``, summed into the
trace's ``mlflow.trace.tokenUsage``) and the OTel GenAI attributes.

Streams are assembled as they are read (content, tool calls, finish reason, usage) into at most
``TRACING_MAX_VALUE_BYTES`` of text; the span ends when the stream is exhausted, closed or
dropped.  Tracing never changes what the caller gets: bookkeeping errors are logged, the
client's own exceptions pass through unchanged.  With tracing off a patched method costs one
attribute check.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import orjson

from tracewire.instrumentation import RECORDER, LiveSpan, NoOpSpan, max_value_bytes, open_span
from tracewire.keys import SpanAttributeKey, SpanType

logger = logging.getLogger(__name__)

__all__ = ["autolog"]

# -- the core calls this integration makes: all through tracewire.instrumentation ----------------
_STATE = RECORDER  # ``_STATE.enabled`` is the one check made when tracing is off
Span = LiveSpan


def _start_span(name: str, span_type: str, inputs: Any) -> LiveSpan | None:
    """A child of the current span (or a new trace's root), not made current; None if not recording."""
    span = open_span(name, span_type, None, inputs, True)
    return None if isinstance(span, NoOpSpan) else span


def _defer(span: Span, work: Callable[[], None], approx_bytes: int) -> bool:
    """Run ``work`` on the export worker before the span's trace is built; False if too late."""
    live = span.live_trace
    if live is None or live.finished:
        return False
    live.defer(work, approx_bytes)
    return True


def _still_open(span: Span) -> bool:
    """Whether the span's trace is still being recorded (its deferred work has not run yet)."""
    live = span.live_trace
    return live is not None and not live.finished


def _add_bytes(span: Span, approx_bytes: int) -> None:
    """Account for bytes deferred work will add, in the export queue's byte bound."""
    live = span.live_trace
    if live is not None:
        live.approx_bytes += approx_bytes


def _max_value_bytes() -> int:
    return max_value_bytes()


# -- attribute keys --------------------------------------------------------------------------------

MESSAGE_FORMAT = "mlflow.message.format"
CHAT_TOOLS = "mlflow.chat.tools"
LLM_MODEL = "mlflow.llm.model"
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
TIME_TO_FIRST_TOKEN = "tracewire.time_to_first_token_ms"
STREAM_CHUNKS = "tracewire.stream_chunks"
STREAM_CLOSED_EARLY = "tracewire.stream_closed_early"
_ATTRIBUTES_BYTES = 400  # what the start attributes add to a span, roughly

# Request parameters copied to ``gen_ai.request.*`` attributes.
_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}
# Never recorded as inputs: headers and query parameters can carry credentials.
_SECRET_KWARGS = frozenset({"extra_headers", "extra_query"})

# -- what is patched -------------------------------------------------------------------------------

_CHAT, _RESPONSES, _EMBEDDINGS, _TEXT = "chat", "responses", "embeddings", "text_completion"
_OPERATION = {_CHAT: "chat", _RESPONSES: "chat", _EMBEDDINGS: "embeddings", _TEXT: "text_completion"}
# SPEC §3: CHAT_MODEL, EMBEDDING for embeddings (MLflow's autolog types legacy completions LLM).
_SPAN_TYPE = {_CHAT: SpanType.CHAT_MODEL, _RESPONSES: SpanType.CHAT_MODEL,
              _EMBEDDINGS: SpanType.EMBEDDING, _TEXT: SpanType.CHAT_MODEL}

# (module, sync class, async class, kind, methods)
_TARGETS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("openai.resources.chat.completions", "Completions", "AsyncCompletions", _CHAT, ("create", "parse")),
    ("openai.resources.responses", "Responses", "AsyncResponses", _RESPONSES, ("create", "parse")),
    ("openai.resources.embeddings", "Embeddings", "AsyncEmbeddings", _EMBEDDINGS, ("create",)),
    ("openai.resources.completions", "Completions", "AsyncCompletions", _TEXT, ("create",)),
)

_lock = threading.Lock()
_patched: list[tuple[type, str, Any]] = []  # (class, method name, original attribute)


def autolog(disable: bool = False) -> None:
    """Trace every call of the ``openai`` client; ``disable=True`` restores the original methods.

    Idempotent.  Raises ``ImportError`` when the ``openai`` package (>= 1.0) is not installed.
    """
    with _lock:
        if disable:
            while _patched:
                owner, name, original = _patched.pop()
                setattr(owner, name, original)
            return
        if _patched:
            return
        import openai

        major = int(str(getattr(openai, "__version__", "0")).split(".")[0] or 0)
        if major < 1:
            raise ImportError(f"tracewire.openai needs openai >= 1.0, found {openai.__version__}")
        for module_name, sync_name, async_name, kind, methods in _TARGETS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # an older client without this resource (responses < 1.66)
                continue
            for class_name, is_async in ((sync_name, False), (async_name, True)):
                cls = getattr(module, class_name, None)
                if not isinstance(cls, type):
                    continue
                for method in methods:
                    original = cls.__dict__.get(method)
                    if original is None or not callable(original):
                        continue
                    wrap = _wrap_async if is_async else _wrap_sync
                    setattr(cls, method, wrap(original, kind))
                    _patched.append((cls, method, original))


def _wrap_sync(original: Callable[..., Any], kind: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _STATE.enabled:
            return original(self, *args, **kwargs)
        call = _Call.start(kind, self, args, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        return call.succeed(result, False)

    return traced


def _wrap_async(original: Callable[..., Any], kind: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _STATE.enabled:
            return await original(self, *args, **kwargs)
        call = _Call.start(kind, self, args, kwargs)
        if call is None:
            return await original(self, *args, **kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        return call.succeed(result, True)

    return traced


# -- one call ----------------------------------------------------------------------------------------


class _Call:
    """The span of one client call, from the request to the (possibly streamed) response.

    Only the inputs are encoded on the caller's thread (the caller may mutate its messages list
    right after the call).  The attributes, and a non-streamed response (the client never mutates
    the objects it returns), are recorded by deferred work on the export worker, just before the
    trace is built; if the trace was already built, they are recorded at once.
    """

    __slots__ = ("attributes", "deferred", "kind", "request_model", "response", "span")

    def __init__(self, kind: str, span: Span, attributes: dict[str, Any], request_model: Any) -> None:
        self.kind = kind
        self.span = span
        self.attributes: dict[str, Any] | None = attributes
        self.request_model = request_model
        self.response: Any = None
        self.deferred = False

    @classmethod
    def start(cls, kind: str, resource: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
        try:
            inputs = {k: v for k, v in kwargs.items() if k not in _SECRET_KWARGS and not _omitted(v)}
            if args:
                inputs["args"] = list(args)
            span = _start_span(type(resource).__name__, _SPAN_TYPE[kind], inputs)
            if span is None:
                return None
            attributes: dict[str, Any] = {GEN_AI_OPERATION: _OPERATION[kind], GEN_AI_PROVIDER: "openai"}
            if kind != _EMBEDDINGS:
                attributes[MESSAGE_FORMAT] = "openai"
            model = inputs.get("model")
            if isinstance(model, str):
                attributes[GEN_AI_REQUEST_MODEL] = model
            for param, value in inputs.items():
                key = _REQUEST_PARAMS.get(param)
                if key is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                    attributes[key] = value
            _server_attributes(resource, attributes)
            tools = inputs.get("tools")
            if tools:
                chat_tools = _chat_tools(tools)
                if chat_tools:
                    attributes[CHAT_TOOLS] = chat_tools
            call = cls(kind, span, attributes, model)
            call.deferred = _defer(span, call.record_deferred, _ATTRIBUTES_BYTES)
            if not call.deferred:
                call.record_deferred()
            return call
        except Exception:
            logger.exception("tracewire: could not start the span of an openai call")
            return None

    def record_deferred(self) -> None:
        """The start attributes, and the response if one is waiting (runs once, usually on the worker)."""
        attributes, self.attributes = self.attributes, None
        if attributes:
            self.span.set_attributes(attributes)
        response, self.response = self.response, None
        if response is not None:
            self.record_response(response)

    def fail(self, exc: BaseException) -> None:
        try:
            self.span.set_attribute(ERROR_TYPE, type(exc).__name__)
            self.span.record_exception(exc)
            self.span.end()
        except Exception:
            logger.exception("tracewire: could not record the error of an openai call")

    def succeed(self, result: Any, is_async: bool) -> Any:
        """Record ``result`` (or hook its stream) and return it unchanged."""
        try:
            parsed = _parse_raw(result)
            stream_kind = _stream_kind(parsed)
            if stream_kind is not None:
                _tap_stream(parsed, stream_kind == "async", _Assembler.for_kind(self.kind, self))
            else:
                self.finish_response(parsed)
        except Exception:
            logger.exception("tracewire: could not record the response of an openai call")
            self._end_quietly()
        return result

    def finish_response(self, response: Any) -> None:
        span = self.span
        if response is not None and hasattr(response, "model_dump_json"):
            if self.deferred:
                self.response = response  # encoded by record_deferred, on the export worker
                _add_bytes(span, _approx_response_bytes(self.kind, response))
                if _still_open(span):
                    response = None
                else:  # the trace was built already: record it now
                    response, self.response = self.response, None
            if response is not None:
                self.record_response(response)
        span.end()

    def record_response(self, response: Any) -> None:
        self.span.set_outputs(_response_json(response))
        self.record_response_attributes(
            getattr(response, "id", None), getattr(response, "model", None),
            _finish_reasons(self.kind, response), _usage(self.kind, getattr(response, "usage", None)),
        )

    def record_response_attributes(
        self, response_id: Any, model: Any, finish_reasons: list[str] | None, usage: dict[str, int] | None
    ) -> None:
        span = self.span
        if isinstance(response_id, str) and response_id:
            span.set_attribute(GEN_AI_RESPONSE_ID, response_id)
        if isinstance(model, str) and model:
            span.set_attribute(GEN_AI_RESPONSE_MODEL, model)
            span.set_attribute(LLM_MODEL, model)
        elif isinstance(self.request_model, str):
            span.set_attribute(LLM_MODEL, self.request_model)
        if finish_reasons:
            span.set_attribute(GEN_AI_FINISH_REASONS, finish_reasons)
        if usage:
            span.set_attribute(SpanAttributeKey.CHAT_USAGE, usage)
            span.set_attribute(GEN_AI_INPUT_TOKENS, usage["input_tokens"])
            if self.kind != _EMBEDDINGS:
                span.set_attribute(GEN_AI_OUTPUT_TOKENS, usage["output_tokens"])

    def _end_quietly(self) -> None:
        try:
            self.span.end()
        except Exception:
            logger.debug("tracewire: could not end an openai span", exc_info=True)


def _omitted(value: Any) -> bool:
    name = type(value).__name__
    return (name == "NotGiven" or name == "Omit") and type(value).__module__.startswith("openai")


_servers: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _server_attributes(resource: Any, attributes: dict[str, Any]) -> None:
    """Provider and server of the resource's client (cached per client: ``base_url`` is not free)."""
    client = getattr(resource, "_client", None)
    try:
        server = _servers.get(client)
    except TypeError:  # not weak-referenceable
        server = None
    if server is None:
        server = {}
        if "Azure" in type(client).__name__:
            server[GEN_AI_PROVIDER] = "azure.ai.openai"
        url = getattr(client, "base_url", None)
        host = getattr(url, "host", None)
        if isinstance(host, str) and host:
            server[SERVER_ADDRESS] = host
            port = getattr(url, "port", None)
            if isinstance(port, int):
                server[SERVER_PORT] = port
        try:
            _servers[client] = server
        except TypeError:
            pass
    attributes.update(server)


def _chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    """``mlflow.chat.tools``: function tools in the chat-completions shape, as MLflow writes them."""
    if not isinstance(tools, (list, tuple)):
        return None
    result: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        tool_type = tool.get("type", "function")
        if tool_type == "function" and isinstance(tool.get("function"), dict):
            result.append({"type": "function", "function": tool["function"]})
        elif tool_type == "function":  # responses API: the definition is inline
            result.append({"type": "function",
                           "function": {k: v for k, v in tool.items() if k not in ("type", "strict")}})
        elif isinstance(tool_type, str):  # built-in tools (web_search, file_search, ...)
            result.append({"type": "function", "function": {"name": tool_type}})
    return result or None


def _response_json(response: Any) -> Any:
    """The response as the JSON it came in (fields the server did not send are left out)."""
    try:
        return orjson.Fragment(response.model_dump_json(exclude_unset=True, warnings=False))
    except Exception:
        return response


def _approx_response_bytes(kind: str, response: Any) -> int:
    """A cheap size estimate for the export queue's byte bound, before the response is encoded."""
    size = 400
    try:
        if kind == _EMBEDDINGS:
            data = response.data
            return size + len(data) * len(data[0].embedding) * 20 if data else size
        for choice in getattr(response, "choices", None) or ():
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None) if message is not None else getattr(choice, "text", None)
            size += 200 + (len(text) if isinstance(text, str) else 0)
        if kind == _RESPONSES:
            usage = getattr(response, "usage", None)
            size += 4 * getattr(usage, "output_tokens", 0) if usage is not None else 1000
    except Exception:
        size += 1000
    return size


def _parse_raw(result: Any) -> Any:
    """The parsed body of a ``with_raw_response`` result (the client caches it: parsed once)."""
    if type(result).__name__ == "LegacyAPIResponse":
        return result.parse()
    return result


_stream_kinds: dict[type, str | None] = {}


def _stream_kind(value: Any) -> str | None:
    kind_of = type(value)
    try:
        return _stream_kinds[kind_of]
    except KeyError:
        pass
    kind = None
    for klass in kind_of.__mro__:
        if klass.__name__ == "Stream" and klass.__module__.startswith("openai"):
            kind = "sync"
        elif klass.__name__ == "AsyncStream" and klass.__module__.startswith("openai"):
            kind = "async"
        if kind is not None:
            break
    _stream_kinds[kind_of] = kind
    return kind


def _usage(kind: str, usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    if kind == _RESPONSES:
        inputs, outputs = getattr(usage, "input_tokens", None), getattr(usage, "output_tokens", None)
    else:
        inputs, outputs = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    total = getattr(usage, "total_tokens", None)
    if not isinstance(inputs, int):
        return None
    outputs = outputs if isinstance(outputs, int) else 0
    result = {"input_tokens": inputs, "output_tokens": outputs,
              "total_tokens": total if isinstance(total, int) else inputs + outputs}
    details = getattr(usage, "prompt_tokens_details" if kind != _RESPONSES else "input_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    if isinstance(cached, int):
        result["cache_read_input_tokens"] = cached
    return result


def _finish_reasons(kind: str, response: Any) -> list[str] | None:
    if kind == _RESPONSES:
        status = getattr(response, "status", None)
        return [status] if isinstance(status, str) else None
    choices = getattr(response, "choices", None)
    if not choices:
        return None
    reasons = [c.finish_reason for c in choices if isinstance(getattr(c, "finish_reason", None), str)]
    return reasons or None


# -- streams -----------------------------------------------------------------------------------------


class _Assembler:
    """Folds stream chunks into the response they add up to, keeping at most ``limit`` chars."""

    __slots__ = ("call", "chunks", "closed", "first_token_ns", "limit", "size")

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.chunks = 0
        self.size = 0
        self.limit = _max_value_bytes()
        self.first_token_ns: int | None = None
        self.closed = False

    @staticmethod
    def for_kind(kind: str, call: _Call) -> _Assembler:
        if kind == _RESPONSES:
            return _ResponsesAssembler(call)
        return _CompletionAssembler(call)

    def _keep(self, text: str, parts: list[str]) -> None:
        if self.first_token_ns is None and text:
            self.first_token_ns = time.time_ns()
        if self.size <= self.limit:
            parts.append(text)
            self.size += len(text)

    def add(self, chunk: Any) -> None:
        raise NotImplementedError

    def result(self) -> tuple[Any, Any, Any, list[str] | None, dict[str, int] | None]:
        """(outputs, response id, model, finish reasons, usage)."""
        raise NotImplementedError

    def finish(self, exc: BaseException | None, closed_early: bool) -> None:
        if self.closed:
            return
        self.closed = True
        call = self.call
        span = call.span
        try:
            outputs, response_id, model, reasons, usage = self.result()
            span.set_outputs(outputs)
            call.record_response_attributes(response_id, model, reasons, usage)
            span.set_attribute(STREAM_CHUNKS, self.chunks)
            if self.first_token_ns is not None:
                span.set_attribute(TIME_TO_FIRST_TOKEN, (self.first_token_ns - span.start_time_ns) / 1e6)
            if closed_early:
                span.set_attribute(STREAM_CLOSED_EARLY, True)
            if exc is not None:
                span.set_attribute(ERROR_TYPE, type(exc).__name__)
                span.record_exception(exc)
        except Exception:
            logger.exception("tracewire: could not record the stream of an openai call")
        call._end_quietly()


class _CompletionAssembler(_Assembler):
    """Chat completion chunks (and legacy text completion chunks)."""

    __slots__ = ("choices", "created", "fingerprint", "model", "object", "response_id", "usage")

    def __init__(self, call: _Call) -> None:
        super().__init__(call)
        self.choices: dict[int, dict[str, Any]] = {}
        self.response_id: Any = None
        self.model: Any = None
        self.created: Any = None
        self.fingerprint: Any = None
        self.object: Any = None
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        self.chunks += 1
        if self.response_id is None:
            self.response_id = getattr(chunk, "id", None)
            self.model = getattr(chunk, "model", None)
            self.created = getattr(chunk, "created", None)
            self.object = getattr(chunk, "object", None)
        fingerprint = getattr(chunk, "system_fingerprint", None)
        if fingerprint:
            self.fingerprint = fingerprint
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        for choice in getattr(chunk, "choices", None) or ():
            state = self.choices.get(choice.index)
            if state is None:
                state = self.choices[choice.index] = {"parts": [], "tools": {}, "role": None,
                                                      "finish_reason": None}
            if getattr(choice, "finish_reason", None):
                state["finish_reason"] = choice.finish_reason
            delta = getattr(choice, "delta", None)
            if delta is None:  # legacy completions: the text is on the choice
                text = getattr(choice, "text", None)
                if text:
                    self._keep(text, state["parts"])
                continue
            if getattr(delta, "role", None):
                state["role"] = delta.role
            content = getattr(delta, "content", None)
            if isinstance(content, str) and content:
                self._keep(content, state["parts"])
            for tool_call in getattr(delta, "tool_calls", None) or ():
                self._add_tool_call(state["tools"], tool_call)

    def _add_tool_call(self, tools: dict[int, dict[str, Any]], delta: Any) -> None:
        index = getattr(delta, "index", None) or 0
        call = tools.get(index)
        if call is None:
            call = tools[index] = {"id": None, "type": "function", "name": None, "parts": []}
        if getattr(delta, "id", None):
            call["id"] = delta.id
        function = getattr(delta, "function", None)
        if function is not None:
            if getattr(function, "name", None):
                call["name"] = function.name
            arguments = getattr(function, "arguments", None)
            if arguments:
                self._keep(arguments, call["parts"])

    def result(self) -> tuple[Any, Any, Any, list[str] | None, dict[str, int] | None]:
        legacy = self.object == "text_completion"
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            text = "".join(state["parts"])
            if legacy:
                choices.append({"index": index, "text": text, "finish_reason": state["finish_reason"]})
                continue
            message: dict[str, Any] = {"role": state["role"] or "assistant", "content": text or None}
            if state["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": t["type"],
                     "function": {"name": t["name"], "arguments": "".join(t["parts"])}}
                    for _, t in sorted(state["tools"].items())
                ]
            choices.append({"index": index, "message": message, "finish_reason": state["finish_reason"]})
        usage = _usage(_TEXT if legacy else _CHAT, self.usage)
        outputs: dict[str, Any] = {
            "id": self.response_id, "object": "text_completion" if legacy else "chat.completion",
            "created": self.created, "model": self.model, "choices": choices,
        }
        if self.fingerprint:
            outputs["system_fingerprint"] = self.fingerprint
        if self.usage is not None:
            try:
                outputs["usage"] = self.usage.model_dump(exclude_unset=True, warnings=False)
            except Exception:
                outputs["usage"] = usage
        reasons = [c["finish_reason"] for c in choices if c["finish_reason"]]
        return outputs, self.response_id, self.model, reasons or None, usage


class _ResponsesAssembler(_Assembler):
    """Responses API events: the final ``response.completed`` event carries the whole response."""

    __slots__ = ("parts", "response")

    def __init__(self, call: _Call) -> None:
        super().__init__(call)
        self.parts: list[str] = []
        self.response: Any = None

    def add(self, event: Any) -> None:
        self.chunks += 1
        event_type = getattr(event, "type", None)
        if event_type == "response.output_text.delta":
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                self._keep(delta, self.parts)
        elif event_type == "response.function_call_arguments.delta" and self.first_token_ns is None:
            self.first_token_ns = time.time_ns()
        response = getattr(event, "response", None)
        if response is not None:
            self.response = response  # created / in_progress / completed / failed / incomplete

    def result(self) -> tuple[Any, Any, Any, list[str] | None, dict[str, int] | None]:
        response = self.response
        if response is None:
            return {"output_text": "".join(self.parts)}, None, None, None, None
        if getattr(response, "status", None) in ("completed", "failed", "incomplete", "cancelled"):
            outputs: Any = _response_json(response)
        else:  # the stream stopped before the final event: what was streamed so far
            outputs = {"id": getattr(response, "id", None), "object": "response",
                       "model": getattr(response, "model", None), "status": getattr(response, "status", None),
                       "output_text": "".join(self.parts)}
        return (outputs, getattr(response, "id", None), getattr(response, "model", None),
                _finish_reasons(_RESPONSES, response), _usage(_RESPONSES, getattr(response, "usage", None)))


def _tap_stream(stream: Any, is_async: bool, assembler: _Assembler) -> None:
    """Route ``stream``'s items through ``assembler``; the span ends with the stream."""
    inner = stream._iterator
    original_close = stream.close
    # ``close()`` (also what ``with stream:`` calls on exit) ends the span first, then does what it
    # always did: close the HTTP response.
    if is_async:
        tap: Any = _AsyncTap(inner, assembler)

        async def aclose() -> None:
            tap.finish(None, True)
            await original_close()

        stream.close = aclose
    else:
        tap = _SyncTap(inner, assembler)

        def close() -> None:
            tap.finish(None, True)
            original_close()

        stream.close = close
    stream._iterator = tap


class _SyncTap:
    """The stream's iterator, seen chunk by chunk; ends the span at the end, on error, or when dropped."""

    __slots__ = ("assembler", "inner")

    def __init__(self, inner: Any, assembler: _Assembler) -> None:
        self.inner = inner
        self.assembler = assembler

    def __iter__(self) -> _SyncTap:
        return self

    def __next__(self) -> Any:
        try:
            item = self.inner.__next__()
        except StopIteration:
            self.finish(None, False)
            raise
        except BaseException as exc:
            self.finish(exc, False)
            raise
        self.observe(item)
        return item

    def observe(self, item: Any) -> None:
        try:
            self.assembler.add(item)
        except Exception:
            logger.debug("tracewire: could not read an openai stream chunk", exc_info=True)

    def finish(self, exc: BaseException | None, closed_early: bool) -> None:
        if not self.assembler.closed:
            try:
                self.assembler.finish(exc, closed_early)
            except Exception:
                logger.debug("tracewire: could not end an openai stream span", exc_info=True)

    def __del__(self) -> None:
        try:
            self.finish(None, True)
        except Exception:
            pass


class _AsyncTap(_SyncTap):
    __slots__ = ()

    def __aiter__(self) -> _AsyncTap:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self.inner.__anext__()
        except StopAsyncIteration:
            self.finish(None, False)
            raise
        except BaseException as exc:
            self.finish(exc, False)
            raise
        self.observe(item)
        return item
