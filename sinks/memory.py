"""``MemorySink``: keeps exported traces in memory, for users' own tests.

    sink = MemorySink()
    tracewire.configure(enabled=True, sinks=[sink])
    ...
    tracewire.flush()
    assert sink.traces[0].info.state == "OK"
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from sinks.base import Sink
from tracewire.model import Trace

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord


class MemorySink(Sink):
    name = "memory"
    _default: ClassVar[MemorySink | None] = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[TraceRecord] = []

    @classmethod
    def default(cls) -> MemorySink:
        """The process-wide instance behind the ``memory:`` URI."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> MemorySink:
        return cls.default()

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        with self._lock:
            self._records.extend(batch)

    @property
    def records(self) -> list[TraceRecord]:
        """The exported records (serialized payload plus index fields)."""
        with self._lock:
            return list(self._records)

    @property
    def traces(self) -> list[Trace]:
        """The exported traces, parsed back from the JSON that was exported."""
        return [Trace.from_json(r.payload) for r in self.records]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._records = []
