"""ASGI and WSGI type aliases, in one place (no dependency on any framework's typing).

The WSGI names are typeshed's own (``_typeshed.wsgi``, type-checking only), so
``app.wsgi_app = TracingWSGIMiddleware(app.wsgi_app)`` type-checks against Flask and werkzeug.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

Headers = list[tuple[str, str]]

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse as StartResponse
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

    ExcInfo = OptExcInfo
    WSGIApp = WSGIApplication
    Environ = WSGIEnvironment
else:
    ExcInfo = tuple
    StartResponse = WSGIApp = Callable[..., Any]
    Environ = dict
