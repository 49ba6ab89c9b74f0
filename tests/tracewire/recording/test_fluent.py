from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.to_thread
import pytest

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import SpanType


def by_name(trace: tracewire.Trace) -> dict[str, tracewire.Span]:
    return {span.name: span for span in trace.data.spans}


def test_decorator_records_inputs_outputs_and_parentage(sink: MemorySink) -> None:
    @tracewire.trace(span_type=SpanType.RETRIEVER)
    def retrieve(query: str, k: int = 3) -> list[str]:
        return [query] * k

    @tracewire.trace(name="answer", span_type=SpanType.CHAIN, attributes={"model": "m1"})
    def answer(question: str) -> str:
        return " ".join(retrieve(question, k=2))

    assert answer("hi") == "hi hi"
    trace = only_trace(sink)
    spans = by_name(trace)
    root = spans["answer"]
    child = spans["retrieve"]
    assert root.parent_id is None
    assert child.parent_id == root.span_id
    assert root.inputs == {"question": "hi"}
    assert root.outputs == "hi hi"
    assert child.inputs == {"query": "hi", "k": 2}
    assert child.outputs == ["hi", "hi"]
    assert root.span_type == "CHAIN" and child.span_type == "RETRIEVER"
    assert root.get_attribute("model") == "m1"
    assert trace.info.tags["mlflow.traceName"] == "answer"
    assert trace.info.state == "OK"
    assert {s.trace_id for s in trace.data.spans} == {trace.info.trace_id}
    assert trace.info.trace_id.startswith("tr-") and len(trace.info.trace_id) == 35


def test_defaults_are_bound_and_self_is_dropped(sink: MemorySink) -> None:
    class Agent:
        @tracewire.trace
        def run(self, task: str, retries: int = 2) -> str:
            return task

    Agent().run("t")
    span = only_trace(sink).data.spans[0]
    assert span.inputs == {"task": "t", "retries": 2}


def test_exception_is_recorded_and_reraised_unchanged(sink: MemorySink) -> None:
    class Boom(Exception):
        pass

    error = Boom("bad thing")

    @tracewire.trace
    def fail() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        fail()
    assert caught.value is error
    trace = only_trace(sink)
    span = trace.data.spans[0]
    assert trace.info.state == "ERROR"
    assert span.status_code == "ERROR"
    event = span.events[0]
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "Boom"
    assert event.attributes["exception.message"] == "bad thing"
    assert "raise error" in event.attributes["exception.stacktrace"]


def test_async_function_and_tasks_keep_parent(sink: MemorySink) -> None:
    @tracewire.trace
    async def leaf(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @tracewire.trace
    async def root() -> list[int]:
        return list(await asyncio.gather(*(leaf(i) for i in range(3))))

    assert asyncio.run(root()) == [0, 1, 2]
    trace = only_trace(sink)
    root_span = trace.root_span
    assert root_span is not None
    children = [s for s in trace.data.spans if s is not root_span]
    assert len(children) == 3
    assert all(s.parent_id == root_span.span_id for s in children)


def test_thousand_concurrent_asyncio_traces_do_not_cross_talk(sink: MemorySink) -> None:
    @tracewire.trace
    async def step(request_no: int, depth: int) -> int:
        await asyncio.sleep(0)
        if depth:
            return await step(request_no, depth - 1)
        return request_no

    @tracewire.trace
    async def handle(request_no: int) -> int:
        tracewire.update_current_trace(client_request_id=f"req-{request_no}")
        await asyncio.sleep(0)
        return await step(request_no, 2)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(handle(i) for i in range(1000))))

    assert asyncio.run(main()) == list(range(1000))
    assert tracewire.flush(timeout=30)
    traces = sink.traces
    assert len(traces) == 1000
    seen = set()
    for trace in traces:
        number = int(trace.info.client_request_id.removeprefix("req-"))
        seen.add(number)
        assert len(trace.data.spans) == 4
        ids = {s.span_id: s for s in trace.data.spans}
        for span in trace.data.spans:
            assert span.inputs["request_no"] == number
            assert span.parent_id is None or span.parent_id in ids
    assert seen == set(range(1000))


