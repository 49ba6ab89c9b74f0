from __future__ import annotations

from collections.abc import Iterator

import pytest

import tracewire
from sinks import MemorySink


@pytest.fixture
def sink() -> Iterator[MemorySink]:
    """Tracing on, exporting to a fresh MemorySink; everything flushed and reset afterwards."""
    memory = MemorySink()
    tracewire.configure(enabled=True, sinks=[memory], batch_interval=0.01)
    yield memory
    tracewire.shutdown(timeout=5)
    tracewire.configure(enabled=False)


def only_trace(sink: MemorySink) -> tracewire.Trace:
    assert tracewire.flush(timeout=10)
    traces = sink.traces
    assert len(traces) == 1, traces
    return traces[0]
