"""``tracewire ui``: a read-only local web app over an inference table (SPEC §8).

Needs the ``ui`` extra (starlette, uvicorn); nothing here is imported on the request path.
"""

from __future__ import annotations

from tracewire.read.viewer.app import create_app

__all__ = ["create_app"]
