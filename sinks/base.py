"""The Sink interface: where finished traces go.

A sink receives batches of ``TraceRecord`` (serialized, sampled, truncated traces) on the export
worker's event loop.  It knows nothing about the web framework, the queue or the retries: raise
to have the batch retried with backoff; return the number of records it rejected for good
(counted as errors, not retried); do blocking I/O with care, it runs on the worker loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord


class Sink:
    name: str = "sink"

    async def export(self, batch: Sequence[TraceRecord]) -> int | None:
        """Deliver ``batch``; raise to retry it, or return how many records were rejected."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections and files; called once at shutdown."""

    def after_fork(self) -> None:
        """Called in a forked child: drop anything (connections, producers) of the parent."""

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> Any:
        raise NotImplementedError(f"{cls.__name__} cannot be created from a URI")
