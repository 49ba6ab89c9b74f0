"""The sink registry: ``TRACING_DESTINATION`` URIs to sink instances.

This is the only place where ``tracewire`` reaches into ``sinks``, and it does so lazily, so a
Kafka or Delta dependency is imported only when such a destination is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from tracewire.config import Settings

_SCHEMES: dict[str, str | Callable[[str, Settings], Any]] = {
    "memory": "sinks.memory:MemorySink",
    "jsonl": "sinks.jsonl:JsonlSink",
    "kafka": "sinks.kafka:KafkaSink",
    "delta": "sinks.delta:DeltaTableSink",
    "otlp+http": "sinks.otlp:OtlpSink",
    "otlp+https": "sinks.otlp:OtlpSink",
    "mlflow+http": "sinks.mlflow:MlflowSink",
    "mlflow+https": "sinks.mlflow:MlflowSink",
}


def scheme_of(uri: str) -> str:
    scheme, sep, _ = uri.partition(":")
    if not sep or not scheme:
        raise ValueError(
            f"destination {uri!r} has no scheme; expected one of "
            f"{', '.join(s + ':' for s in sorted(_SCHEMES))}"
        )
    return scheme.lower()


def validate(uris: Iterable[str]) -> None:
    """Raise ``ValueError`` for a URI whose scheme no sink handles."""
    for uri in uris:
        scheme = scheme_of(uri)
        if scheme not in _SCHEMES:
            raise ValueError(
                f"unknown destination scheme {scheme!r} in {uri!r}; known: {', '.join(sorted(_SCHEMES))}"
            )


def register_scheme(scheme: str, factory: Callable[[str, Settings], Any]) -> None:
    """Let ``TRACING_DESTINATION`` name a custom sink: ``factory(uri, settings) -> Sink``."""
    _SCHEMES[scheme.lower()] = factory


def create_sink(uri: str, settings: Settings) -> Any:
    scheme = scheme_of(uri)
    target = _SCHEMES.get(scheme)
    if target is None:
        validate([uri])
    assert target is not None
    if callable(target):
        return target(uri, settings)
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_uri(uri, settings)


def create_sinks(uris: Iterable[str], settings: Settings) -> list[Any]:
    """One sink per URI; a URI whose sink cannot be built is logged and skipped."""
    import logging

    sinks = []
    for uri in uris:
        try:
            sinks.append(create_sink(uri, settings))
        except Exception as exc:
            logging.getLogger(__name__).error(
                "tracewire: cannot use destination %r (%s: %s); its traces are not exported",
                uri, type(exc).__name__, exc,
            )
    return sinks
