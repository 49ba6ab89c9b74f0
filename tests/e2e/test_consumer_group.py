"""Consumer groups add no duplicate rows when consumers join and leave (issue 10, item 1).

Real ``tracewire consume`` processes in one group on a 6-partition topic while traces flow:
consumers join, are SIGTERMed and one is SIGKILLed mid-flow (real rebalances), a last one drains
with ``--idle-exit``.  Every record must be exactly one row: each produced trace has a unique
client request id, so an id twice is a (partition, offset) written twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.kafka_broker import Broker, unique_topic
from tests.read.test_consumer import make_payloads

pytest.importorskip("aiokafka")
deltalake = pytest.importorskip("deltalake")
pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

TRACES = 3000
PARTITIONS = 6
SECONDS = 24  # production time; consumers change every few seconds meanwhile


async def _create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _produce_steadily(bootstrap: str, topic: str, values: list[bytes], seconds: float) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        chunks = 40
        size = -(-len(values) // chunks)
        for start in range(0, len(values), size):
            futures = [await producer.send(topic, value, key=str(start + i).encode())
                       for i, value in enumerate(values[start:start + size])]
            await asyncio.gather(*futures)
            await asyncio.sleep(seconds / chunks)
    finally:
        await producer.stop()


def consume_command(broker: Broker, topic: str, table: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tracewire.read.cli", "consume", "--bootstrap-servers", broker.bootstrap,
            "--topic", topic, "--group", "scale", "--table", str(table), "--max-batch", "100",
            "--progress-every", "0", "--compact-every", "0", *extra]


def test_consumers_joining_and_leaving_write_every_record_exactly_once(
    broker: Broker, tmp_path: Path
) -> None:
    topic = unique_topic()
    values = make_payloads(TRACES, prefix="grp")
    asyncio.run(_create_topic(broker.bootstrap, topic))
    table = tmp_path / "traces"
    logs: list[Path] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"consumer-{len(logs)}.log"
        logs.append(log)
        with log.open("wb") as handle:
            return subprocess.Popen(consume_command(broker, topic, table, *extra),
                                    stdout=handle, stderr=subprocess.STDOUT)

    def settled(*members: subprocess.Popen[bytes], wrote: bool = False, timeout: float = 90) -> None:
        """Wait until each member owns partitions since its last (re)join (and, with ``wrote``,
        committed since).  Killing a member in the middle of a join stalls tansu's group
        coordinator (it elects the dead member leader and waits for it forever): a broker
        limitation, not the consumer's, so the SIGKILL waits for a stable group."""
        deadline = time.monotonic() + timeout
        for proc in members:
            log = logs[[p.pid for p in procs].index(proc.pid)]
            while True:
                text = log.read_text()
                tail = text[text.rfind("joining group"):]
                after = tail[tail.find("assigned partitions"):] if "assigned partitions" in tail else None
                if after is not None and (not wrote or "\nwritten " in after):
                    break
                assert time.monotonic() < deadline, f"consumer never settled:\n{text[-2000:]}"
                time.sleep(0.2)

    producer = threading.Thread(
        target=lambda: asyncio.run(_produce_steadily(broker.bootstrap, topic, values, SECONDS)))
    began = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.extend([start(), start(), start()])
        producer.start()
        settled(procs[0], procs[2])
        settled(procs[1], wrote=True)
        os.kill(procs[1].pid, signal.SIGKILL)  # crashes mid-flow: its partitions move on session timeout
        procs[0].send_signal(signal.SIGTERM)  # leaves: rebalance while traces flow
        procs.append(start())  # joins: another rebalance
        settled(procs[3])
        procs[2].send_signal(signal.SIGTERM)
        procs.append(start())
        producer.join(90)
        assert not producer.is_alive()
        procs.append(start("--idle-exit", "8"))  # joins, then drains
        terminated = [procs[0], procs[2]]
        assert procs[5].wait(120) == 0, logs[5].read_text()[-3000:]
        for proc in (procs[3], procs[4]):
            proc.send_signal(signal.SIGTERM)
            terminated.append(proc)
        # Graceful stops exit 0 (a lost commit race is retried, never fatal).
        for proc in terminated:
            assert proc.wait(30) == 0, logs[procs.index(proc)].read_text()[-3000:]
        assert procs[1].wait(5) == -signal.SIGKILL
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    ids = deltalake.DeltaTable(str(table)).to_pyarrow_table(columns=["client_request_id"])
    counts = Counter(ids.column("client_request_id").to_pylist())
    twice = [k for k, v in counts.items() if v > 1]
    assert not twice, f"{len(twice)} records written twice, e.g. {twice[:5]}"
    assert set(counts) == {f"grp-{i}" for i in range(TRACES)}
    assert sum(counts.values()) == TRACES
    summary = [line for log in logs for line in log.read_text().splitlines() if line.startswith("consumed")]
    took = time.monotonic() - began
    print(f"\n{TRACES} traces, {sum(counts.values())} rows, 0 duplicates, {took:.0f}s:", *summary, sep="\n  ")
