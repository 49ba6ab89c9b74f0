"""The aiokafka producer's life cycle, and the two private aiokafka hooks the sink relies on.

- ``BatchBuilder._build``: encodes and compresses a record batch once and caches it; calling it
  on a thread first moves compression off the event loop (the codecs release the GIL).
- ``AIOKafkaProducer._message_accumulator.fail_all``: fails queued sends so ``stop()`` does not
  wait ``request_timeout_ms`` on a dead broker.

Both are optional here (without them the sink is slower or stops later, never wrong), and
``tests/sinks/test_kafka_hooks.py`` fails with a clear message when an aiokafka upgrade removes
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 0.4  # under the 0.5 s the pipeline grants aclose() at a late shutdown
BUILD_HOOK = "_build"
ACCUMULATOR_HOOK = "_message_accumulator"


def zstd_available() -> bool:
    try:
        from aiokafka.codec import has_zstd
    except ImportError:
        return False
    return bool(has_zstd())


def build_hook(builder: Any) -> Any:
    """The record batch's build-and-cache function, or None (aiokafka then builds on send)."""
    return getattr(builder, BUILD_HOOK, None)


async def start_producer(client_options: dict[str, Any], producer_options: dict[str, Any]) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options, **producer_options)
    try:
        await producer.start()
    except BaseException:
        # A half-started producer holds a sender task and sockets; close before retrying.
        await close(producer)
        raise
    return producer


async def create_topic(
    client_options: dict[str, Any], topic: str, partitions: int, replication: int | None
) -> list[tuple[int, str]]:
    """Create ``topic``; the errors other than "already exists", as (code, message)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_options)
    try:
        await admin.start()
        if replication is None:
            # Three copies where the cluster has them, one on a single-broker dev cluster.
            cluster = await admin.describe_cluster()
            replication = max(1, min(3, len(cluster.get("brokers", ()) or ())))
        response = await admin.create_topics([NewTopic(topic, partitions, replication)])
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), CLOSE_TIMEOUT)
    return [(code, message) for _topic, code, message in getattr(response, "topic_errors", ())
            if code not in (0, 36)]  # 36: TOPIC_ALREADY_EXISTS


async def close(producer: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """Stop ``producer`` within ``timeout``.  Whatever it still holds was given up by the caller
    (counted lost by the pipeline, or to be resent by a new producer), so it is failed, not
    flushed: a dead broker cannot make this wait."""
    _fail_pending(producer)
    stop = asyncio.ensure_future(producer.stop())
    try:
        await asyncio.wait_for(asyncio.shield(stop), timeout)
    except asyncio.TimeoutError:
        logger.debug("tracewire: the Kafka producer did not stop within %.1fs", timeout)
    except asyncio.CancelledError:
        stop.cancel()
        raise
    except Exception:
        # E.g. aiokafka's sender tripping over a failed in-flight batch it meant to re-queue.
        logger.debug("tracewire: stopping the Kafka producer failed", exc_info=True)
    else:
        return
    if not stop.done():
        # Cancelling propagates into aiokafka's sender and its in-flight requests; give them a
        # moment to unwind so no task is left pending when the worker loop closes.
        stop.cancel()
        await asyncio.wait([stop], timeout=0.1)
    client = getattr(producer, "client", None)
    if client is not None:  # stop() did not get as far as closing the connections
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 0.1)


def _fail_pending(producer: Any) -> None:
    # aiokafka's stop() waits for every queued message (it expires only after
    # request_timeout_ms); failing them lets stop() close the connections now.
    accumulator = getattr(producer, ACCUMULATOR_HOOK, None)
    if accumulator is not None:
        from aiokafka.errors import KafkaConnectionError

        accumulator.fail_all(KafkaConnectionError("tracewire: producer closed with the broker unreachable"))
