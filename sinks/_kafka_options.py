"""KafkaSink settings from outside code: the ``kafka://`` URI and the ``TRACING_KAFKA_*`` env vars."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from tracewire.config import parse_bool

logger = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def parse_uri(uri: str) -> tuple[list[str], str]:
    """``kafka://h1:9092,h2:9092/topic`` → (["h1:9092", "h2:9092"], "topic")."""
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "kafka" or not sep:
        raise ValueError(f"Kafka destination must look like kafka://host:port[,host:port]/topic, got {uri!r}")
    hosts, slash, topic = rest.partition("/")
    topic = topic.strip()
    if not slash or not topic:
        raise ValueError(f"Kafka destination {uri!r} names no topic: kafka://host:port[,host:port]/topic")
    if not TOPIC_RE.fullmatch(topic):
        raise ValueError(f"Kafka destination {uri!r}: invalid topic {topic!r} (1-249 of [A-Za-z0-9._-])")
    servers = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not part.strip():
            continue
        if not colon:
            host, port = port, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Kafka destination {uri!r}: bad broker address {part.strip()!r} (host:port)")
        servers.append(f"{host}:{port}")
    if not servers:
        raise ValueError(f"Kafka destination {uri!r} names no broker: kafka://host:port/topic")
    return servers, topic


def _int(text: str) -> int:
    return int(text.strip())


def _text(text: str) -> str:
    return text.strip()


# TRACING_KAFKA_<NAME> → constructor argument, parser.
_EXTRA: dict[str, Callable[[str], Any]] = {
    "key_by": _text, "compression_type": _text, "linger_ms": _int, "max_batch_size": _int,
    "acks": _text, "request_timeout_ms": _int, "max_request_size": _int,
    "send_timeout": lambda t: float(t.strip()), "security_protocol": lambda t: t.strip().upper(),
    "sasl_mechanism": lambda t: t.strip().upper(), "sasl_plain_username": _text,
    "sasl_plain_password": str, "ssl_cafile": _text, "ssl_certfile": _text, "ssl_keyfile": _text,
    "ssl_password": str, "create_topic": parse_bool, "num_partitions": _int,
    "replication_factor": _int, "client_id": _text,
}


def options_from_extra(extra: Mapping[str, str]) -> dict[str, Any]:
    """Parse the ``TRACING_KAFKA_*`` passthrough; a bad value is logged and its default kept."""
    options: dict[str, Any] = {}
    for key, raw in extra.items():
        if not key.startswith("kafka_"):
            continue
        name = key[len("kafka_"):]
        parse = _EXTRA.get(name)
        if parse is None:
            logger.warning("tracewire: ignoring unknown setting TRACING_%s", key.upper())
            continue
        try:
            options[name] = parse(raw)
        except ValueError as exc:
            logger.warning("tracewire: ignoring TRACING_%s=%r (%s)", key.upper(), raw, exc)
    return options
