"""``tracewire consume``: a Kafka topic of traces into a Delta inference table; each Kafka record
becomes exactly one row (or one dead letter), whatever the crashes and rebalances in between.

Consumers in one group split the partitions.  Every Delta commit carries, per partition, an app
transaction ``(tracewire-consume:<group>:<topic>:<p>, last offset)`` in the same atomic commit as
the rows (the kafka-delta-ingest technique), and rows keep their (partition, offset) until then.
The commit is conditional: it reads the offsets the table recorded at snapshot V, drops what is
already in, and writes based on V, so a concurrent commit for one of its partitions (a consumer
that still held the partition during a rebalance) fails it; it then re-reads, drops and retries,
never exits.  On every partition assignment the consumer seeks past the table's offset.  Kafka
offsets are committed too, after Delta, for lag monitoring only.

What this does not remove: the same trace produced twice (a producer retry after a lost
acknowledgement) is two Kafka records and so two rows; the consumer adds no duplicate of its own.

Every column is validated; a record that cannot become a valid row goes to the dead-letter
table (its own app transactions, same rule, committed before the rows) with its error, topic,
partition and offset, and never blocks a partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracewire.export.record import TraceRecord, indexed_columns
from tracewire.export.table import PARTITION_COLUMN, dead_letter_schema, records_to_table
from tracewire.keys import TraceMetadataKey
from tracewire.model import parse_request_time

logger = logging.getLogger(__name__)

SUPPORTED_SCHEMA = "3"


class PoisonMessage(ValueError):
    """A message that is not a tracewire trace."""


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# request_time must fit a datetime (years 1..9999) and a timestamp[us] column.
_MIN_TIME_MS = -62135596800000
_MAX_TIME_MS = 253402300799999
_MAX_ERROR_CODES = 10_000


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise PoisonMessage(f"bad {name}: expected a string or null, got {type(value).__name__}")


def _str_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PoisonMessage(f"bad {name}: expected an object, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PoisonMessage(f"bad {name}[{key!r}]: expected a string, got {type(item).__name__}")
    return value


def _opt_int(value: Any, name: str, low: int, high: int) -> int | None:
    """An integer column from a JSON int or a digit string (span attributes are JSON text)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 25:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PoisonMessage(f"bad {name}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise PoisonMessage(f"bad {name}: {value} out of range [{low}, {high}]")
    return value


def record_from_message(value: bytes | None) -> TraceRecord:
    """Parse one Kafka message value into a row; ``PoisonMessage`` when it is not a valid trace.

    Every column is validated (types, ranges, nulls), so a record returned here always becomes
    a valid inference-table row.  Reads the info block and the root span's attributes only: no
    Span objects, so the consumer keeps up with the topic.
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
    metadata = _str_map(info.get("trace_metadata"), "info.trace_metadata")
    version = metadata.get(TraceMetadataKey.SCHEMA_VERSION)
    if version != SUPPORTED_SCHEMA:
        raise PoisonMessage(f"unsupported trace schema version {version!r}")
    tags = _str_map(info.get("tags"), "info.tags")
    body = data.get("data")
    if not isinstance(body, dict) or not isinstance(body.get("spans"), list):
        raise PoisonMessage("not a trace: data.spans is not a list")
    spans = body["spans"]
    if not all(isinstance(s, dict) for s in spans):
        raise PoisonMessage("not a trace: a span is not an object")
    root = next((s for s in spans if not s.get("parent_span_id")), None)
    attributes = root.get("attributes") if root is not None else None
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise PoisonMessage(f"bad root span attributes: expected an object, got {type(attributes).__name__}")
    raw_time = info.get("request_time")
    if raw_time is None:
        raise PoisonMessage("not a trace: info.request_time is missing")
    if not isinstance(raw_time, (str, int)) or isinstance(raw_time, bool):
        raise PoisonMessage(f"bad info.request_time: {type(raw_time).__name__}")
    try:
        request_time = parse_request_time(raw_time)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PoisonMessage(f"bad info.request_time: {exc}") from None
    if not _MIN_TIME_MS <= request_time <= _MAX_TIME_MS:
        raise PoisonMessage(f"bad info.request_time: {request_time} out of range")
    state = info.get("state")
    if state is None:
        state = "STATE_UNSPECIFIED"
    if not isinstance(state, str):
        raise PoisonMessage(f"bad info.state: expected a string, got {type(state).__name__}")
    fraction_text = metadata.get(TraceMetadataKey.SAMPLING_FRACTION, "1.0")
    try:
        fraction = float(fraction_text)
    except ValueError:
        raise PoisonMessage(f"bad sampling fraction {fraction_text[:50]!r}") from None
    if not 0.0 < fraction <= 1.0:
        raise PoisonMessage(f"bad sampling fraction {fraction_text[:50]!r}: not in (0, 1]")
    codes = metadata.get(TraceMetadataKey.LOGGING_ERROR_CODES)
    error_codes = codes.split(",") if codes else []
    if len(error_codes) > _MAX_ERROR_CODES:
        raise PoisonMessage("bad tracewire.logging_error_codes: too many codes")
    columns = indexed_columns(metadata, attributes.get)
    return TraceRecord(
        trace_id=trace_id,
        payload=value,
        client_request_id=_opt_str(info.get("client_request_id"), "info.client_request_id"),
        request_time_ms=request_time,
        state=state,
        status_code=_opt_int(columns["status_code"], "http.status_code", 0, _INT32_MAX),
        execution_duration_ms=_opt_int(info.get("execution_duration_ms"), "info.execution_duration_ms",
                                       0, _INT64_MAX),
        sampling_fraction=fraction,
        session_id=columns["session_id"],
        user_id=columns["user_id"],
        request=_opt_str(columns["request"], "root span inputs"),
        response=_opt_str(columns["response"], "root span outputs"),
        metadata=metadata,
        tags=tags,
        logging_error_codes=error_codes,
    )


@dataclass(frozen=True, slots=True)
class _Partition:
    topic: str
    partition: int


@dataclass(slots=True)
class _Item:
    """A row or dead letter with the Kafka position it came from, kept until its commit."""

    partition: int
    offset: int
    value: Any


@dataclass
class ConsumerStats:
    consumed: int = 0
    written: int = 0
    dead_letters: int = 0
    skipped_duplicates: int = 0
    commits: int = 0
    commit_conflicts: int = 0
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
        self._revoked: set[int] = set()
        self._rebalancing = False
        self._last_activity = time.monotonic()
        self._stop = asyncio.Event()

    def app_id(self, partition: int) -> str:
        return f"tracewire-consume:{self.group}:{self.topic}:{partition}"

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from ``run``."""
        self._stop.set()

    # -- Delta -------------------------------------------------------------------------------------
    def _open(self, path: str) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(path, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def _table_offset(self, partition: int) -> int | None:
        table = self._open(self.table)
        version = None if table is None else table.transaction_version(self.app_id(partition))
        return None if version is None else int(version)

    def _conditional_append(
        self, path: str, items: list[_Item], last: dict[int, int], build: Callable[[list[Any]], Any],
        partition_by: list[str] | None,
    ) -> tuple[int, dict[int, int]]:
        """Append ``items`` whose offset the table has not recorded yet, with the app transactions
        ``(partition, last offset)`` in the same commit; returns (items written, recorded offsets).

        The write is based on the snapshot the recorded offsets were read from, so a concurrent
        commit carrying one of our partitions' transactions fails this one (delta-rs's conflict
        checker); then re-read, drop what is already in, and retry.  Never gives up on a conflict.
        """
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError, DeltaError

        attempt = 0
        while True:
            table = self._open(path)
            if table is None:
                # Create it empty first, so that every commit with rows is based on a snapshot.
                try:
                    write_deltalake(path, build([]), mode="append", partition_by=partition_by,
                                    storage_options=self.storage_options)
                except (CommitFailedError, DeltaError) as exc:
                    if not isinstance(exc, CommitFailedError) and "already exists" not in str(exc).lower():
                        raise
                continue
            recorded: dict[int, int] = {}
            for partition in last:
                version = table.transaction_version(self.app_id(partition))
                if version is not None:
                    recorded[partition] = int(version)
            todo = {p: o for p, o in last.items() if o > recorded.get(p, -1)}
            if not todo:
                return 0, recorded
            keep = [it for it in items if it.offset > recorded.get(it.partition, -1)]
            if logger.isEnabledFor(logging.DEBUG):
                spans = {p: (min((it.offset for it in items if it.partition == p), default=None), o)
                         for p, o in todo.items()}
                logger.debug("commit to %s at version %s: recorded %s, batch %s, keep %d of %d",
                             path, table.version(), recorded, spans, len(keep), len(items))
            txns = [Transaction(app_id=self.app_id(p), version=o) for p, o in sorted(todo.items())]
            try:
                write_deltalake(
                    table, build([it.value for it in keep]),
                    mode="append", partition_by=partition_by, storage_options=self.storage_options,
                    commit_properties=CommitProperties(app_transactions=txns, max_commit_retries=50),
                )
                return len(keep), recorded
            except (CommitFailedError, DeltaError) as exc:
                # A concurrent commit for one of our partitions (a rebalance race), or two
                # processes creating the table at once: re-read and retry.
                if not isinstance(exc, CommitFailedError) and "already exists" not in str(exc).lower():
                    raise
                attempt += 1
                self.stats.commit_conflicts += 1
                delay = min(0.05 * 2 ** min(attempt, 6), 2.0) * (0.5 + random.random())
                logger.info("delta commit to %s lost a race (%s); re-reading and retrying in %.2fs",
                            path, exc, delay)
                time.sleep(delay)

    def _commit(
        self, rows: list[_Item], letters: list[_Item], last: dict[int, int], row_table: Any
    ) -> tuple[int, int, dict[int, int]]:
        """Dead letters first (their own table and transactions), then the rows.  Returns
        (rows written, dead letters written, offsets recorded by the table before this commit)."""
        import pyarrow as pa


        dead = 0
        if letters:
            dl_last: dict[int, int] = {}
            for it in letters:
                dl_last[it.partition] = max(dl_last.get(it.partition, -1), it.offset)
            dead, _ = self._conditional_append(
                self.dead_letter_table, letters, dl_last,
                lambda values: pa.Table.from_pylist(values, schema=dead_letter_schema()), None)
        written, recorded = self._conditional_append(
            self.table, rows, last, lambda kept: row_table.take(pa.array(kept, pa.int64())),
            [PARTITION_COLUMN])
        return written, dead, recorded

    def write_messages(self, messages: Sequence[Any]) -> tuple[int, int]:
        """Write Kafka messages (anything with ``topic, partition, offset, key, value``) exactly
        once: rows and dead letters the table already holds are dropped; returns (rows, dead
        letters) written.  ``run`` does this for each batch; call it to feed the table from
        your own Kafka client."""
        batch: dict[Any, list[Any]] = {}
        for message in messages:
            batch.setdefault(_Partition(message.topic, message.partition), []).append(message)
        rows, letters, offsets, row_table = self._split(batch)
        if not offsets:
            return 0, 0
        written, dead, _ = self._commit(rows, letters, offsets, row_table)
        self.stats.written += written
        self.stats.dead_letters += dead
        return written, dead

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

    async def _reseek(self, consumer: Any, partitions: list[Any]) -> None:
        assigned = {tp.partition: tp for tp in consumer.assignment()}
        for partition in sorted({tp.partition for tp in partitions} & set(assigned)):
            tp = assigned[partition]
            done = await asyncio.to_thread(self._table_offset, partition)
            if done is not None:
                self._next[partition] = done + 1
                consumer.seek(tp, done + 1)
            else:
                self._next.pop(partition, None)
                await consumer.seek_to_beginning(tp)
            logger.info("partition %s came back during a rebalance; resuming at %s", partition,
                        "the beginning" if done is None else done + 1)

    def _split(
        self, batch: dict[Any, list[Any]]
    ) -> tuple[list[_Item], list[_Item], dict[int, int], Any]:
        """Rows and dead letters, each tagged with its (partition, offset), and the last offset
        per partition.  A record that cannot become a valid row (including its Arrow row) is a
        dead letter; the rest of the batch is written."""

        rows: list[_Item] = []
        letters: list[_Item] = []
        offsets: dict[int, int] = {}
        now = dt.datetime.now(dt.timezone.utc)

        def dead(tp: Any, message: Any, error: str) -> None:
            letters.append(_Item(tp.partition, message.offset, {
                "topic": tp.topic, "partition": tp.partition, "offset": message.offset,
                "key": message.key, "value": message.value, "error": error[:10_000],
                "received_at": now,
            }))

        candidates: list[tuple[Any, Any, TraceRecord]] = []
        for tp, messages in batch.items():
            start = self._next.get(tp.partition)
            for message in messages:
                if start is not None and message.offset < start:
                    self.stats.skipped_duplicates += 1
                    continue
                offsets[tp.partition] = max(offsets.get(tp.partition, -1), message.offset)
                try:
                    candidates.append((tp, message, record_from_message(message.value)))
                except PoisonMessage as exc:
                    dead(tp, message, str(exc))
                except Exception as exc:  # a bug in validation must not stop the partition
                    dead(tp, message, f"{type(exc).__name__}: {exc}")
        try:
            row_table = records_to_table([c[2] for c in candidates])
            good = candidates
        except Exception:  # find the records Arrow rejects, one by one
            good = []
            for tp, message, record in candidates:
                try:
                    records_to_table([record])
                    good.append((tp, message, record))
                except Exception as exc:
                    dead(tp, message, f"not a valid row: {type(exc).__name__}: {exc}")
            row_table = records_to_table([record for _, _, record in good])
        # Rows refer to their line in ``row_table``: built once, filtered at commit time.
        rows = [_Item(tp.partition, message.offset, i) for i, (tp, message, _) in enumerate(good)]
        return rows, letters, offsets, row_table

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
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener

        owner = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                owner._revoked.update(tp.partition for tp in revoked)
                owner._rebalancing = True

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await owner._on_assigned(consumer, assigned)
                owner._rebalancing = False
                owner._last_activity = time.monotonic()

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            **self.consumer_options,
        )
        consumer.subscribe([self.topic], listener=_Listener())
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # no "Unclosed AIOKafkaConsumer" when the broker is unreachable
            raise
        self._last_activity = time.monotonic()
        try:
            while not self._stop.is_set():
                self._revoked.clear()
                batch = await self._gather(consumer)
                if not any(batch.values()):
                    # Idle means no message for idle_exit seconds since the last message or
                    # assignment, never counting a rebalance in progress (the group's join can
                    # take longer than idle_exit while partitions still wait to be drained).
                    if self._rebalancing:
                        self._last_activity = time.monotonic()
                    elif idle_exit is not None and time.monotonic() - self._last_activity > idle_exit:
                        break
                    continue
                self._last_activity = time.monotonic()
                if self.stats.first_message is None:
                    self.stats.first_message = self._last_activity
                self.stats.consumed += sum(len(m) for m in batch.values())
                # Partitions lost while gathering belong to their new owner now: drop them here
                # (the conditional commit would drop them anyway; this just saves the work).
                owned = {tp.partition for tp in consumer.assignment()} - self._revoked
                dropped = [tp for tp, m in batch.items() if m and tp.partition not in owned]
                batch = {tp: m for tp, m in batch.items() if tp.partition in owned}
                if dropped:
                    # The fetch position moved past the dropped messages: if the partition came
                    # back to us, resume from the table's offset, or they would never be written.
                    await self._reseek(consumer, dropped)
                rows, letters, offsets, row_table = self._split(batch)
                if not offsets:
                    continue
                written, dead, recorded = await asyncio.to_thread(
                    self._commit, rows, letters, offsets, row_table)
                self.stats.written += written
                self.stats.dead_letters += dead
                self.stats.skipped_duplicates += len(rows) - written
                self.stats.commits += 1
                self.stats.last_commit = time.monotonic()
                assigned = {tp.partition: tp for tp in consumer.assignment()}
                for partition, offset in offsets.items():
                    self._next[partition] = max(offset, recorded.get(partition, -1)) + 1
                    if recorded.get(partition, -1) > offset and partition in assigned:
                        consumer.seek(assigned[partition], recorded[partition] + 1)
                to_commit = {assigned[p]: n for p, n in self._next.items() if p in offsets and p in assigned}
                if to_commit:
                    try:
                        await consumer.commit(to_commit)
                    except Exception as exc:  # lag bookkeeping only; Delta holds the truth
                        logger.info("kafka offset commit failed (%s); continuing", exc)
                if self.compact_every and self.stats.commits % self.compact_every == 0:
                    await asyncio.to_thread(self._compact)
                if self.progress is not None:
                    self.progress(self.stats)
        finally:
            await consumer.stop()
        return self.stats
