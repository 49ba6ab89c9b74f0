"""What recording needs from the process, injected by ``tracewire.runtime``: whether tracing is
on, the settings in force, and where a finished trace goes.

Recording never imports the export side: ``runtime.configure`` sets ``RECORDER.on_finish`` to
the export pipeline's ``submit``.  Head sampling and ids live here too.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tracewire import config

_getrandbits = random.getrandbits


def _nowhere(trace: Any) -> None:
    """Where finished traces go until the process is wired (``tracewire.runtime``)."""


class Recorder:
    __slots__ = ("enabled", "index_live", "last_trace_id", "on_finish", "settings")

    def __init__(self) -> None:
        self.settings: config.Settings = config.load()
        self.enabled: bool = self.settings.enabled  # the one attribute checked per request/call
        self.on_finish: Callable[[Any], None] = _nowhere  # takes the finished LiveTrace
        self.last_trace_id: str | None = None
        self.index_live = False  # set once a TracingClient exists (see recording.live.LIVE_TRACES)

    def use(self, settings: config.Settings) -> None:
        self.settings = settings
        self.enabled = settings.enabled


RECORDER = Recorder()


def new_trace_hex() -> str:
    return "%032x" % (_getrandbits(128) or 1)


def new_span_hex() -> str:
    return "%016x" % (_getrandbits(64) or 1)


def head_sampled(trace_hex: str, rate: float) -> bool:
    """Deterministic head sampling from the trace id (same decision in every service)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int(trace_hex[16:], 16) < rate * 2**64
