"""How requests enter: ASGI and WSGI middleware opening a root span per request."""

from __future__ import annotations

__all__: list[str] = []
