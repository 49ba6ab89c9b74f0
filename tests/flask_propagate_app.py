"""A Flask app with ``PROPAGATE_EXCEPTIONS = True`` behind the WSGI middleware (issue 12).

Imported by tests/middleware/test_flask_propagate.py and served by gunicorn in its e2e test.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

import tracewire
from middleware import TracingWSGIMiddleware


class PaymentError(RuntimeError):
    pass


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(PROPAGATE_EXCEPTIONS=True, **config)

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/boom")
    def boom() -> Any:
        raise PaymentError("card declined")

    @app.get("/nested")
    def nested() -> Any:
        charge()
        return {"never": "reached"}

    @app.get("/handled-then-boom")
    def handled_then_boom() -> Any:
        # An earlier, handled error of the same type recorded on the request span by the app:
        # the one that escapes is a different exception and must be recorded too.
        span = tracewire.get_current_active_span()
        assert span is not None
        span.record_exception(PaymentError("retrying"))
        raise PaymentError("card declined")

    app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app, exclude_paths=[r"^/health$"])  # type: ignore[method-assign]
    return app


@tracewire.trace
def charge() -> None:
    raise PaymentError("card declined")


app = make_app()
