"""The private aiokafka hooks KafkaSink relies on (sinks/_kafka_producer.py) still exist.

Without them the sink stays correct but compresses on the event loop, or waits
``request_timeout_ms`` to stop with a dead broker: an aiokafka upgrade that removes one must be
noticed here, with a message saying what to do, not as a slowdown in production.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiokafka")

from sinks import _kafka_producer as producers


def test_batch_builder_still_has_the_build_and_cache_hook() -> None:
    from aiokafka.producer.message_accumulator import BatchBuilder

    assert callable(getattr(BatchBuilder, producers.BUILD_HOOK, None)), (
        f"aiokafka's BatchBuilder lost {producers.BUILD_HOOK!r}: KafkaSink._prebuild can no longer "
        "compress off the event loop; find the new build hook or drop the pre-build step"
    )


def test_producer_still_has_the_accumulator_it_fails_at_close() -> None:
    from aiokafka import AIOKafkaProducer

    async def make() -> object:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        try:
            return getattr(producer, producers.ACCUMULATOR_HOOK, None)
        finally:
            await producer.client.close()

    accumulator = asyncio.run(make())
    assert accumulator is not None and callable(getattr(accumulator, "fail_all", None)), (
        f"aiokafka's producer lost {producers.ACCUMULATOR_HOOK}.fail_all: KafkaSink.aclose with a dead "
        "broker would wait request_timeout_ms; find the new way to fail queued sends"
    )


def test_build_hook_returns_the_encoded_batch() -> None:
    from aiokafka import AIOKafkaProducer

    async def build() -> bytes:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
        try:
            builder = producer.create_batch()
            builder.append(timestamp=None, key=b"k", value=b"payload", headers=[])
            builder.close()
            hook = producers.build_hook(builder)
            assert hook is not None
            return bytes(hook())
        finally:
            await producer.client.close()

    assert b"payload" in asyncio.run(build())
