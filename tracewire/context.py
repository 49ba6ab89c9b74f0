"""Context variables: the span that new spans attach to, per task and per thread.

Set them with a token and reset in ``finally`` so every scope restores what it found.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracewire.model import Span

current_span: ContextVar[Span | None] = ContextVar("tracewire_current_span", default=None)
