"""The counters ``tracewire.stats()`` reports for the export side (SPEC §6), all zero: what a
process that has exported nothing yet reports, without importing the pipeline."""

from __future__ import annotations

from typing import Any


def empty_stats() -> dict[str, Any]:
    return {
        "accepted": 0, "sampled_out": 0, "dropped_full": 0, "truncated": 0,
        "processing_errors": 0, "lost_at_shutdown": 0, "queue_traces": 0, "queue_bytes": 0,
        "exported": {}, "export_errors": {}, "sinks": {},
    }
