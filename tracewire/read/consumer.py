"""``tracewire consume``: a Kafka topic of traces into a Delta inference table, exactly once.

Consumers in one group split the partitions.  Exactly-once comes from Delta itself: every
commit carries, per partition, an app transaction ``(tracewire-consume:<group>:<topic>:<p>,
last offset)`` in the same atomic commit as the rows (the kafka-delta-ingest technique).  On
start and on every partition assignment the consumer seeks to the offset after the one the
table recorded, so a crash before the commit re-reads the batch and a crash after it skips it:
no row is written twice or lost.  Kafka offsets are committed too, after Delta, for lag
monitoring only.  Malformed messages go to a dead-letter Delta table and never block a partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracewire.export.record import TraceRecord
from tracewire.keys import SpanAttributeKey, TraceMetadataKey
from tracewire.model import parse_request_time

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMA = "3"


class PoisonMessage(ValueError):
    """A message that is not a tracewire trace."""


def record_from_message(value: bytes | None) -> TraceRecord:
    """Parse one Kafka message value into a row; ``PoisonMessage`` when it is not a trace.

    Reads the info block and the root span's attributes only: no Span objects, so the consumer
    keeps up with the topic.
    """
    if not value:
        raise PoisonMessage("empty message")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
        raise PoisonMessage("not a trace: no 'info' object")
    info = data["info"]
    trace_id = info.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id.startswith("tr-"):
        raise PoisonMessage("not a trace: missing or bad info.trace_id")
    metadata = info.get("trace_metadata") or {}
    if not isinstance(metadata, dict):
        raise PoisonMessage("not a trace: trace_metadata is not an object")
    version = metadata.get(TraceMetadataKey.SCHEMA_VERSION)
    if version != SUPPORTED_SCHEMA:
        raise PoisonMessage(f"unsupported trace schema version {version!r}")
    spans = (data.get("data") or {}).get("spans")
    if not isinstance(spans, list):
        raise PoisonMessage("not a trace: data.spans is not a list")
    root = next((s for s in spans if isinstance(s, dict) and not s.get("parent_span_id")), None)
    attributes = (root.get("attributes") or {}) if root else {}
    try:
        request_time = parse_request_time(info.get("request_time"))
    except (ValueError, TypeError):
        raise PoisonMessage("not a trace: bad info.request_time") from None
    status = attributes.get("http.status_code")
    codes = metadata.get("tracewire.logging_error_codes")
    try:
        fraction = float(metadata.get(TraceMetadataKey.SAMPLING_FRACTION, "1.0"))
    except ValueError:
        fraction = 1.0
    duration = info.get("execution_duration_ms")
    return TraceRecord(
        trace_id=trace_id,
        payload=value,
        client_request_id=info.get("client_request_id"),
        request_time_ms=request_time,
        state=str(info.get("state") or "STATE_UNSPECIFIED"),
        status_code=int(status) if isinstance(status, str) and status.isdigit() else None,
        execution_duration_ms=int(duration) if isinstance(duration, (int, float, str))
        and str(duration).isdigit() else None,
        sampling_fraction=fraction,
        session_id=metadata.get(TraceMetadataKey.SESSION),
        user_id=metadata.get(TraceMetadataKey.USER),
        request=attributes.get(SpanAttributeKey.INPUTS),
        response=attributes.get(SpanAttributeKey.OUTPUTS),
        metadata={str(k): str(v) for k, v in metadata.items()},
        tags={str(k): str(v) for k, v in (info.get("tags") or {}).items()},
        logging_error_codes=codes.split(",") if isinstance(codes, str) and codes else [],
    )


def dead_letter_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("key", pa.binary()), ("value", pa.binary()), ("error", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
    ])


@dataclass
class ConsumerStats:
    consumed: int = 0
    written: int = 0
    dead_letters: int = 0
    skipped_duplicates: int = 0
    commits: int = 0
    started: float = field(default_factory=time.monotonic)
    first_message: float | None = None  # monotonic time the first message arrived
    last_commit: float | None = None

    @property
    def rate(self) -> float:
        """Traces written per second from the first message to the last commit."""
        if self.first_message is None or self.last_commit is None:
            return 0.0
        return self.written / max(self.last_commit - self.first_message, 1e-9)


class TraceConsumer:
    """Kafka → Delta, one instance per process; several instances form a consumer group."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str,
        group: str,
        table: str,
        *,
        dead_letter_table: str | None = None,
        max_batch: int = 5000,
        poll_timeout: float = 1.0,
        compact_every: int = 200,
        storage_options: dict[str, str] | None = None,
        consumer_options: dict[str, Any] | None = None,
        progress: Callable[[ConsumerStats], None] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group = group
        self.table = table
        self.dead_letter_table = dead_letter_table or table.rstrip("/") + "_dead_letter"
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.compact_every = compact_every
        self.storage_options = storage_options
        self.consumer_options = consumer_options or {}
        self.progress = progress
        self.stats = ConsumerStats()
        self._next: dict[int, int] = {}  # partition -> next offset to write, per the table
        self._stop = asyncio.Event()

    def app_id(self, partition: int) -> str:
        return f"tracewire-consume:{self.group}:{self.topic}:{partition}"

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from ``run``."""
        self._stop.set()

    # -- Delta -------------------------------------------------------------------------------------
    def _table_offset(self, partition: int) -> int | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(self.table, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        version = table.transaction_version(self.app_id(partition))
        return None if version is None else int(version)

    def _write(self, rows: list[TraceRecord], offsets: dict[int, int]) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake

        from sinks.delta import PARTITION_COLUMN, records_to_table

        txns = [Transaction(app_id=self.app_id(p), version=o) for p, o in sorted(offsets.items())]
        write_deltalake(
            self.table, records_to_table(rows), mode="append", partition_by=[PARTITION_COLUMN],
            storage_options=self.storage_options,
            commit_properties=CommitProperties(app_transactions=txns, max_commit_retries=50),
        )

    def _write_dead_letters(self, letters: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        from deltalake import write_deltalake

        write_deltalake(self.dead_letter_table, pa.Table.from_pylist(letters, schema=dead_letter_schema()),
                        mode="append", storage_options=self.storage_options)

    def _compact(self) -> None:
        from deltalake import DeltaTable

        try:
            DeltaTable(self.table, storage_options=self.storage_options).optimize.compact()
        except Exception:
            logger.warning("compaction of %s failed", self.table, exc_info=True)

    # -- Kafka -------------------------------------------------------------------------------------
    async def _on_assigned(self, consumer: Any, partitions: Any) -> None:
        for tp in partitions:
            done = await asyncio.to_thread(self._table_offset, tp.partition)
            if done is not None:
                self._next[tp.partition] = done + 1
                consumer.seek(tp, done + 1)
            else:
                self._next.pop(tp.partition, None)
        logger.info("assigned partitions %s of %s", sorted(tp.partition for tp in partitions), self.topic)

    def _split(
        self, batch: dict[Any, list[Any]]
    ) -> tuple[list[TraceRecord], list[dict[str, Any]], dict[int, int]]:
        rows: list[TraceRecord] = []
        letters: list[dict[str, Any]] = []
        offsets: dict[int, int] = {}
        now = dt.datetime.now(dt.timezone.utc)
        for tp, messages in batch.items():
            start = self._next.get(tp.partition)
            for message in messages:
                if start is not None and message.offset < start:
                    self.stats.skipped_duplicates += 1
                    continue
                offsets[tp.partition] = message.offset
                try:
                    rows.append(record_from_message(message.value))
                except PoisonMessage as exc:
                    letters.append({
                        "topic": tp.topic, "partition": tp.partition, "offset": message.offset,
                        "key": message.key, "value": message.value, "error": str(exc),
                        "received_at": now,
                    })
        return rows, letters, offsets

    async def _gather(self, consumer: Any) -> dict[Any, list[Any]]:
        """Up to ``max_batch`` messages, waiting at most ``poll_timeout`` once some arrived:
        fewer, larger Delta commits (each commit costs the same fixed log work)."""
        batch: dict[Any, list[Any]] = {}
        count = 0
        deadline: float | None = None
        while count < self.max_batch and not self._stop.is_set():
            wait = self.poll_timeout if deadline is None else max(deadline - time.monotonic(), 0)
            more = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=self.max_batch - count)
            got = sum(len(m) for m in more.values())
            for tp, messages in more.items():
                batch.setdefault(tp, []).extend(messages)
            count += got
            if deadline is None:
                if not got:
                    break
                deadline = time.monotonic() + min(self.poll_timeout, 0.5)
            elif not got or time.monotonic() >= deadline:
                break
        return batch

    async def run(self, idle_exit: float | None = None) -> ConsumerStats:
        """Consume until ``stop()`` (or SIGTERM via the CLI); ``idle_exit`` seconds without
        messages also ends the run (for batch jobs and tests)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.abc import ConsumerRebalanceListener

        owner = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await owner._on_assigned(consumer, assigned)

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            **self.consumer_options,
        )
        consumer.subscribe([self.topic], listener=_Listener())
        await consumer.start()
        last_message = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = await self._gather(consumer)
                if not any(batch.values()):
                    if idle_exit is not None and time.monotonic() - last_message > idle_exit:
                        break
                    continue
                last_message = time.monotonic()
                if self.stats.first_message is None:
                    self.stats.first_message = last_message
                rows, letters, offsets = self._split(batch)
                self.stats.consumed += sum(len(m) for m in batch.values())
                if not offsets:
                    continue
                if letters:
                    await asyncio.to_thread(self._write_dead_letters, letters)
                    self.stats.dead_letters += len(letters)
                await asyncio.to_thread(self._write, rows, offsets)
                self.stats.written += len(rows)
                self.stats.commits += 1
                self.stats.last_commit = time.monotonic()
                for partition, offset in offsets.items():
                    self._next[partition] = offset + 1
                try:
                    await consumer.commit({TopicPartition(self.topic, p): o + 1 for p, o in offsets.items()})
                except Exception as exc:  # lag bookkeeping only; Delta holds the truth
                    logger.info("kafka offset commit failed (%s); continuing", exc)
                if self.compact_every and self.stats.commits % self.compact_every == 0:
                    await asyncio.to_thread(self._compact)
                if self.progress is not None:
                    self.progress(self.stats)
        finally:
            await consumer.stop()
        return self.stats