def test_to_thread_and_anyio_worker_threads_keep_parent(sink: MemorySink) -> None:
    @tracewire.trace
    def blocking(x: int) -> int:
        return x

    @tracewire.trace
    async def root() -> None:
        await asyncio.to_thread(blocking, 1)
        await anyio.to_thread.run_sync(blocking, 2)

    asyncio.run(root())
    trace = only_trace(sink)
    root_span = trace.root_span
    assert root_span is not None
    kids = [s for s in trace.data.spans if s.parent_id == root_span.span_id]
    assert sorted(s.inputs["x"] for s in kids) == [1, 2]


def test_propagate_carries_span_into_thread_pool(sink: MemorySink) -> None:
    @tracewire.trace
    def work(i: int) -> int:
        return i * i

    @tracewire.trace
    def root() -> list[int]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(tracewire.propagate(work), range(8)))

    assert root() == [i * i for i in range(8)]
    trace = only_trace(sink)
    assert trace.root_span is not None
    assert len([s for s in trace.data.spans if s.parent_id == trace.root_span.span_id]) == 8


def test_plain_thread_without_propagate_starts_its_own_trace(sink: MemorySink) -> None:
    @tracewire.trace
    def work() -> None:
        pass

    @tracewire.trace
    def root() -> None:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    root()
    assert tracewire.flush()
    assert len(sink.traces) == 2


def test_nested_threads_with_propagate(sink: MemorySink) -> None:
    @tracewire.trace
    def inner(i: int) -> int:
        return i

    @tracewire.trace
    def middle(i: int) -> int:
        with ThreadPoolExecutor(2) as pool:
            return sum(pool.map(tracewire.propagate(inner), [i, i]))

    @tracewire.trace
    def root() -> int:
        with ThreadPoolExecutor(2) as pool:
            return sum(pool.map(tracewire.propagate(middle), [1, 2]))

    assert root() == 6
    trace = only_trace(sink)
    spans = trace.data.spans
    assert len(spans) == 7
    ids = {s.span_id: s for s in spans}
    for span in spans:
        if span.name.endswith("inner"):
            assert ids[span.parent_id].name.endswith("middle")
        if span.name.endswith("middle"):
            assert ids[span.parent_id].name.endswith("root")


