from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import SpanType


def test_client_builds_a_trace_across_threads(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    root = client.start_trace("agent", span_type=SpanType.AGENT, inputs={"task": "t"},
                              tags={"team": "a"}, metadata={"tenant": "x"})
    errors: list[BaseException] = []

    def tool(i: int) -> None:
        try:
            span = client.start_span(f"tool-{i}", trace_id=root.trace_id, parent_id=root.span_id,
                                     span_type=SpanType.TOOL, inputs={"i": i})
            client.end_span(root.trace_id, span.span_id, outputs=i * 2, attributes={"k": i})
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=tool, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    client.end_trace(root.trace_id, outputs="done")
    trace = only_trace(sink)
    assert trace.info.tags["team"] == "a"
    assert trace.info.trace_metadata["tenant"] == "x"
    tools = [s for s in trace.data.spans if s.name.startswith("tool-")]
    assert len(tools) == 20
    assert all(s.parent_id == root.span_id and s.outputs == s.inputs["i"] * 2 for s in tools)
    assert trace.root_span is not None and trace.root_span.outputs == "done"


def test_client_end_trace_closes_open_spans_and_error_status(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    root = client.start_trace("r")
    client.start_span("left-open", root.trace_id, root.span_id)
    client.end_trace(root.trace_id, status="ERROR")
    trace = only_trace(sink)
    assert trace.info.state == "ERROR"
    open_span = next(s for s in trace.data.spans if s.name == "left-open")
    assert open_span.end_time_ns is not None
    assert open_span.get_attribute("tracewire.ended_by_end_trace") is True


def test_client_with_unknown_ids_is_harmless(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    span = client.start_span("x", "tr-" + "0" * 32, "0" * 16)
    span.set_attribute("a", 1)
    client.end_span("tr-nope", "nope")
    client.end_trace("tr-nope")
    assert tracewire.flush()
    assert sink.traces == []


@pytest.fixture
def bounded(request: pytest.FixtureRequest) -> Iterator[MemorySink]:
    memory = MemorySink()
    tracewire.configure(enabled=True, sinks=[memory], batch_interval=0.01, **request.param)
    try:
        yield memory
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


@pytest.mark.parametrize("bounded", [{"client_max_traces": 3}], indirect=True)
def test_registry_drops_the_oldest_unended_traces_beyond_the_count(
    bounded: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    client = tracewire.TracingClient()
    before = tracewire.stats()["client_traces_evicted"]
    roots = [client.start_trace(f"t{i}") for i in range(5)]
    stats = tracewire.stats()
    assert stats["client_traces_open"] == 3
    assert stats["client_traces_evicted"] == before + 2
    assert "dropped" in caplog.text and "TRACING_CLIENT_MAX_TRACES=3" in caplog.text
    # The dropped ones are gone: children are no-ops and ending them exports nothing.
    orphan = client.start_span("child", roots[0].trace_id, roots[0].span_id)
    assert orphan.trace_id == ""
    client.end_trace(roots[0].trace_id)
    client.end_span(roots[1].trace_id, roots[1].span_id)
    for root in roots[2:]:
        client.end_trace(root.trace_id, outputs="ok")
    assert tracewire.flush()
    assert sorted(t.data.spans[0].name for t in bounded.traces) == ["t2", "t3", "t4"]
    assert tracewire.stats()["client_traces_open"] == 0


@pytest.mark.parametrize("bounded", [{"client_trace_ttl": 0.05}], indirect=True)
def test_registry_drops_traces_older_than_the_age(bounded: MemorySink) -> None:
    client = tracewire.TracingClient()
    before = tracewire.stats()["client_traces_evicted"]
    old = client.start_trace("old")
    time.sleep(0.1)  # let the trace age past client_trace_ttl (not waiting for an export)
    young = client.start_trace("young")
    assert tracewire.stats()["client_traces_evicted"] == before + 1
    assert client.start_span("late", old.trace_id, old.span_id).trace_id == ""
    client.end_trace(young.trace_id)
    client.end_trace(old.trace_id)
    assert tracewire.flush()
    assert [t.data.spans[0].name for t in bounded.traces] == ["young"]


def test_registry_settings_fail_loudly_when_bad() -> None:
    with pytest.raises(ValueError, match="client_max_traces"):
        tracewire.configure(client_max_traces=0)
    with pytest.raises(ValueError, match="client_trace_ttl"):
        tracewire.configure(client_trace_ttl="soon")


def test_100k_unended_traces_keep_memory_bounded() -> None:
    """100,000 traces never ended: the registry stays at its default bound (10,000), memory flat."""
    script = textwrap.dedent("""
        import json, resource, tracemalloc, tracewire
        from sinks import MemorySink

        def rss_mb():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize() / 2**20

        tracewire.configure(enabled=True, sinks=[MemorySink()])
        client = tracewire.TracingClient()
        tracemalloc.start()
        out = {}
        for i in range(100_000):
            root = client.start_trace("never-ended", inputs={"i": i, "pad": "x" * 200})
            client.start_span("child", root.trace_id, root.span_id, inputs={"i": i})
            if i + 1 in (40_000, 100_000):  # RSS settles by 40,000
                out[i + 1] = {"traced_mb": tracemalloc.get_traced_memory()[0] / 2**20, "rss_mb": rss_mb(),
                              **tracewire.stats()}
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    at = {int(k): v for k, v in json.loads(done.stdout).items()}
    assert at[40_000]["client_traces_open"] == at[100_000]["client_traces_open"] == 10_000
    assert at[100_000]["client_traces_evicted"] == 90_000
    assert at[100_000]["traced_mb"] - at[40_000]["traced_mb"] < 5, at
    assert at[100_000]["rss_mb"] - at[40_000]["rss_mb"] < 10  # unbounded: +120 MB, at
    assert "dropped" in done.stderr and done.stderr.count("dropped") < 5  # logged, rate-limited


# -- client spans under fluent spans (issue 12) -------------------------------------------------


def test_client_span_under_a_fluent_span_started_before_any_client_exists() -> None:
    """The issue's exact snippet, in a fresh process: the client is created inside the ``with``."""
    script = textwrap.dedent("""
        import json, tracewire
        from sinks import MemorySink
        sink = MemorySink()
        tracewire.configure(enabled=True, sinks=[sink])
        import threading
        with tracewire.start_span("root") as r:
            client = tracewire.TracingClient()
            c = client.start_span("c", r.trace_id, r.span_id, inputs={"q": 1})
            c.end(outputs="x")
            # A thread without the context finds the trace too (by ids only).
            def work():
                s = client.start_span("t", r.trace_id, r.span_id)
                client.end_span(r.trace_id, s.span_id, outputs="y")
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
        assert tracewire.flush(timeout=10)
        print(json.dumps([[s.name, s.parent_id == r.span_id, s.outputs] for t in sink.traces
                          for s in t.data.spans]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["root", False, None], ["c", True, "x"], ["t", True, "y"]]
    assert "no live span" not in done.stderr


def test_client_spans_attach_to_fluent_and_decorated_spans(sink: MemorySink) -> None:
    client = tracewire.TracingClient()

    @tracewire.trace
    def handler(question: str) -> str:
        current = tracewire.get_current_active_span()
        assert current is not None
        tool = client.start_span("tool", current.trace_id, current.span_id, span_type=SpanType.TOOL,
                                 inputs={"q": question})
        grandchild = client.start_span("lookup", tool.trace_id, tool.span_id)
        client.end_span(tool.trace_id, grandchild.span_id, outputs=[1, 2], attributes={"hits": 2})
        client.end_span(tool.trace_id, tool.span_id, outputs="tool-done", status="ERROR")
        return "answer"

    with tracewire.start_span("root") as root:
        handler("why?")
    trace = only_trace(sink)
    spans = {s.name: s for s in trace.data.spans}
    assert set(spans) == {"root", "handler", "tool", "lookup"}
    assert spans["tool"].parent_id == spans["handler"].span_id
    assert spans["lookup"].parent_id == spans["tool"].span_id
    assert spans["lookup"].outputs == [1, 2] and spans["lookup"].attributes["hits"] == 2
    assert spans["tool"].outputs == "tool-done" and spans["tool"].status == "ERROR"
    assert spans["tool"].inputs == {"q": "why?"}
    assert trace.info.trace_id == root.trace_id
    assert tracewire.stats()["client_traces_open"] == 0  # fluent traces never enter the registry


def test_client_span_under_a_fluent_span_ended_from_another_thread(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    started = threading.Event()
    ids: dict[str, str] = {}

    def worker() -> None:
        started.wait(10)
        span = client.start_span("in-thread", ids["trace"], ids["parent"], inputs={"n": 1})
        ids["child"] = span.span_id

    thread = threading.Thread(target=worker)
    thread.start()
    with tracewire.start_span("root") as root:
        ids.update(trace=root.trace_id, parent=root.span_id)
        started.set()
        thread.join(10)
        ended = threading.Thread(target=client.end_span, args=(root.trace_id, ids["child"]),
                                 kwargs={"outputs": "from-thread"})
        ended.start()
        ended.join(10)
    trace = only_trace(sink)
    child = next(s for s in trace.data.spans if s.name == "in-thread")
    assert child.parent_id == root.span_id and child.outputs == "from-thread"
    assert child.end_time_ns is not None and child.end_time_ns <= trace.root_span.end_time_ns  # type: ignore[union-attr]


def test_client_span_after_the_fluent_trace_ended_is_a_no_op(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    with tracewire.start_span("root") as root:
        pass
    late = client.start_span("late", root.trace_id, root.span_id)
    assert late.trace_id == ""
    client.end_span(root.trace_id, late.span_id)
    client.end_span(root.trace_id, root.span_id, outputs="again")  # already ended: ignored
    trace = only_trace(sink)
    assert [s.name for s in trace.data.spans] == ["root"]
    assert trace.data.spans[0].outputs is None


@pytest.mark.parametrize("bounded", [{"client_max_traces": 1}], indirect=True)
def test_an_evicted_client_trace_stays_dropped(bounded: MemorySink) -> None:
    client = tracewire.TracingClient()
    old = client.start_trace("old")
    child = client.start_span("child", old.trace_id, old.span_id)
    young = client.start_trace("young")  # evicts "old"
    # Nothing brings it back: not new children, not ending its spans by id or directly.
    assert client.start_span("late", old.trace_id, old.span_id).trace_id == ""
    assert client.start_span("late", old.trace_id, child.span_id).trace_id == ""
    client.end_span(old.trace_id, child.span_id)
    client.end_span(old.trace_id, old.span_id)
    child.end()
    old.end()
    client.end_trace(old.trace_id)
    client.end_trace(young.trace_id)
    assert tracewire.flush()
    assert [t.data.spans[0].name for t in bounded.traces] == ["young"]
