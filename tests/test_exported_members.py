"""The public surface (SPEC §3) is deliberate: this fails when it drifts."""

from __future__ import annotations

import subprocess
import sys

import middleware
import sinks
import tracewire

TRACEWIRE = [
    "Settings", "Span", "SpanEvent", "SpanType", "Trace", "TraceData", "TraceInfo", "TraceRecord",
    "TracingClient", "__version__", "configure", "flush", "get_active_trace_id",
    "get_current_active_span", "get_last_active_trace_id", "is_enabled", "propagate",
    "register_scheme", "search_traces", "shutdown", "start_span", "stats", "trace", "update_current_trace",
]


def test_tracewire_all() -> None:
    assert tracewire.__all__ == sorted(tracewire.__all__)
    assert tracewire.__all__ == TRACEWIRE
    for name in tracewire.__all__:
        assert hasattr(tracewire, name), name


def test_sinks_all() -> None:
    assert sinks.__all__ == sorted(sinks.__all__)
    assert set(sinks.__all__) >= {"JsonlSink", "MemorySink", "Sink"}


def test_middleware_all() -> None:
    assert middleware.__all__ == sorted(middleware.__all__)


def test_import_tracewire_is_light() -> None:
    code = (
        "import sys, tracewire\n"
        "heavy = [m for m in ('aiokafka', 'deltalake', 'pyarrow', 'middleware', 'sinks',"
        " 'fastapi', 'starlette', 'numpy', 'asyncio', 'ssl', 'tracewire.export.pipeline',"
        " 'tracewire.read') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
