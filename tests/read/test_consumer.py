"""``tracewire consume`` against the real tansu broker and real Delta tables.

The crash test SIGKILLs the consumer mid-stream and restarts it: the table must then hold every
produced trace exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import tracewire
from sinks import MemorySink
from tests.kafka_broker import Broker, unique_topic
from tracewire.read.consumer import ConsumerStats, PoisonMessage, TraceConsumer, record_from_message

pytest.importorskip("aiokafka")
deltalake = pytest.importorskip("deltalake")
pytestmark = pytest.mark.kafka




def make_payloads(n: int, prefix: str = "req") -> list[bytes]:
    """Real trace JSON, made by the real pipeline into a MemorySink."""
    sink = MemorySink()
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01, queue_max_traces=10**6)
    try:
        for i in range(n):
            with tracewire.start_span("POST /chat") as span:
                span.set_inputs({"q": f"question {i}"})
                span.set_attribute("http.status_code", 200)
                tracewire.update_current_trace(client_request_id=f"{prefix}-{i}", session_id=f"s{i % 7}")
                span.set_outputs("answer " * 20)
        assert tracewire.flush(60)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    return [r.payload for r in sink.records]


async def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=str(i).encode()) for i, value in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def table_ids(table: Path) -> Counter[str]:
    ids = deltalake.DeltaTable(str(table)).to_pyarrow_table(columns=["client_request_id"])
    return Counter(ids.column("client_request_id").to_pylist())


def test_record_from_message_rejects_poison() -> None:
    good = make_payloads(1)[0]
    record = record_from_message(good)
    assert record.client_request_id == "req-0" and record.status_code == 200
    assert record.session_id == "s0" and record.request == '{"q":"question 0"}'
    for bad, message in [
        (b"", "empty"), (b"{not json", "not JSON"), (b'{"hello": 1}', "no 'info'"),
        (b'{"info": {"trace_id": "x"}}', "trace_id"),
        (good.replace(b'"mlflow.trace_schema.version":"3"', b'"mlflow.trace_schema.version":"9"'),
         "schema version"),
    ]:
        with pytest.raises(PoisonMessage, match=message):
            record_from_message(bad)


def test_consume_writes_every_trace_once_and_dead_letters_poison(broker: Broker, tmp_path: Path) -> None:
    topic = unique_topic()
    payloads = make_payloads(200)
    poison = [b"garbage", b'{"info": {}}']
    asyncio.run(produce(broker.bootstrap, topic, payloads[:100] + poison + payloads[100:], partitions=3))
    table = tmp_path / "traces"
    consumer = TraceConsumer(broker.bootstrap, topic, "g1", str(table), max_batch=50)

    def done(stats: ConsumerStats) -> None:  # stop as soon as every message landed
        if stats.written + stats.dead_letters >= 202:
            consumer.stop()

    consumer.progress = done
    stats = asyncio.run(consumer.run(idle_exit=30))
    assert stats.written == 200 and stats.dead_letters == 2
    counts = table_ids(table)
    assert len(counts) == 200 and set(counts.values()) == {1}
    letters = deltalake.DeltaTable(str(tmp_path / "traces_dead_letter")).to_pyarrow_table().to_pylist()
    assert sorted(row["value"] for row in letters) == sorted(poison)
    assert all(row["error"] for row in letters)
    # A second run of the same group finds nothing new: the table remembers the offsets.
    again = asyncio.run(TraceConsumer(broker.bootstrap, topic, "g1", str(table)).run(idle_exit=2))
    assert again.written == 0
    assert sum(table_ids(table).values()) == 200


def test_two_consumers_split_partitions_and_write_each_trace_once(broker: Broker, tmp_path: Path) -> None:
    topic = unique_topic()
    payloads = make_payloads(600, prefix="two")
    asyncio.run(produce(broker.bootstrap, topic, payloads, partitions=4))
    table = tmp_path / "traces"

    async def both() -> list[int]:
        consumers = [TraceConsumer(broker.bootstrap, topic, "pair", str(table), max_batch=40)
                     for _ in range(2)]

        def done(_: object) -> None:  # stop both as soon as every trace is in
            if sum(c.stats.written for c in consumers) >= 600:
                for c in consumers:
                    c.stop()

        for c in consumers:
            c.progress = done
        results = await asyncio.gather(*(c.run(idle_exit=30) for c in consumers))
        return [r.written for r in results]

    written = asyncio.run(both())
    assert sum(written) >= 600
    counts = table_ids(table)
    assert len(counts) == 600
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1][:5]


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    topic = unique_topic()
    payloads = make_payloads(3000, prefix="crash")
    asyncio.run(produce(broker.bootstrap, topic, payloads, partitions=2))
    table = tmp_path / "traces"
    command = [sys.executable, "-m", "tracewire.read.cli", "consume", "--bootstrap-servers", broker.bootstrap,
               "--topic", topic, "--group", "crashy", "--table", str(table), "--max-batch", "100",
               "--idle-exit", "4", "--progress-every", "0"]
    first = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert first.stderr is not None
    deadline = time.monotonic() + 120
    for line in first.stderr:  # progress lines: kill once a few commits landed
        if line.startswith("written") and int(line.split()[1]) >= 500:
            break
        assert time.monotonic() < deadline, "consumer made no progress"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    written_before = sum(table_ids(table).values())
    assert 0 < written_before < 3000
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    counts = table_ids(table)
    assert sum(counts.values()) == 3000
    assert set(counts.values()) == {1}
    assert set(counts) == {f"crash-{i}" for i in range(3000)}


def test_sigterm_is_graceful(broker: Broker, tmp_path: Path) -> None:
    topic = unique_topic()
    asyncio.run(produce(broker.bootstrap, topic, make_payloads(50, prefix="term")))
    table = tmp_path / "traces"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracewire.read.cli", "consume", "--bootstrap-servers", broker.bootstrap,
         "--topic", topic, "--group", "term", "--table", str(table), "--progress-every", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("written 50"):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "written 50" in out
    assert sum(table_ids(table).values()) == 50
