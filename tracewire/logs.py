"""Warnings that repeat (a sink down, a full queue) logged at most once per interval per key,
with the count of those skipped: one outage is one line every 30 s, not one per trace."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

WARN_EVERY = 30.0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = WARN_EVERY) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._skipped: collections.Counter[str] = collections.Counter()

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                self._skipped[key] += 1
                return
            skipped = self._skipped.pop(key, 0)
            self._last[key] = now
        suffix = f" ({skipped} similar since the last warning)" if skipped else ""
        self.logger.warning(msg + suffix, *args)
