"""How requests enter: ASGI and WSGI middleware opening a root span per request.

    from middleware import TracingMiddleware        # app.add_middleware(TracingMiddleware)
    from middleware import TracingWSGIMiddleware    # app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app)
"""

from __future__ import annotations

from middleware.asgi import TracingMiddleware
from middleware.wsgi import TracingWSGIMiddleware

__all__ = ["TracingMiddleware", "TracingWSGIMiddleware"]
