"""Where traces go. Heavy sinks (Kafka, Delta) are imported on first use."""

from __future__ import annotations

from sinks.base import Sink
from sinks.jsonl import JsonlSink
from sinks.memory import MemorySink

__all__ = ["JsonlSink", "MemorySink", "Sink"]
