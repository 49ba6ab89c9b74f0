"""``tracewire.openai.autolog()``: the real ``openai`` client against a local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracewire
import tracewire.openai
from sinks import MemorySink
from tests.conftest import only_trace
from tests.e2e.servers import REPO
from tests.openai_server import serve

openai = pytest.importorskip("openai")
mlflow_entities = pytest.importorskip("mlflow.entities")

API_KEY = "sk-test-do-not-record"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "how are you today"}]
PROMPT_TOKENS = 6  # words in MESSAGES, as the local server counts them
ANSWER = "word0 word1 word2 word3 word4"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture
def autologged() -> Iterator[None]:
    tracewire.openai.autolog()
    yield
    tracewire.openai.autolog(disable=True)


@pytest.fixture
def client(base_url: str, autologged: None) -> Iterator[Any]:
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0,
                       default_headers={"X-Secret-Header": "hdr-secret"}) as c:
        yield c


def aclient(base_url: str) -> Any:
    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)


def spans_by_name(trace: tracewire.Trace) -> dict[str, list[tracewire.Span]]:
    found: dict[str, list[tracewire.Span]] = {}
    for span in trace.data.spans:
        found.setdefault(span.name, []).append(span)
    return found


def assert_loads_in_mlflow(trace: tracewire.Trace) -> Any:
    ml = mlflow_entities.Trace.from_dict(trace.to_dict())
    assert {s.span_id for s in ml.data.spans} == {s.span_id for s in trace.data.spans}
    for span in trace.data.spans:
        [other] = [s for s in ml.data.spans if s.span_id == span.span_id]
        assert (other.name, other.span_type, other.parent_id) == (span.name, span.span_type, span.parent_id)
        assert other.inputs == span.inputs and other.outputs == span.outputs
        assert other.status.status_code.value == span.status_code
    serialized = json.dumps(trace.to_dict())
    assert API_KEY not in serialized and "hdr-secret" not in serialized
    return ml


def llm_span(trace: tracewire.Trace, name: str = "Completions") -> tracewire.Span:
    [span] = spans_by_name(trace)[name]
    assert span.end_time_ns is not None
    return span


# -- chat completions -------------------------------------------------------------------------------


def test_chat_completion_is_a_child_span_with_usage_and_genai_attributes(
    sink: MemorySink, client: Any
) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with tracewire.start_span("POST /chat") as root:
        result = client.chat.completions.create(model="gpt-test", messages=MESSAGES, temperature=0.3,
                                                max_tokens=5, tools=tools)
    assert result.choices[0].message.content == ANSWER
    trace = only_trace(sink)
    span = llm_span(trace)
    assert span.parent_id == root.span_id
    assert span.span_type == "CHAT_MODEL" and span.status == "OK"
    assert span.inputs == {"model": "gpt-test", "messages": MESSAGES, "temperature": 0.3, "max_tokens": 5,
                           "tools": tools}
    assert span.outputs == result.to_dict()
    attributes = span.attributes
    usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 5, "total_tokens": PROMPT_TOKENS + 5}
    assert attributes["mlflow.chat.tokenUsage"] == usage
    assert attributes["mlflow.message.format"] == "openai"
    assert attributes["mlflow.chat.tools"] == tools
    assert attributes["mlflow.llm.model"] == "gpt-test-0613"
    assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test", "gen_ai.request.temperature": 0.3,
        "gen_ai.request.max_tokens": 5, "gen_ai.response.model": "gpt-test-0613",
        "gen_ai.response.id": "chatcmpl-1", "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": PROMPT_TOKENS, "gen_ai.usage.output_tokens": 5,
    }
    assert attributes["server.address"] == "127.0.0.1"
    assert trace.info.token_usage == usage
    ml = assert_loads_in_mlflow(trace)
    assert ml.info.token_usage == usage


def test_call_outside_any_span_is_its_own_trace(sink: MemorySink, client: Any) -> None:
    client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    trace = only_trace(sink)
    assert [s.name for s in trace.data.spans] == ["Completions"]
    assert trace.info.token_usage == {"input_tokens": PROMPT_TOKENS, "output_tokens": 5,
                                      "total_tokens": PROMPT_TOKENS + 5}


def test_async_chat_completion(sink: MemorySink, base_url: str, autologged: None) -> None:
    async def call() -> Any:
        async with aclient(base_url) as ac:
            with tracewire.start_span("root"):
                return await ac.chat.completions.create(model="gpt-test", messages=MESSAGES)

    result = asyncio.run(call())
    span = llm_span(only_trace(sink), "AsyncCompletions")
    assert span.outputs == result.to_dict()
    assert span.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == PROMPT_TOKENS + 5


# -- streams ----------------------------------------------------------------------------------------


def _consume_sync(client: Any, **kwargs: Any) -> str:
    stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True, **kwargs)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _consume_async(base_url: str, **kwargs: Any) -> str:
    async def run() -> str:
        async with aclient(base_url) as ac:
            stream = await ac.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                                      **kwargs)
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    return asyncio.run(run())


@pytest.mark.parametrize("include_usage", [True, False], ids=["with-usage", "without-usage"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_stream_is_assembled_and_ends_when_exhausted(
    sink: MemorySink, base_url: str, client: Any, mode: str, include_usage: bool
) -> None:
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    with tracewire.start_span("root"):
        text = _consume_sync(client, **options) if mode == "sync" else _consume_async(base_url, **options)
    assert text == ANSWER
    trace = only_trace(sink)
    span = llm_span(trace, "Completions" if mode == "sync" else "AsyncCompletions")
    assert span.status == "OK"
    outputs = span.outputs
    assert outputs["choices"] == [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": ANSWER}}]
    assert outputs["id"] == "chatcmpl-1" and outputs["model"] == "gpt-test-0613"
    attributes = span.attributes
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["tracewire.stream_chunks"] == 7 + include_usage
    assert 0 < attributes["tracewire.time_to_first_token_ms"] <= span.duration_ms
    assert "tracewire.stream_closed_early" not in attributes
    if include_usage:
        usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 5, "total_tokens": PROMPT_TOKENS + 5}
        assert attributes["mlflow.chat.tokenUsage"] == usage
        assert attributes["gen_ai.usage.output_tokens"] == 5
        assert trace.info.token_usage == usage
    else:
        assert "mlflow.chat.tokenUsage" not in attributes and trace.info.token_usage is None
    assert_loads_in_mlflow(trace)


def test_streamed_tool_call_is_assembled(sink: MemorySink, client: Any) -> None:
    stream = client.chat.completions.create(model="tool-model", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    list(stream)
    outputs = llm_span(only_trace(sink)).outputs
    assert outputs["choices"] == [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    }]


@pytest.mark.parametrize("how", ["with-break", "close", "dropped", "never-read"])
def test_stream_closed_early_ends_its_span(sink: MemorySink, client: Any, how: str) -> None:
    with tracewire.start_span("root"):
        stream = client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                                max_tokens=50)
        if how == "with-break":
            with stream:
                for _ in stream:
                    break
        elif how == "close":
            next(iter(stream))
            next(iter(stream))
            stream.close()
        elif how == "dropped":
            next(iter(stream))
            del stream
            gc.collect()
        else:
            del stream
            gc.collect()
    span = llm_span(only_trace(sink))
    assert span.status == "OK"
    assert span.attributes["tracewire.stream_closed_early"] is True
    choices = span.outputs["choices"]
    assert choices == [] if how == "never-read" else choices[0]["finish_reason"] is None


def test_closing_an_exhausted_stream_is_not_early(sink: MemorySink, client: Any) -> None:
    with client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True) as stream:
        list(stream)
    assert "tracewire.stream_closed_early" not in llm_span(only_trace(sink)).attributes


def test_async_stream_closed_early(sink: MemorySink, base_url: str, autologged: None) -> None:
    async def run() -> None:
        async with aclient(base_url) as ac:
            stream = await ac.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                                      max_tokens=50)
            async with stream:
                async for _ in stream:
                    break

    asyncio.run(run())
    span = llm_span(only_trace(sink), "AsyncCompletions")
    assert span.attributes["tracewire.stream_closed_early"] is True


def test_long_stream_keeps_bounded_output(base_url: str, autologged: None) -> None:
    memory = MemorySink()
    tracewire.configure(enabled=True, sinks=[memory], batch_interval=0.01, max_value_bytes=2048)
    try:
        with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as c:
            stream = c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True,
                                               max_tokens=5000, stream_options={"include_usage": True})
            text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert len(text) > 40_000
        trace = only_trace(memory)
    finally:
        tracewire.shutdown(timeout=5)
        tracewire.configure(enabled=False)
    span = llm_span(trace)
    marker = span.outputs
    assert marker["tracewire.truncated"] is True
    # The assembler stopped keeping text at the cap: what it held was ~2 KB, not the 45 KB streamed.
    assert marker["original_size"] < 4 * 2048
    assert trace.info.trace_metadata["tracewire.truncated"] == "true"
    assert span.attributes["mlflow.chat.tokenUsage"]["output_tokens"] == 5000
    assert span.attributes["tracewire.stream_chunks"] == 5003


# -- errors -----------------------------------------------------------------------------------------

ERRORS = [(400, "BadRequestError"), (429, "RateLimitError"), (500, "InternalServerError")]


@pytest.mark.parametrize(("status", "error"), ERRORS, ids=[str(s) for s, _ in ERRORS])
def test_api_errors_reach_the_caller_and_mark_the_span(
    sink: MemorySink, client: Any, status: int, error: str
) -> None:
    with pytest.raises(getattr(openai, error)) as raised, tracewire.start_span("root"):
        client.chat.completions.create(model=f"error-{status}", messages=MESSAGES)
    assert raised.value.status_code == status
    assert raised.value.message.endswith(f"fake {status}")
    trace = only_trace(sink)
    span = llm_span(trace)
    assert span.status == "ERROR"
    assert span.attributes["error.type"] == error
    [event] = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == error
    assert_loads_in_mlflow(trace)


@pytest.mark.parametrize(("status", "error"), ERRORS, ids=[str(s) for s, _ in ERRORS])
def test_async_api_errors(sink: MemorySink, base_url: str, autologged: None, status: int, error: str) -> None:
    async def run() -> None:
        async with aclient(base_url) as ac:
            await ac.embeddings.create(model=f"error-{status}", input="x")

    with pytest.raises(getattr(openai, error)):
        asyncio.run(run())
    span = llm_span(only_trace(sink), "AsyncEmbeddings")
    assert span.status == "ERROR" and span.events[0].attributes["exception.type"] == error


def test_timeout_is_recorded(sink: MemorySink, autologged: None) -> None:
    import socket

    with socket.socket() as listener:  # accepts the connection and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = "http://127.0.0.1:%d/v1" % listener.getsockname()[1]
        with openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0, timeout=0.3) as c, \
                pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="gpt-test", messages=MESSAGES)
    span = llm_span(only_trace(sink))
    assert span.status == "ERROR" and span.attributes["error.type"] == "APITimeoutError"


def test_error_mid_stream_is_recorded(sink: MemorySink, client: Any) -> None:
    seen = []
    with pytest.raises(openai.APIError, match="mid-stream failure"):
        for chunk in client.chat.completions.create(model="stream-error", messages=MESSAGES, stream=True):
            seen.append(chunk)
    span = llm_span(only_trace(sink))
    assert len(seen) == 3
    assert span.status == "ERROR" and span.attributes["error.type"] == "APIError"
    assert span.outputs["choices"][0]["message"]["content"] == "word0 word1"


# -- other APIs -------------------------------------------------------------------------------------


def test_responses_api(sink: MemorySink, client: Any) -> None:
    with tracewire.start_span("root"):
        result = client.responses.create(model="gpt-resp", input="say something nice",
                                          instructions="be brief")
        events = list(client.responses.create(model="gpt-resp", input="say something nice", stream=True))
    assert result.output_text == ANSWER
    assert events[-1].type == "response.completed"
    trace = only_trace(sink)
    plain, streamed = spans_by_name(trace)["Responses"]
    usage = {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8, "cache_read_input_tokens": 0}
    for span in (plain, streamed):
        assert span.span_type == "CHAT_MODEL" and span.status == "OK"
        assert span.outputs["output"][0]["content"][0]["text"] == ANSWER
        assert span.attributes["mlflow.chat.tokenUsage"] == usage
        assert span.attributes["gen_ai.response.finish_reasons"] == ["completed"]
        assert span.attributes["gen_ai.response.id"] == "resp_1"
    assert plain.inputs == {"model": "gpt-resp", "input": "say something nice", "instructions": "be brief"}
    assert streamed.attributes["tracewire.stream_chunks"] == 7
    assert "tracewire.time_to_first_token_ms" in streamed.attributes
    assert trace.info.token_usage == {"input_tokens": 6, "output_tokens": 10, "total_tokens": 16,
                                      "cache_read_input_tokens": 0}
    assert_loads_in_mlflow(trace)


def test_responses_stream_closed_before_the_final_event(sink: MemorySink, client: Any) -> None:
    stream = client.responses.create(model="gpt-resp", input="hi", stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    span = llm_span(only_trace(sink), "Responses")
    assert span.outputs["status"] == "in_progress" and span.outputs["output_text"] == "word0"
    assert span.attributes["tracewire.stream_closed_early"] is True


def test_embeddings_and_legacy_completions(sink: MemorySink, client: Any) -> None:
    with tracewire.start_span("root"):
        embedded = client.embeddings.create(model="emb-test", input=["one two", "three"])
        completed = client.completions.create(model="legacy-test", prompt="once upon a time", max_tokens=3)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="legacy-test", prompt="once upon", max_tokens=3, stream=True))
    assert len(embedded.data) == 2 and streamed == completed.choices[0].text == "word0 word1 word2"
    trace = only_trace(sink)
    [embedding] = spans_by_name(trace)["Embeddings"]
    assert embedding.span_type == "EMBEDDING"
    assert embedding.attributes["gen_ai.operation.name"] == "embeddings"
    assert embedding.attributes["mlflow.chat.tokenUsage"] == {"input_tokens": 3, "output_tokens": 0,
                                                               "total_tokens": 3}
    assert len(embedding.outputs["data"]) == 2
    plain, stream = spans_by_name(trace)["Completions"]
    for span in (plain, stream):
        assert span.span_type == "CHAT_MODEL"  # SPEC §3 (MLflow's autolog says LLM here)
        assert span.attributes["gen_ai.operation.name"] == "text_completion"
        assert span.attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert plain.outputs["choices"][0]["text"] == "word0 word1 word2"
    assert stream.outputs["choices"] == [{"index": 0, "text": "word0 word1 word2", "finish_reason": "length"}]
    assert plain.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 4 + 3
    assert_loads_in_mlflow(trace)


def test_with_raw_response(sink: MemorySink, client: Any) -> None:
    with tracewire.start_span("root"):
        raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
        raw_stream = client.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES,
                                                                      stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw_stream.parse())
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().choices[0].message.content == ANSWER == text
    plain, streamed = spans_by_name(only_trace(sink))["Completions"]
    assert plain.outputs == raw.parse().to_dict()
    assert "extra_headers" not in plain.inputs  # the raw-response marker header is not recorded
    assert streamed.outputs["choices"][0]["message"]["content"] == ANSWER


def test_chat_completions_stream_helper(sink: MemorySink, client: Any) -> None:
    with client.chat.completions.stream(model="gpt-test", messages=MESSAGES) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == ANSWER
    span = llm_span(only_trace(sink))
    assert span.outputs["choices"][0]["message"]["content"] == ANSWER


# -- switching it on and off ------------------------------------------------------------------------


def test_autolog_is_idempotent_and_disable_restores_the_originals(sink: MemorySink, base_url: str) -> None:
    from openai.resources.chat.completions import AsyncCompletions, Completions
    from openai.resources.embeddings import Embeddings

    originals = (Completions.create, AsyncCompletions.create, Embeddings.create)
    tracewire.openai.autolog()
    tracewire.openai.autolog()
    try:
        assert Completions.create is not originals[0]
        with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as c:
            c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert [s.name for s in only_trace(sink).data.spans] == ["Completions"]  # one span, not two
    finally:
        tracewire.openai.autolog(disable=True)
    assert (Completions.create, AsyncCompletions.create, Embeddings.create) == originals
    tracewire.openai.autolog(disable=True)  # disabling twice is fine too


def test_tracing_off_calls_straight_through(base_url: str, autologged: None) -> None:
    memory = MemorySink()
    tracewire.configure(enabled=False, sinks=[memory])
    with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as c:
        result = c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="gpt-test", messages=MESSAGES, stream=True) if ch.choices)
    assert result.choices[0].message.content == ANSWER == text
    assert tracewire.flush() and memory.traces == []
    tracewire.shutdown()


def test_a_tracing_failure_never_changes_what_the_caller_gets(
    sink: MemorySink, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracewire.instrumentation import LiveSpan

    def broken(self: LiveSpan, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracing bug")

    expected = client.chat.completions.create(model="gpt-test", messages=MESSAGES).to_dict()
    expected_text = _consume_sync(client)
    monkeypatch.setattr(LiveSpan, "set_outputs", broken)
    monkeypatch.setattr(LiveSpan, "set_attribute", broken)
    assert client.chat.completions.create(model="gpt-test", messages=MESSAGES).to_dict() == expected
    assert _consume_sync(client) == expected_text
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=MESSAGES)


def test_configure_autolog_validates_names(autologged: None) -> None:
    with pytest.raises(ValueError, match="unknown integration"):
        tracewire.configure(enabled=True, autolog="openai,langchain")
    settings = tracewire.configure(enabled=False, autolog=["OpenAI"])
    assert settings.autolog == ("openai",)


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACING_", "ENABLE_TRACING"))}
    full_env.update(PYTHONPATH=str(REPO), **env)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


CHECK = (
    "import sys, tracewire\n"
    "loaded = 'openai' in sys.modules\n"
    "from openai.resources.chat.completions import Completions\n"
    "print(loaded, Completions.create.__code__.co_filename.endswith('tracewire/openai.py'))\n"
)


def test_tracing_autolog_env_patches_at_start_up_and_import_stays_lazy() -> None:
    assert _run(CHECK, ENABLE_TRACING="true", TRACING_AUTOLOG="openai") == "True True"
    assert _run(CHECK, TRACING_AUTOLOG="openai") == "False False"
    assert _run(CHECK) == "False False"
    configured = _run("import tracewire\ntracewire.configure(enabled=True, autolog='openai')\n" + CHECK)
    assert configured == "True True"


# -- malformed answers -------------------------------------------------------------------------------


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.text(max_size=8))
_usage = st.one_of(_scalar, st.fixed_dictionaries({}, optional={
    "prompt_tokens": _scalar, "completion_tokens": _scalar, "total_tokens": _scalar,
    "prompt_tokens_details": st.one_of(
        _scalar, st.fixed_dictionaries({}, optional={"cached_tokens": _scalar})),
}))
_tool_call = st.one_of(_scalar, st.fixed_dictionaries({}, optional={
    "index": _scalar, "id": _scalar, "type": _scalar,
    "function": st.one_of(
        _scalar, st.fixed_dictionaries({}, optional={"name": _scalar, "arguments": _scalar})),
}))
_delta = st.one_of(_scalar, st.fixed_dictionaries({}, optional={
    "role": _scalar, "content": st.one_of(_scalar, st.lists(_scalar, max_size=2)),
    "tool_calls": st.one_of(_scalar, st.lists(_tool_call, max_size=2)),
}))
_choice = st.one_of(_scalar, st.fixed_dictionaries({}, optional={
    "index": _scalar, "delta": _delta, "message": _delta, "text": _scalar, "finish_reason": _scalar,
}))
_body = st.fixed_dictionaries({}, optional={
    "id": _scalar, "object": st.sampled_from(["chat.completion.chunk", "text_completion", "x"]),
    "model": _scalar, "created": _scalar, "system_fingerprint": _scalar,
    "choices": st.one_of(_scalar, st.lists(_choice, max_size=3)), "usage": _usage,
})


def _in_process_client(bodies: list[dict[str, Any]], stream: bool) -> Any:
    import httpx2

    def handle(request: Any) -> Any:
        if stream:
            events = [b"data: " + json.dumps(b).encode() + b"\n\n" for b in bodies] + [b"data: [DONE]\n\n"]
            return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   content=b"".join(events))
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=json.dumps(bodies[0]))

    http = httpx2.Client(transport=httpx2.MockTransport(handle), base_url="http://127.0.0.1:9/v1")
    return openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key=API_KEY, max_retries=0, http_client=http)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json", warnings=False) if hasattr(value, "model_dump") else value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(_body, min_size=1, max_size=5), stream=st.booleans())
def test_malformed_answers_reach_the_caller_unchanged_and_end_the_span(
    sink: MemorySink, bodies: list[dict[str, Any]], stream: bool
) -> None:
    def call() -> Any:
        with _in_process_client(bodies, stream) as c:
            kwargs = {"stream": True} if stream else {}
            try:
                result = c.chat.completions.create(model="m", messages=MESSAGES, **kwargs)
                return [_dump(x) for x in result] if stream else _dump(result)
            except Exception as exc:  # the client's own verdict on the body: must be the same both ways
                return repr(exc)

    expected = call()
    sink.clear()
    tracewire.openai.autolog()
    try:
        with tracewire.start_span("root"):
            got = call()
    finally:
        tracewire.openai.autolog(disable=True)
    assert got == expected
    trace = only_trace(sink)
    sink.clear()
    span = llm_span(trace)
    assert span.status in ("OK", "ERROR")
    assert mlflow_entities.Trace.from_dict(trace.to_dict()).info.trace_id == trace.info.trace_id
