"""``tracewire push``: stored traces (a real Delta table, a JSONL file) re-sent to a real OTLP
receiver on 127.0.0.1, by the CLI run as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import tracewire
from sinks import MemorySink
from tests.otlp_receiver import OtlpReceiver
from tracewire.config import load
from tracewire.read.push import push_traces

pytest.importorskip("deltalake")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracewire.read.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[tracewire.Trace]]]:
    """Five traces (two ERROR) in a Delta table — every trace written twice — and a JSONL file."""
    folder = tmp_path_factory.mktemp("push")
    table, jsonl = str(folder / "traces"), str(folder / "traces.jsonl")
    memory = MemorySink()
    tracewire.configure(enabled=True, sinks=[memory], batch_interval=0.01)
    try:
        for i in range(5):
            with tracewire.start_span(f"job-{i}") as root:
                root.set_inputs({"i": i})
                tracewire.update_current_trace(session_id=f"s{i % 2}")
                if i in (1, 3):
                    root.record_exception(RuntimeError("boom"))
            assert tracewire.flush(10)
            time.sleep(0.003)  # distinct request times
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    import asyncio

    from sinks.delta import DeltaTableSink
    from sinks.jsonl import JsonlSink

    records = memory.records

    async def write() -> None:
        delta = DeltaTableSink(table)
        await delta.export(records)
        await delta.export(records)  # the same trace ids twice: push sends each once
        await delta.aclose()
        lines = JsonlSink(jsonl)
        await lines.export(records)
        await lines.aclose()

    asyncio.run(write())
    yield table, jsonl, memory.traces


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


def test_cli_pushes_the_filtered_traces_once_with_progress(
    stored: tuple[str, str, list[tracewire.Trace]], receiver: OtlpReceiver
) -> None:
    table, _, traces = stored
    result = cli("push", table, "--to", f"otlp+http://127.0.0.1:{receiver.port}",
                 "--filter", "status = 'ERROR'", "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    errors = sorted(t.info.trace_id for t in traces if t.info.state == "ERROR")
    assert len(errors) == 2
    assert sorted("tr-" + s.trace_id.hex() for s in receiver.spans) == errors
    assert "sent 1/2 traces" in result.stderr and "sent 2/2 traces" in result.stderr
    assert "pushed 2 trace(s)" in result.stdout


def test_push_all_from_delta_sends_each_trace_once(
    stored: tuple[str, str, list[tracewire.Trace]], receiver: OtlpReceiver
) -> None:
    table, _, traces = stored
    stats = push_traces(f"delta:{table}", f"otlp+http://127.0.0.1:{receiver.port}", settings=load({}))
    assert (stats.matched, stats.sent, stats.rejected) == (5, 5, 0)
    sent = ["tr-" + s.trace_id.hex() for s in receiver.spans]
    assert sorted(sent) == sorted(t.info.trace_id for t in traces)


def test_push_from_jsonl_oldest_first_with_limit_and_retry(
    stored: tuple[str, str, list[tracewire.Trace]], receiver: OtlpReceiver
) -> None:
    _, jsonl, traces = stored
    receiver.replies = [lambda _: (503, b"")]
    stats = push_traces(jsonl, f"otlp+http://127.0.0.1:{receiver.port}", "session_id = 's0'", limit=2,
                        settings=load({}))
    assert (stats.matched, stats.sent) == (2, 2)
    assert receiver.attempts == 2
    oldest = [t.info.trace_id for t in sorted(traces, key=lambda t: (t.info.request_time, t.info.trace_id))
              if t.info.session_id == "s0"][:2]
    assert ["tr-" + s.trace_id.hex() for s in receiver.spans] == oldest


def test_bad_destination_or_filter_fails_before_sending(
    stored: tuple[str, str, list[tracewire.Trace]], receiver: OtlpReceiver
) -> None:
    table, _, _ = stored
    result = cli("push", table, "--to", "nowhere://x")
    assert result.returncode == 2 and "unknown destination scheme" in result.stderr
    result = cli("push", table, "--to", f"otlp+http://127.0.0.1:{receiver.port}", "--filter", "status = ")
    assert result.returncode == 2
    assert receiver.attempts == 0
