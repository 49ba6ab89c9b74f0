"""The FastAPI example under a real uvicorn process exporting to a real Kafka broker (tansu)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

import tracewire
from tests.e2e.servers import (
    DEPLOYMENT,
    assert_one_complete_trace_each,
    drive,
    free_port,
    gunicorn_argv,
    running,
    uvicorn_argv,
)
from tests.kafka_broker import Broker, Message, read_topic, unique_topic
from tracewire.export.record import SCHEMA_VERSION

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]




def kafka_env(broker: Broker, topic: str, **extra: str) -> dict[str, str]:
    return {"ENABLE_TRACING": "true", "TRACING_DESTINATION": f"kafka://{broker.bootstrap}/{topic}",
            **DEPLOYMENT, **extra}


def check_messages(messages: list[Message], sent: dict[str, dict[str, str]]) -> None:
    """Exactly one message per request, loadable by MLflow, with §6's key and headers."""
    from mlflow.entities import Trace as MlflowTrace

    counts = Counter(json.loads(m.value)["info"]["client_request_id"] for m in messages)
    want = Counter(list(sent))
    assert counts == want, sorted((counts - want) + (want - counts))
    assert_one_complete_trace_each([tracewire.Trace.from_json(m.value) for m in messages], sent)
    for message in messages:
        trace = MlflowTrace.from_dict(json.loads(message.value))
        expected = sent[str(trace.info.client_request_id)]
        assert message.key == expected["trace_id"].encode()
        assert message.headers == {
            "content-type": b"application/json", "tracewire-schema": SCHEMA_VERSION.encode(),
            "trace-id": expected["trace_id"].encode(), "session-id": expected["session"].encode(),
            "user-id": expected["user"].encode(),
        }


def test_concurrent_requests_one_message_each(broker: Broker) -> None:
    topic = unique_topic("e2e")
    port = free_port()
    argv = uvicorn_argv("examples.fastapi_app.app:app", port)
    with running(argv, kafka_env(broker, topic), port) as server:
        sent = asyncio.run(drive(server.base_url, n=60))
        # The server keeps running: the traces arrive through the normal batched export.
        messages = read_topic(broker.bootstrap, topic, expected=len(sent))
        check_messages(messages, sent)
        assert server.stop() in (0, -15), server.log()
    assert len(read_topic(broker.bootstrap, topic, expected=len(sent))) == len(sent)  # none re-sent


def test_sigterm_right_after_a_burst_delivers_it_once(broker: Broker) -> None:
    topic = unique_topic("e2e-term")
    port = free_port()
    # A batch interval longer than the test: only the shutdown flush can deliver the burst.
    env = kafka_env(broker, topic, TRACING_BATCH_INTERVAL="600", TRACING_BATCH_SIZE="10000")
    with running(uvicorn_argv("examples.fastapi_app.app:app", port), env, port) as server:
        sent = asyncio.run(drive(server.base_url, n=80))
        assert server.stop() in (0, -15), server.log()  # uvicorn re-raises SIGTERM after shutdown
    check_messages(read_topic(broker.bootstrap, topic, expected=len(sent)), sent)


def test_gunicorn_preload_workers_sigterm_after_a_burst(broker: Broker) -> None:
    """Two forked workers, each with its own producer (made after the fork); SIGTERM flushes both."""
    topic = unique_topic("e2e-gunicorn")
    port = free_port()
    env = kafka_env(broker, topic, TRACING_BATCH_INTERVAL="600", TRACING_BATCH_SIZE="10000")
    with running(gunicorn_argv("examples.flask_app.app:app", port), env, port) as server:
        sent = asyncio.run(drive(server.base_url, n=60))
        assert server.stop() == 0, server.log()
    messages = read_topic(broker.bootstrap, topic, expected=len(sent))
    counts = Counter(json.loads(m.value)["info"]["client_request_id"] for m in messages)
    assert counts == Counter(list(sent))  # every request once: nothing lost, nothing sent twice
    assert_one_complete_trace_each([tracewire.Trace.from_json(m.value) for m in messages], sent)


def test_broker_down_when_the_app_starts(broker: Broker) -> None:
    """Requests are served fast with no broker; their traces arrive once it comes up."""
    if broker.external:
        pytest.skip("TRACEWIRE_TEST_KAFKA names an external broker; this test starts its own")
    late = Broker()  # a free port, nothing listening on it yet
    topic = unique_topic("e2e-late")
    port = free_port()
    argv = uvicorn_argv("examples.fastapi_app.app:app", port)
    try:
        with running(argv, kafka_env(late, topic, TRACING_EXPORT_TIMEOUT="2"), port) as server:
            started = time.monotonic()
            sent = asyncio.run(drive(server.base_url, n=40))
            elapsed = time.monotonic() - started
            assert elapsed < 10, f"40 requests took {elapsed:.1f}s with the broker down"
            late.start()
            check_messages(read_topic(late.bootstrap, topic, expected=len(sent)), sent)
            assert server.stop() in (0, -15), server.log()
    finally:
        late.kill()
