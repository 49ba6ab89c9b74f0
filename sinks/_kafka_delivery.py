"""Delivery state of one batch across the pipeline's retries of it.

Record indices move from ``pending`` (per partition, still to send) to ``sending`` (one future
per record batch handed to the producer) to ``delivered`` or ``rejected``; a failed send puts
its indices back in ``pending``, so a retry sends exactly what is not yet acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracewire.export.record import TraceRecord


class Delivery:
    __slots__ = ("batch", "delivered", "pending", "rejected", "sending", "split")

    def __init__(self, batch: Sequence[TraceRecord]) -> None:
        self.batch = batch
        self.pending: dict[int, list[int]] | None = None  # partition -> indices, once known
        self.sending: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        self.delivered = 0
        self.rejected: set[int] = set()
        self.split: set[int] = set()  # partitions whose records now go one per batch

    @property
    def unacknowledged(self) -> int:
        return len(self.batch) - self.delivered - len(self.rejected)

    def harvest(self, warn: Callable[..., None]) -> BaseException | None:
        """Settle finished sends; return the first retriable error (its records are pending again)."""
        error: BaseException | None = None
        still: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        pending = self.pending if self.pending is not None else {}
        for partition, indices, future in self.sending:
            if not future.done():
                still.append((partition, indices, future))
                continue
            exc: BaseException | None = (
                asyncio.CancelledError() if future.cancelled() else future.exception()
            )
            if exc is None:
                self.delivered += len(indices)
            elif is_record_error(exc) and len(indices) == 1:
                self.rejected.add(indices[0])
                record = self.batch[indices[0]]
                warn("broker rejected trace %s (%d bytes): %s", record.trace_id, record.size, exc)
            else:
                pending.setdefault(partition, []).extend(indices)
                if is_record_error(exc):
                    # One record spoils the whole batch: resend them one by one to find it.
                    self.split.add(partition)
                elif error is None:
                    # A cancelled send (producer thrown away) is resent on the next attempt.
                    error = exc if not isinstance(exc, asyncio.CancelledError) else ConnectionError(
                        "Kafka producer was closed with sends in flight"
                    )
        self.sending = still
        self.pending = pending
        return error


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Done-callback: a send whose batch was given up on must not log "never retrieved"."""
    if not future.cancelled():
        future.exception()


def is_record_error(exc: BaseException) -> bool:
    """A permanent error about this one record (too large, corrupt), not about the sink."""
    from aiokafka import errors

    if not isinstance(exc, errors.BrokerResponseError) or exc.retriable:
        return False
    return not isinstance(exc, (
        errors.TopicAuthorizationFailedError, errors.ClusterAuthorizationFailedError,
        errors.InvalidTopicError, errors.UnknownTopicOrPartitionError,
    ))
