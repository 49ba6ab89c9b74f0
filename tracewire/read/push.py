"""``tracewire push``: re-send stored traces (a Delta inference table or a JSONL file) to any
destination — yesterday's errors into the MLflow UI, a Kafka topic replay, a Phoenix instance.

Traces go oldest first, in batches, through the destination's own sink (the same code as live
export), each call under ``TRACING_EXPORT_TIMEOUT`` and retried with backoff while the
destination is down.  A trace id is sent at most once per run, even when the table holds it
more than once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tracewire import config
from tracewire.export.record import TraceRecord
from tracewire.keys import TraceMetadataKey
from tracewire.model import Trace

logger = logging.getLogger(__name__)

_ATTEMPTS = 6
_BACKOFF_START = 0.2


@dataclasses.dataclass
class PushStats:
    matched: int = 0  # distinct trace ids the filter selected (after --limit)
    sent: int = 0  # accepted by the destination
    rejected: int = 0  # refused for good by the destination (or unreadable)
    started: float = dataclasses.field(default_factory=time.monotonic)


def _record(payload: str | bytes) -> TraceRecord:
    data = payload.encode() if isinstance(payload, str) else payload
    trace = Trace.from_json(data)
    try:
        fraction = float(trace.info.trace_metadata.get(TraceMetadataKey.SAMPLING_FRACTION, "1"))
    except ValueError:
        fraction = 1.0
    return TraceRecord.from_trace(trace, data, fraction)


def _is_jsonl(table: str) -> bool:
    return table.startswith("jsonl:") or (table.endswith((".jsonl", ".ndjson")) and os.path.isfile(table))


def _dataset(table: str) -> Any:
    """The stored traces as a pyarrow dataset in the inference-table schema (None: empty)."""
    if _is_jsonl(table):
        import pyarrow.dataset as ds

        from tracewire.export.table import records_to_table

        path = table.removeprefix("jsonl:").removeprefix("//")
        records = []
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    records.append(_record(line))
                except Exception as exc:
                    logger.warning("tracewire push: %s line %d is not a trace (%s); skipped",
                                   path, number, exc)
        return ds.dataset(records_to_table(records)) if records else None
    from tracewire.read.search import open_dataset

    return open_dataset(table.removeprefix("delta:"))


def select(table: str, filter_string: str | None = None, limit: int | None = None) -> tuple[Any, list[str]]:
    """The dataset and the distinct trace ids to send, oldest first."""
    from tracewire.read.search import build_filter

    expression = build_filter(filter_string)  # a bad filter fails before anything is read
    dataset = _dataset(table)
    if dataset is None:
        return None, []
    matches = dataset.to_table(columns=["trace_id", "request_time"], filter=expression)
    matches = matches.sort_by([("request_time", "ascending"), ("trace_id", "ascending")])
    ids = list(dict.fromkeys(i for i in matches.column("trace_id").to_pylist() if i))
    return dataset, ids[:limit] if limit is not None else ids


def _chunks(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


async def _export(sink: Any, records: list[TraceRecord], timeout: float) -> int:
    backoff = _BACKOFF_START
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            rejected = await asyncio.wait_for(sink.export(records), timeout)
            return rejected if isinstance(rejected, int) and rejected > 0 else 0
        except Exception as exc:
            if attempt == _ATTEMPTS:
                raise
            logger.warning("tracewire push: %s failed (%s: %s); retrying in %.1fs",
                           getattr(sink, "name", "sink"), type(exc).__name__, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
    return 0  # unreachable


def push_traces(
    table: str,
    to: str,
    filter_string: str | None = None,
    limit: int | None = None,
    *,
    batch_size: int = 200,
    settings: config.Settings | None = None,
    progress: Callable[[PushStats], None] | None = None,
) -> PushStats:
    """Send the traces of ``table`` matching ``filter_string`` to the destination URI ``to``."""
    from tracewire.export.destinations import create_sink, validate

    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1")
    validate([to])
    settings = settings or config.load()
    sink = create_sink(to, settings)  # a bad URI raises ValueError here, before reading
    dataset, ids = select(table, filter_string, limit)
    stats = PushStats(matched=len(ids))

    async def run() -> None:
        import pyarrow.dataset as ds

        try:
            for chunk in _chunks(ids, batch_size):
                rows = dataset.to_table(columns=["trace_id", "trace"],
                                        filter=ds.field("trace_id").isin(chunk))
                payloads: dict[str, str] = {}
                for trace_id, payload in zip(rows.column("trace_id").to_pylist(),
                                             rows.column("trace").to_pylist(), strict=True):
                    payloads.setdefault(trace_id, payload)
                records = []
                for trace_id in chunk:
                    try:
                        records.append(_record(payloads[trace_id]))
                    except Exception as exc:
                        logger.warning("tracewire push: trace %s cannot be read (%s); skipped", trace_id, exc)
                        stats.rejected += 1
                rejected = await _export(sink, records, settings.export_timeout) if records else 0
                stats.rejected += rejected
                stats.sent += len(records) - rejected
                if progress is not None:
                    progress(stats)
        finally:
            await sink.aclose()

    asyncio.run(run())
    return stats
