"""Nothing is traced on the export worker: a sink whose export calls traced code (a logging
helper, an HTTP client with autolog, ...) cannot turn one request into a flood of traces."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest

import tracewire
from sinks import MemorySink, Sink
from tracewire.export.record import TraceRecord


@tracewire.trace(name="audit")
def audit(trace_id: str) -> str:
    """Traced library code that the sink below happens to call."""
    with tracewire.start_span("audit-inner"):
        return trace_id


class AuditingSink(Sink):
    """Calls traced code for every record: on the loop, in a thread, in the default executor."""

    name = "auditing"

    def __init__(self) -> None:
        self.audited: list[str] = []

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        loop = asyncio.get_running_loop()
        for record in batch:
            self.audited.append(audit(record.trace_id))
            self.audited.append(await asyncio.to_thread(audit, record.trace_id))
            self.audited.append(await loop.run_in_executor(None, audit, record.trace_id))
            client = tracewire.TracingClient()
            root = client.start_trace("client-audit")
            client.end_trace(root.trace_id)


@pytest.fixture
def sinks() -> Iterator[tuple[AuditingSink, MemorySink]]:
    auditing, memory = AuditingSink(), MemorySink()
    tracewire.configure(enabled=True, sinks=[auditing, memory], batch_interval=0.01)
    yield auditing, memory
    tracewire.shutdown(timeout=5)
    tracewire.configure(enabled=False)


def test_a_sink_calling_traced_code_creates_no_traces(
    sinks: tuple[AuditingSink, MemorySink],
) -> None:
    auditing, memory = sinks

    @tracewire.trace(name="handle")
    def handle(i: int) -> int:
        return audit(str(i)) and i

    for i in range(5):
        handle(i)
    assert tracewire.flush(10)
    assert tracewire.flush(10)  # anything the sink started would be queued by now
    assert len(auditing.audited) == 15  # the traced code ran, untraced
    assert sorted(t.root_span.name for t in memory.traces) == ["handle"] * 5  # type: ignore[union-attr]
    assert tracewire.stats()["accepted"] == 5


def test_the_application_threads_are_still_traced(sinks: tuple[AuditingSink, MemorySink]) -> None:
    _, memory = sinks
    assert audit("x") == "x"
    assert asyncio.run(asyncio.to_thread(audit, "y")) == "y"
    assert tracewire.flush(10)
    assert sorted(t.root_span.name for t in memory.traces) == ["audit", "audit"]  # type: ignore[union-attr]
