"""The conditional Delta commit under racing writers: two consumers that both believe they own a
partition (the window of a rebalance) commit overlapping offsets at the same moment; the table
must hold each offset once, and the loser retries instead of failing."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.read.test_consumer import make_payloads
from tracewire.read.consumer import TraceConsumer

deltalake = pytest.importorskip("deltalake")


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def test_racing_commits_for_one_partition_write_each_offset_once(tmp_path: Path) -> None:
    payloads = make_payloads(400, prefix="race")
    messages = [Message("t", i % 2, i // 2, None, value) for i, value in enumerate(payloads)]
    messages.insert(7, Message("t", 2, 5, None, b"poison"))  # a dead letter in the race too
    table = str(tmp_path / "traces")
    consumers = [TraceConsumer("127.0.0.1:1", "t", "g", table) for _ in range(2)]
    errors: list[BaseException] = []

    def write(consumer: TraceConsumer, barrier: threading.Barrier, batch: list[Message]) -> None:
        barrier.wait()
        try:
            consumer.write_messages(batch)
        except BaseException as exc:
            errors.append(exc)

    for start in range(0, 200, 20):  # each round: both commit the same window (one a bit less)
        barrier = threading.Barrier(2)
        window = [m for m in messages if start <= m.offset < start + 20]
        threads = [threading.Thread(target=write, args=(c, barrier, window[: len(window) - n]))
                   for n, c in enumerate(consumers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    conflicts = sum(c.stats.commit_conflicts for c in consumers)
    ids = deltalake.DeltaTable(table).to_pyarrow_table(columns=["client_request_id"])
    counts = Counter(ids.column("client_request_id").to_pylist())
    assert set(counts.values()) == {1}
    assert set(counts) == {f"race-{i}" for i in range(400)}
    letters = deltalake.DeltaTable(table + "_dead_letter").to_pyarrow_table().to_pylist()
    assert [row["value"] for row in letters] == [b"poison"]
    assert conflicts >= 1  # the losing commit was really retried (every round races)
