"""Where traces go. Heavy sinks (Kafka, Delta) are imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinks.base import Sink
from sinks.jsonl import JsonlSink
from sinks.memory import MemorySink

if TYPE_CHECKING:
    from sinks.delta import DeltaTableSink
    from sinks.kafka import KafkaSink
    from sinks.mlflow import MlflowSink
    from sinks.otlp import OtlpSink

_LAZY = {
    "KafkaSink": "sinks.kafka", "DeltaTableSink": "sinks.delta",
    "MlflowSink": "sinks.mlflow", "OtlpSink": "sinks.otlp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sinks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["DeltaTableSink", "JsonlSink", "KafkaSink", "MemorySink", "MlflowSink", "OtlpSink", "Sink"]
