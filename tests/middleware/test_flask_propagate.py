"""Flask with ``PROPAGATE_EXCEPTIONS=True``: the escaping exception is recorded once on the root.

Flask's ``got_request_exception`` signal fires before it re-raises; the middleware then sees the
same exception leave the app.  Recorded twice before issue 12.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tests.flask_propagate_app import PaymentError, make_app


def exception_events(span: tracewire.Span) -> list[dict[str, Any]]:
    return [e.attributes for e in span.events if e.name == "exception"]


@pytest.mark.parametrize("config", [{}, {"TESTING": True}], ids=["propagate", "testing"])
def test_propagated_exception_is_recorded_once_on_the_root(sink: MemorySink, config: dict[str, Any]) -> None:
    with pytest.raises(PaymentError, match="card declined"):
        Client(make_app(**config)).get("/boom")
    trace = only_trace(sink)
    root = trace.root_span
    assert root is not None
    [event] = exception_events(root)
    assert (event["exception.type"], event["exception.message"]) == ("PaymentError", "card declined")
    assert trace.info.state == "ERROR" and root.status == "ERROR"
    assert root.attributes["http.status_code"] == 500


def test_exception_from_a_traced_function_is_once_on_each_span(sink: MemorySink) -> None:
    with pytest.raises(PaymentError):
        Client(make_app()).get("/nested")
    trace = only_trace(sink)
    spans = {s.name: s for s in trace.data.spans}
    assert len(exception_events(spans["charge"])) == 1
    assert len(exception_events(spans["GET /nested"])) == 1


def test_a_different_exception_of_the_same_type_is_not_taken_for_the_escaping_one(
    sink: MemorySink,
) -> None:
    with pytest.raises(PaymentError):
        Client(make_app()).get("/handled-then-boom")
    root = only_trace(sink).root_span
    assert root is not None
    assert [e["exception.message"] for e in exception_events(root)] == ["retrying", "card declined"]


@pytest.mark.e2e
def test_propagated_exception_is_recorded_once_under_gunicorn(tmp_path: Path) -> None:
    from tests.e2e.servers import free_port, gunicorn_argv, read_traces, running, tracing_env

    traces_file = tmp_path / "traces.jsonl"
    port = free_port()
    argv = gunicorn_argv("tests.flask_propagate_app:app", port, workers=1)
    with running(argv, tracing_env(traces_file), port) as server:
        for path in ("/boom", "/nested"):
            assert httpx.get(server.base_url + path, headers={"X-Request-ID": path}).status_code == 500
        assert server.stop() == 0, server.log()
    traces = {t.info.client_request_id: t for t in read_traces(traces_file)}
    assert set(traces) == {"/boom", "/nested"}
    for trace in traces.values():
        root = trace.root_span
        assert root is not None and trace.info.state == "ERROR"
        assert [e["exception.type"] for e in exception_events(root)] == ["PaymentError"]


def test_raw_wsgi_app_records_the_escaping_exception_beside_an_earlier_one(sink: MemorySink) -> None:
    from middleware import TracingWSGIMiddleware

    def app(environ: Any, start_response: Any) -> Any:
        span = tracewire.get_current_active_span()
        assert span is not None
        span.record_exception(PaymentError("retrying"))  # handled by the app, same type
        raise PaymentError("card declined")

    with pytest.raises(PaymentError, match="card declined"):
        Client(TracingWSGIMiddleware(app)).get("/pay")
    root = only_trace(sink).root_span
    assert root is not None
    assert [e["exception.message"] for e in exception_events(root)] == ["retrying", "card declined"]
