"""Context variables: the span that new spans attach to, per task and per thread.

Set them with a token and reset in ``finally`` so every scope restores what it found.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracewire.model import Span

current_span: ContextVar[Span | None] = ContextVar("tracewire_current_span", default=None)
# True on the export worker (its thread, its tasks, its default executor): nothing is traced there,
# so a sink whose export calls traced code cannot feed traces back into the pipeline.
suppressed: ContextVar[bool] = ContextVar("tracewire_suppressed", default=False)
