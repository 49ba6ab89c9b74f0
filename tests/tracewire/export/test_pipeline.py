"""The export pipeline: bounds, batching, deadlines, retries, flush/shutdown, fork safety."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence

import pytest

import tracewire
from sinks import MemorySink, Sink
from tracewire import config
from tracewire.export.finishing import build_trace
from tracewire.export.pipeline import ExportPipeline
from tracewire.export.record import TraceRecord
from tracewire.recording.live import LiveTrace
from tracewire.recording.recorder import new_trace_hex


class FlakySink(Sink):
    """Fails the first ``failures`` calls, then stores batches."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.records: list[TraceRecord] = []

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("broker unreachable")
        self.records.extend(batch)


class HangingSink(Sink):
    name = "hanging"

    def __init__(self) -> None:
        self.calls = 0

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        self.calls += 1
        await asyncio.Event().wait()


class RejectingSink(Sink):
    name = "rejecting"

    async def export(self, batch: Sequence[TraceRecord]) -> int:
        return 1  # one record of each batch rejected for good


def make_trace(name: str = "t", payload: str = "x") -> tracewire.Trace:
    """A finished trace, built without going through any pipeline."""
    live = LiveTrace("tr-" + new_trace_hex(), max_value_bytes=10**9, sampling_rate=1.0)
    root = live.new_span(name, None, "CHAIN")
    root.set_outputs(payload)
    root.end_time_ns = time.time_ns()
    return build_trace(live)


@pytest.fixture
def settings() -> Iterator[config.Settings]:
    yield config.load({}, enabled=True, batch_interval=0.01, export_timeout=0.2,
                      shutdown_timeout=1.0)
    tracewire.configure(enabled=False)


def test_submit_batches_and_exports(settings: config.Settings) -> None:
    memory = MemorySink()
    pipeline = ExportPipeline([memory], settings.replace(batch_size=7))
    traces = [make_trace(f"t{i}") for i in range(20)]
    for trace in traces:
        assert pipeline.submit(trace)
    assert pipeline.flush(5)
    assert [r.to_trace().root_span.name for r in memory.records] == [f"t{i}" for i in range(20)]  # type: ignore[union-attr]
    stats = pipeline.stats()
    assert stats["accepted"] == 20 and stats["exported"]["memory"] == 20
    assert stats["queue_traces"] == 0 and stats["queue_bytes"] == 0
    pipeline.shutdown(1)


def test_full_queue_drops_and_counts(settings: config.Settings) -> None:
    hanging = HangingSink()
    pipeline = ExportPipeline([hanging], settings.replace(queue_max_traces=5))
    results = [pipeline.submit(make_trace()) for _ in range(8)]
    assert results == [True] * 5 + [False] * 3
    stats = pipeline.stats()
    assert stats["dropped_full"] == 3
    assert stats["accepted"] == 5
    assert stats["queue_traces"] == 5
    pipeline.shutdown(0.2)


def test_byte_bound_drops_and_counts(settings: config.Settings) -> None:
    hanging = HangingSink()
    big = make_trace(payload="y" * 50_000)
    # A queued trace counts twice its captured bytes (JSON + root request/response to come).
    pipeline = ExportPipeline([hanging], settings.replace(queue_max_bytes=250_000))
    assert pipeline.submit(big) and pipeline.submit(big)
    assert not pipeline.submit(big)
    assert pipeline.stats()["dropped_full"] == 1
    assert 200_000 <= pipeline.stats()["queue_bytes"] <= 250_000
    assert pipeline.flush(0.3) is False  # serialized now, held at real size, still within bound
    assert 100_000 <= pipeline.stats()["queue_bytes"] <= 250_000
    pipeline.shutdown(0.2)


def test_raising_sink_is_retried_until_it_recovers(settings: config.Settings) -> None:
    flaky = FlakySink(failures=3)
    pipeline = ExportPipeline([flaky], settings)
    for _ in range(4):
        pipeline.submit(make_trace())
    assert pipeline.flush(10)
    assert len(flaky.records) == 4
    stats = pipeline.stats()
    assert stats["sinks"]["flaky"]["retries"] == 3
    assert stats["exported"]["flaky"] == 4
    assert stats["sinks"]["flaky"]["healthy"] is True
    pipeline.shutdown(1)


def test_hanging_sink_blocks_neither_submit_nor_flush(settings: config.Settings) -> None:
    hanging = HangingSink()
    pipeline = ExportPipeline([hanging], settings)
    started = time.monotonic()
    for _ in range(100):
        assert pipeline.submit(make_trace())
    submit_time = time.monotonic() - started
    flushed = pipeline.flush(0.5)
    flush_time = time.monotonic() - started - submit_time
    assert flushed is False
    assert flush_time < 2.0
    assert hanging.calls >= 1
    started = time.monotonic()
    pipeline.shutdown(0.5)
    assert time.monotonic() - started < 3.0
    stats = pipeline.stats()
    assert stats["lost_at_shutdown"] == 100
    assert stats["export_errors"]["hanging"] == 100


def test_one_dead_sink_does_not_stop_another(settings: config.Settings) -> None:
    memory = MemorySink()
    hanging = HangingSink()
    pipeline = ExportPipeline([memory, hanging], settings)
    for _ in range(3):
        pipeline.submit(make_trace())
    assert not pipeline.flush(0.5)
    assert len(memory.records) == 3
    pipeline.shutdown(0.3)


def test_rejected_records_are_counted_not_retried(settings: config.Settings) -> None:
    pipeline = ExportPipeline([RejectingSink()], settings)
    pipeline.submit(make_trace())
    assert pipeline.flush(5)
    stats = pipeline.stats()
    assert stats["export_errors"]["rejecting"] == 1
    assert stats["sinks"]["rejecting"]["retries"] == 0
    pipeline.shutdown(1)


def test_shutdown_flushes_and_closes(settings: config.Settings) -> None:
    closed = []

    class ClosingSink(MemorySink):
        async def aclose(self) -> None:
            closed.append(True)

    sink = ClosingSink()
    pipeline = ExportPipeline([sink], settings.replace(batch_interval=60))
    pipeline.submit(make_trace())
    pipeline.shutdown(2)
    assert len(sink.records) == 1
    assert closed == [True]
    assert not pipeline.submit(make_trace())  # closed pipelines drop (and count)


def test_flush_with_nothing_submitted_is_immediate(settings: config.Settings) -> None:
    pipeline = ExportPipeline([MemorySink()], settings)
    assert pipeline.flush(0.01)
    pipeline.shutdown(0.1)


def test_public_flush_and_stats(sink: MemorySink) -> None:
    for _ in range(3):
        with tracewire.start_span("s"):
            pass
    assert tracewire.flush()
    stats = tracewire.stats()
    assert stats["accepted"] == 3
    assert stats["exported"]["memory"] == 3
    assert stats["queue_traces"] == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_exports_its_own_traces_and_not_the_parents(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "traces.jsonl"
    tracewire.configure(enabled=True, destination=f"jsonl:{path}", batch_interval=60,
                        batch_size=10_000)
    try:
        with tracewire.start_span("parent-before-fork"):
            pass
        assert tracewire.stats()["queue_traces"] == 1  # accepted, not yet exported
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                with tracewire.start_span("child"):
                    pass
                ok = tracewire.flush(10)
                stats = tracewire.stats()
                code = 0 if ok and stats["accepted"] == 1 and stats["exported"] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tracewire.flush(10)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    names = sorted(
        tracewire.Trace.from_json(line).data.spans[0].name for line in path.read_text().splitlines()
    )
    assert names == ["child", "parent-before-fork"]
