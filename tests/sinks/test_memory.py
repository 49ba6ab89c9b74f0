from __future__ import annotations

import tracewire
from sinks import MemorySink


def test_memory_sink_reads_back_and_clears(sink: MemorySink) -> None:
    with tracewire.start_span("a"):
        pass
    assert tracewire.flush()
    assert [t.data.spans[0].name for t in sink.traces] == ["a"]
    assert sink.records[0].trace_id == sink.traces[0].info.trace_id
    sink.clear()
    assert sink.traces == []


def test_memory_uri_uses_the_process_default() -> None:
    tracewire.configure(enabled=True, destination="memory:", batch_interval=0.01)
    try:
        MemorySink.default().clear()
        with tracewire.start_span("via-uri"):
            pass
        assert tracewire.flush()
        assert [t.data.spans[0].name for t in MemorySink.default().traces] == ["via-uri"]
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