def test_generator_records_chunks_and_children(sink: MemorySink) -> None:
    @tracewire.trace
    def token(i: int) -> str:
        return f"t{i}"

    @tracewire.trace(span_type=SpanType.LLM)
    def stream(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield token(i)

    assert list(stream(3)) == ["t0", "t1", "t2"]
    trace = only_trace(sink)
    root = trace.root_span
    assert root is not None and root.outputs == ["t0", "t1", "t2"]
    assert len([s for s in trace.data.spans if s.parent_id == root.span_id]) == 3


def test_generator_output_reducer(sink: MemorySink) -> None:
    @tracewire.trace(output_reducer="".join)
    def stream():  # type: ignore[no-untyped-def]
        yield "a"
        yield "b"

    assert list(stream()) == ["a", "b"]
    assert only_trace(sink).data.spans[0].outputs == "ab"


def test_generator_closed_early_ends_span(sink: MemorySink) -> None:
    finalized = []

    @tracewire.trace
    def stream():  # type: ignore[no-untyped-def]
        try:
            yield from range(10)
        finally:
            finalized.append(True)

    gen = stream()
    assert next(gen) == 0
    assert next(gen) == 1
    gen.close()
    assert finalized == [True]
    span = only_trace(sink).data.spans[0]
    assert span.outputs == [0, 1]
    assert span.get_attribute("tracewire.generator_closed_early") is True
    assert span.end_time_ns is not None


def test_generator_abandoned_by_consumer_ends_span(sink: MemorySink) -> None:
    @tracewire.trace
    def stream():  # type: ignore[no-untyped-def]
        yield from range(10)

    gen = stream()
    next(gen)
    del gen
    gc.collect()
    span = only_trace(sink).data.spans[0]
    assert span.outputs == [0]


def test_generator_does_not_leak_context_to_consumer(sink: MemorySink) -> None:
    @tracewire.trace
    def stream():  # type: ignore[no-untyped-def]
        yield 1
        yield 2

    for _ in stream():
        assert tracewire.get_current_active_span() is None
    assert tracewire.flush()


def test_generator_exception_recorded(sink: MemorySink) -> None:
    @tracewire.trace
    def stream():  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError("mid-stream")

    with pytest.raises(ValueError, match="mid-stream"):
        list(stream())
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert trace.data.spans[0].outputs == [1]


def test_async_generators_nest(sink: MemorySink) -> None:
    @tracewire.trace
    async def inner(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @tracewire.trace
    async def outer():  # type: ignore[no-untyped-def]
        async for i in inner(2):
            yield i * 10

    async def consume() -> list[int]:
        out = []
        async for item in outer():
            assert tracewire.get_current_active_span() is None
            out.append(item)
        return out

    assert asyncio.run(consume()) == [0, 10]
    trace = only_trace(sink)
    spans = by_name(trace)
    outer_span = next(s for n, s in spans.items() if n.endswith("outer"))
    inner_span = next(s for n, s in spans.items() if n.endswith("inner"))
    assert inner_span.parent_id == outer_span.span_id
    assert outer_span.outputs == [0, 10] and inner_span.outputs == [0, 1]


def test_async_generator_closed_early_ends_span(sink: MemorySink) -> None:
    @tracewire.trace
    async def stream():  # type: ignore[no-untyped-def]
        for i in range(10):
            yield i

    async def main() -> None:
        agen = stream()
        assert await agen.__anext__() == 0
        await agen.aclose()

    asyncio.run(main())
    span = only_trace(sink).data.spans[0]
    assert span.outputs == [0]
    assert span.get_attribute("tracewire.generator_closed_early") is True


def test_start_span_context_manager(sink: MemorySink) -> None:
    with tracewire.start_span("root", span_type=SpanType.AGENT) as root:
        root.set_inputs({"q": 1})
        with tracewire.start_span("tool", span_type=SpanType.TOOL, attributes={"a": 1}) as tool:
            assert tracewire.get_current_active_span() is tool
            tool.set_outputs("done")
            tool.add_event("called", {"n": 2})
        root.set_attributes({"x": [1, 2]})
        root.set_outputs("ok")
    assert tracewire.get_current_active_span() is None
    trace = only_trace(sink)
    spans = by_name(trace)
    assert spans["tool"].parent_id == spans["root"].span_id
    assert spans["tool"].events[0].name == "called"
    assert spans["tool"].events[0].attributes == {"n": 2}
    assert spans["root"].get_attribute("x") == [1, 2]
    assert spans["root"].span_type == "AGENT"


def test_start_span_records_exception(sink: MemorySink) -> None:
    with pytest.raises(KeyError), tracewire.start_span("root"):
        raise KeyError("k")
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert trace.data.spans[0].events[0].attributes["exception.type"] == "KeyError"


def test_set_status_manually(sink: MemorySink) -> None:
    with tracewire.start_span("root") as span:
        span.set_status("ERROR", "handled failure")
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    assert trace.data.spans[0].status_message == "handled failure"


def test_update_current_trace(sink: MemorySink) -> None:
    with tracewire.start_span("root"):
        tracewire.update_current_trace(
            tags={"team": "search"},
            metadata={"tenant": "acme", "n": 3},
            client_request_id="req-7",
            request_preview="what is X?",
            response_preview="X is Y",
            session_id="sess-1",
            user="user-1",
        )
    info = only_trace(sink).info
    assert info.tags["team"] == "search"
    assert info.trace_metadata["tenant"] == "acme"
    assert info.trace_metadata["n"] == "3"
    assert info.client_request_id == "req-7"
    assert info.request_preview == "what is X?"
    assert info.response_preview == "X is Y"
    assert info.trace_metadata["mlflow.trace.session"] == "sess-1"
    assert info.trace_metadata["mlflow.trace.user"] == "user-1"


def test_update_current_trace_state_overrides(sink: MemorySink) -> None:
    with tracewire.start_span("root"):
        tracewire.update_current_trace(state="ERROR")
    assert only_trace(sink).info.state == "ERROR"


def test_update_outside_trace_is_noop(sink: MemorySink) -> None:
    tracewire.update_current_trace(tags={"a": "b"})
    assert tracewire.flush()
    assert sink.traces == []


def test_previews_default_to_root_inputs_and_outputs(sink: MemorySink) -> None:
    @tracewire.trace
    def root(question: str) -> str:
        return "answer " * 400

    root("why?")
    info = only_trace(sink).info
    assert info.request_preview == '{"question":"why?"}'
    assert info.response_preview is not None and len(info.response_preview) == 1000


def test_active_and_last_trace_ids(sink: MemorySink) -> None:
    assert tracewire.get_active_trace_id() is None
    with tracewire.start_span("root") as span:
        assert tracewire.get_active_trace_id() == span.trace_id
        inside = span.trace_id
    assert tracewire.get_active_trace_id() is None
    assert tracewire.get_last_active_trace_id() == inside


def test_token_usage_is_aggregated(sink: MemorySink) -> None:
    @tracewire.trace(span_type=SpanType.CHAT_MODEL)
    def llm(prompt: str) -> str:
        span = tracewire.get_current_active_span()
        assert span is not None
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        span.set_attribute("mlflow.chat.tokenUsage", usage)
        return "x"

    @tracewire.trace
    def root() -> None:
        llm("a")
        llm("b")

    root()
    info = only_trace(sink).info
    assert info.token_usage == {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30}


def test_disabled_tracing_does_nothing() -> None:
    memory = MemorySink()
    tracewire.configure(enabled=False, sinks=[memory])
    try:
        @tracewire.trace
        def f(x: int) -> int:
            return x + 1

        with tracewire.start_span("s") as span:
            span.set_attribute("a", 1)
            assert f(1) == 2
        assert tracewire.get_current_active_span() is None
        assert tracewire.flush()
        assert memory.traces == []
        assert tracewire.stats()["accepted"] == 0
    finally:
        tracewire.shutdown()


def test_head_sampling_zero_records_nothing() -> None:
    memory = MemorySink()
    tracewire.configure(enabled=True, sinks=[memory], sample_rate=0.0)
    try:
        @tracewire.trace
        def child() -> int:
            assert tracewire.get_current_active_span() is None
            return 1

        with tracewire.start_span("root") as span:
            span.set_inputs("x")
            child()
        assert tracewire.flush()
        assert memory.traces == []
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


# -- streams larger than a trace may hold -----------------------------------------------------------

STREAM_CHUNK = 64 * 1024


@tracewire.trace(name="big_stream")
def big_stream(total: int) -> Iterator[str]:
    block = "x" * STREAM_CHUNK
    for i in range(total // STREAM_CHUNK):
        yield block[:-8] + f"{i:08d}"  # a new string each time, as a real stream produces


@tracewire.trace(name="big_astream")
async def big_astream(total: int) -> AsyncIterator[bytes]:
    block = b"y" * STREAM_CHUNK
    for i in range(total // STREAM_CHUNK):
        yield block[:-8] + b"%08d" % i


def _peak_while(consume: Callable[[], int]) -> tuple[int, int]:
    tracemalloc.start()
    try:
        seen = consume()
        return seen, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["generator", "async-generator"])
def test_streamed_chunks_are_capped_while_streaming(sink: MemorySink, kind: str) -> None:
    total = 200 * 1024 * 1024

    def consume() -> int:
        with tracewire.start_span("request"):
            if kind == "generator":
                return sum(len(chunk) for chunk in big_stream(total))

            async def drain() -> int:
                return sum([len(chunk) async for chunk in big_astream(total)])

            return asyncio.run(drain())

    seen, peak = _peak_while(consume)
    assert seen == total
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held while streaming {total / 2**20:.0f} MiB"
    trace = only_trace(sink)
    span = next(s for s in trace.data.spans if s.name in ("big_stream", "big_astream"))
    outputs = span.outputs
    assert outputs["tracewire.truncated"] is True
    assert outputs["original_size"] >= total
    assert outputs["preview"].startswith('["xxx' if kind == "generator" else '["yyy')
    assert "TRACE_TRUNCATED" in sink.records[0].logging_error_codes
    assert len(sink.records[0].payload) < 1024 * 1024


def test_capped_stream_keeps_what_fits_and_redacts_chunks(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01, max_value_bytes=4096)

    @tracewire.trace(output_reducer=lambda chunks: [c["text"] for c in chunks])
    def events(n: int) -> Iterator[dict[str, str]]:
        for i in range(n):
            yield {"text": f"part-{i}", "api_key": "zq9-SECRET"}

    @tracewire.trace
    def small(n: int) -> Iterator[dict[str, str]]:
        yield from ({"text": f"s{i}", "session_token": "zq9-SECRET"} for i in range(n))

    with tracewire.start_span("request"):
        assert len(list(events(1000))) == 1000
        assert list(small(2))[1]["session_token"] == "zq9-SECRET"  # the caller's values untouched
    trace = only_trace(sink)
    spans = {s.name: s for s in trace.data.spans}
    marker = spans["events"].outputs
    assert marker["tracewire.truncated"] is True
    assert marker["preview"].startswith('["part-0","part-1"')
    assert spans["small"].outputs == [
        {"text": "s0", "session_token": "[REDACTED]"}, {"text": "s1", "session_token": "[REDACTED]"}]
    assert b"zq9-SECRET" not in sink.records[0].payload


# -- names and decorator placement (issue 12; differential versions in test_mlflow_parity.py) ----


def test_span_names_are_the_function_name_and_carry_span_function_name(sink: MemorySink) -> None:
    class Calculator:
        @tracewire.trace
        def predict(self, x: int) -> int:
            return x

    def outer() -> int:
        @tracewire.trace
        def step(y: int) -> int:
            return y

        return step(1)

    square = tracewire.trace(lambda z: z * z)

    @tracewire.trace(name="explicit")
    def named() -> int:
        return Calculator().predict(outer()) + square(2)

    named()
    trace = only_trace(sink)
    names = [(s.name, s.get_attribute("mlflow.spanFunctionName")) for s in trace.data.spans]
    assert names == [("explicit", "named"), ("step", "step"), ("predict", "predict"),
                     ("<lambda>", "<lambda>")]
    assert trace.info.tags["mlflow.traceName"] == "explicit"


def test_trace_above_classmethod_never_raises_in_the_users_call(sink: MemorySink) -> None:
    class Model:
        @tracewire.trace
        @classmethod
        def load(cls, path: str) -> str:
            return f"{cls.__name__}:{path}"

        @tracewire.trace
        @staticmethod
        def version() -> int:
            return 3

    assert Model.load("p") == "Model:p" and Model().load("q") == "Model:q"
    assert Model.version() == 3 and Model().version() == 3
    assert tracewire.flush(timeout=10)
    spans = [t.data.spans[0] for t in sink.traces]
    assert sorted((s.name, str(s.inputs)) for s in spans) == [
        ("load", "{'path': 'p'}"), ("load", "{'path': 'q'}"), ("version", "{}"), ("version", "{}")]
    # Off, the decorated methods still work (and record nothing).
    tracewire.configure(enabled=False)
    assert Model.load("r") == "Model:r" and Model.version() == 3


def test_a_stale_current_span_of_a_finished_trace_is_no_parent(sink: MemorySink) -> None:
    """A context that kept an ended span (asyncio copies contexts into callbacks): children of
    a span that ended in a live trace still attach; once its trace finished, a new trace starts."""
    from tracewire import context

    with tracewire.start_span("root") as root:
        with tracewire.start_span("ended") as ended:
            pass
        token = context.current_span.set(ended)
        try:
            with tracewire.start_span("child-of-ended"):
                pass
        finally:
            context.current_span.reset(token)
    token = context.current_span.set(root)  # what a leaked context would hold
    try:
        with tracewire.start_span("after"):
            pass
    finally:
        context.current_span.reset(token)
    assert tracewire.flush()
    traces = {t.root_span.name: t for t in sink.traces if t.root_span is not None}
    assert set(traces) == {"root", "after"}
    names = {s.name: s for s in traces["root"].data.spans}
    assert names["child-of-ended"].parent_id == names["ended"].span_id
