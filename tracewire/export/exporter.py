"""What the export pipeline calls on a sink: the ``Exporter`` protocol.

``sinks.base.Sink`` implements it; any object with these methods works (OpenTelemetry's
``SpanExporter`` is the model).  The pipeline never imports a concrete sink: destinations are
built from URIs by ``tracewire.export.destinations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tracewire.export.record import TraceRecord


@runtime_checkable
class Exporter(Protocol):
    name: str

    async def export(self, batch: Sequence[TraceRecord]) -> int | None:
        """Deliver ``batch``; raise to have it retried, or return how many were rejected for good."""

    async def aclose(self) -> None:
        """Release connections and files; called once at shutdown."""
