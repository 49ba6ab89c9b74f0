"""search_traces over a real Delta table: every field and operator of SPEC §8."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracewire
from tracewire.read.filter import MAX_CLAUSES, MAX_IN_VALUES, SearchFilterError, parse_filter
from tracewire.read.search import build_filter

pytest.importorskip("deltalake")

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Eight traces with known fields, written through the real pipeline into Delta."""
    path = tmp_path_factory.mktemp("search") / "traces"
    tracewire.configure(enabled=True, destination=f"delta:{path}", batch_interval=0.01)
    try:
        for i in range(8):
            name = "POST /chat" if i % 2 == 0 else "GET /items/{id}"
            with tracewire.start_span(name) as span:
                span.set_attribute("http.status_code", 500 if i == 3 else 200)
                if i == 3:
                    span.set_status("ERROR")
                tracewire.update_current_trace(
                    client_request_id=f"req-{i}",
                    session_id=f"sess-{i % 3}",
                    user=None if i == 7 else f"user-{i % 2}",
                    metadata={"tenant": "acme" if i < 4 else "globex", "mlflow.modelId": f"m-{i}"},
                    tags={"env": "prod" if i % 2 else "dev"},
                )
                time.sleep(0.02 * i)  # distinct durations and request times, even on a loaded machine
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    yield str(path)


def ids(traces: list[tracewire.Trace]) -> list[str]:
    return sorted(t.info.client_request_id or "" for t in traces)


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        ("status = 'ERROR'", ["req-3"]),
        ("state = 'OK'", ["req-0", "req-1", "req-2", "req-4", "req-5", "req-6", "req-7"]),
        ("status != 'OK'", ["req-3"]),
        ("status_code >= 500", ["req-3"]),
        ("status_code = 200 AND session_id = 'sess-0'", ["req-0", "req-6"]),
        ("client_request_id = 'req-5'", ["req-5"]),
        ("client_request_id IN ('req-1', 'req-2', 'nope')", ["req-1", "req-2"]),
        ("session_id NOT IN ('sess-0', 'sess-1')", ["req-2", "req-5"]),
        ("user_id IS NULL", ["req-7"]),
        ("user_id IS NOT NULL AND user_id = 'user-1'", ["req-1", "req-3", "req-5"]),
        ("name = 'POST /chat'", ["req-0", "req-2", "req-4", "req-6"]),
        ("name LIKE 'GET %'", ["req-1", "req-3", "req-5", "req-7"]),
        ("name ILIKE 'post%'", ["req-0", "req-2", "req-4", "req-6"]),
        ("metadata.tenant = 'globex'", ["req-4", "req-5", "req-6", "req-7"]),
        ("metadata.`mlflow.modelId` = 'm-2'", ["req-2"]),
        ("metadata.`mlflow.trace.session` = 'sess-2'", ["req-2", "req-5"]),
        ("tags.env = 'prod' AND metadata.tenant = 'acme'", ["req-1", "req-3"]),
        ("tags.missing IS NULL AND client_request_id = 'req-0'", ["req-0"]),
        (f"timestamp_ms > {NOW_MS - 3_600_000}", [f"req-{i}" for i in range(8)]),
        (f"timestamp_ms < {NOW_MS - 3_600_000}", []),
        ("execution_time_ms >= 0", [f"req-{i}" for i in range(8)]),
        ("execution_time_ms > 100000", []),
    ],
    ids=lambda v: str(v)[:40],
)
def test_filters(table: str, filter_string: str, expected: list[str]) -> None:
    assert ids(tracewire.search_traces(table, filter_string)) == expected


def test_trace_id_lookup_returns_full_trace(table: str) -> None:
    some = tracewire.search_traces(table, "client_request_id = 'req-4'")[0]
    again = tracewire.search_traces(table, f"trace_id = '{some.info.trace_id}'")
    assert [t.info.trace_id for t in again] == [some.info.trace_id]
    assert again[0].data.spans[0].name == "POST /chat"


def test_order_by_and_max_results(table: str) -> None:
    newest = tracewire.search_traces(table, max_results=3)
    assert [t.info.client_request_id for t in newest] == ["req-7", "req-6", "req-5"]
    oldest = tracewire.search_traces(table, order_by=["timestamp_ms ASC"], max_results=2)
    assert [t.info.client_request_id for t in oldest] == ["req-0", "req-1"]
    slowest = tracewire.search_traces(table, order_by=["execution_time_ms DESC"], max_results=1)
    assert slowest[0].info.client_request_id == "req-7"


@pytest.mark.parametrize(
    ("filter_string", "message", "position"),
    [
        ("status = 'OK", "unclosed string literal", 9),
        ("colour = 'red'", "unknown field 'colour'", 0),
        ("status ~ 'OK'", "unexpected character '~'", 7),
        ("status LOOKS 'OK'", "unknown operator 'LOOKS'", 7),
        ("status = 'OK' OR state = 'ERROR'", "expected AND", 14),
        ("status_code > 'abc'", "status_code takes a number", 14),
        ("session_id > 'a'", "compares with", 11),
        ("user_id IS 'x'", "expected NULL", 11),
        ("status =", "got end of filter", 8),
        ("trace_id IN 'a'", r"expected \( after IN", 12),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_filters_point_at_the_token(filter_string: str, message: str, position: int) -> None:
    with pytest.raises(SearchFilterError, match=message) as caught:
        build_filter(filter_string)
    assert caught.value.position == position
    assert "^" in str(caught.value)


def test_bad_order_by(table: str) -> None:
    with pytest.raises(ValueError, match="cannot order by"):
        tracewire.search_traces(table, order_by=["colour DESC"])
    with pytest.raises(ValueError, match="ASC or DESC"):
        tracewire.search_traces(table, order_by=["timestamp_ms SIDEWAYS"])


def test_time_filters_prune_partitions() -> None:
    expression = str(build_filter(f"timestamp_ms >= {NOW_MS}"))
    assert "request_date" in expression


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"(?i)not.*(found|delta table)|no files"):
        tracewire.search_traces(str(tmp_path / "nope"))


def test_relative_table_path_with_time_filter(table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(table).parent)
    found = tracewire.search_traces(Path(table).name, f"timestamp_ms > {NOW_MS - 3_600_000}")
    assert len(found) == 8


@pytest.mark.parametrize(
    ("filter_string", "message", "position"),
    [
        ("timestamp_ms > 99999999999999999999", "timestamp_ms out of range", 15),
        ("timestamp_ms < -99999999999999999999", "timestamp_ms out of range", 15),
        ("timestamp_ms >= -9999999999999999", "timestamp_ms out of range", 16),
        ("status_code = 99999999999999999999", "status_code takes a number from", 14),
        ("status = 'OK' AND status_code IN (200, 2147483648)", "status_code takes a number", 39),
        ("execution_time_ms > 99999999999999999999", "execution_time_ms takes a number", 20),
        ("status_code = " + "9" * 400 + ".5", "number out of range", 14),
        ("trace_id = 'caf\udce9'", "not valid Unicode", 11),
        ("metadata.`caf\udce9` = 'x'", "not valid Unicode", 0),
    ],
    ids=lambda v: str(v)[:30],
)
def test_out_of_range_values_point_at_the_token(table: str, filter_string: str, message: str,
                                                position: int) -> None:
    with pytest.raises(SearchFilterError, match=message) as caught:
        tracewire.search_traces(table, filter_string)
    assert caught.value.position == position
    assert "^" in str(caught.value)


def test_number_of_clauses_is_bounded(table: str) -> None:
    clauses = [f"client_request_id != 'nope-{i}'" for i in range(10_000)]
    with pytest.raises(SearchFilterError, match=f"too many clauses: a filter holds at most {MAX_CLAUSES}"):
        tracewire.search_traces(table, " AND ".join(clauses))
    started = time.monotonic()
    found = tracewire.search_traces(table, " AND ".join(clauses[:MAX_CLAUSES]))
    assert len(found) == 8
    assert time.monotonic() - started < 10
    with pytest.raises(SearchFilterError, match="too many values"):
        build_filter("trace_id IN (" + ", ".join(f"'t{i}'" for i in range(MAX_IN_VALUES + 1)) + ")")


_WORDS = ["status", "state", "timestamp_ms", "status_code", "execution_time_ms", "trace_id", "name",
          "session_id", "user_id", "client_request_id", "metadata.tenant", "metadata.`a.b`", "tags.env",
          "AND", "OR", "IN", "NOT", "IS", "NULL", "LIKE", "ILIKE", "=", "!=", "<>", ">", ">=", "<", "<=",
          "(", ")", ",", "'OK'", "'x''y'", "'%'", "'", "`", "-", ".", "0", "-1", "1.5", "200",
          "99999999999999999999", "-99999999999999999999", "1e400", "9" * 330 + ".0", "'caf\udce9'",
          "metadata.`caf\udce9`", "RLIKE", "span.name", "span.type", "span.status", "trace.text",
          "span.content", "'%a%'", '"OK"', '"', "`timestamp`", "end_time_ms", "trace.status",
          "attributes.`x`", "'['", "'(?<=a)b'", "ASC"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.lists(st.sampled_from(_WORDS), max_size=12).map(" ".join),
    st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=10).map(" ".join),
    st.text(max_size=60),
))
def test_hostile_filters_only_raise_the_filter_error(table: str, filter_string: str) -> None:
    try:
        found = tracewire.search_traces(table, filter_string)
    except SearchFilterError as exc:
        assert 0 <= exc.position <= len(filter_string)
        assert "^" in str(exc)
    else:
        assert len(found) <= 8


SHARED_TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"


def write_shared_trace_id_table(path: Path) -> str:
    """Three requests carrying one traceparent (one trace id) and one other, through the real
    WSGI middleware into a real Delta table; returns the shared trace id."""
    from flask import Flask
    from werkzeug.test import Client

    from middleware import TracingWSGIMiddleware

    app = Flask(__name__)

    @app.get("/hello/<int:n>")
    def hello(n: int) -> dict[str, int]:
        return {"n": n}

    traceparent = f"00-{SHARED_TRACE_HEX}-b7ad6b7169203331-01"
    tracewire.configure(enabled=True, destination=f"delta:{path}", batch_interval=0.01)
    try:
        client = Client(TracingWSGIMiddleware(app))
        for n in range(3):
            response = client.get(f"/hello/{n}", headers={"traceparent": traceparent,
                                                          "X-Request-ID": f"shared-{n}"}, buffered=True)
            assert response.status_code == 200
            assert tracewire.flush(30)  # separate commits, as separate requests would be
        assert client.get("/hello/9", headers={"X-Request-ID": "alone"}, buffered=True).status_code == 200
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    found = tracewire.search_traces(str(path), "client_request_id LIKE 'shared-%'")
    shared = {t.info.trace_id for t in found}
    assert len(shared) == 1, shared
    return shared.pop()


def test_rows_sharing_a_trace_id_are_each_returned_once(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    trace_id = write_shared_trace_id_table(path)
    assert SHARED_TRACE_HEX in trace_id
    found = tracewire.search_traces(str(path), f"trace_id = '{trace_id}'")
    assert ids(found) == ["shared-0", "shared-1", "shared-2"]
    roots = {t.data.spans[0].span_id for t in found}
    assert len(roots) == 3, "one row per request: (trace id, root span id) tells them apart"
    everything = tracewire.search_traces(str(path), order_by=["timestamp_ms ASC"])
    assert [t.info.client_request_id for t in everything] == ["shared-0", "shared-1", "shared-2", "alone"]
    # A filter that matches one of the rows returns that row only, not its id-mates.
    one = tracewire.search_traces(str(path), f"trace_id = '{trace_id}' AND client_request_id = 'shared-1'")
    assert ids(one) == ["shared-1"]
    # max_results cuts rows, not ids.
    newest = tracewire.search_traces(str(path), max_results=2)
    assert [t.info.client_request_id for t in newest] == ["alone", "shared-2"]


# --- MLflow's spellings, span filters, full text and order on a table with controlled fields ---


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[tracewire.Trace]]:
    from tests.read.search_data import write_shaped_table

    return write_shaped_table(tmp_path_factory.mktemp("shaped"))


def trace_ids(traces: list[tracewire.Trace]) -> set[str]:
    return {t.info.trace_id for t in traces}


def having(traces: list[tracewire.Trace], **spans: str) -> set[str]:
    return {t.info.trace_id for t in traces if t.search_spans(**spans)}


def test_status_is_compared_exactly(shaped: tuple[str, list[tracewire.Trace]]) -> None:
    table, traces = shaped
    assert tracewire.search_traces(table, "status = 'ok'") == []
    assert tracewire.search_traces(table, "trace.status = 'Error'") == []
    errors = {t.info.trace_id for t in traces if t.info.state == "ERROR"}
    assert trace_ids(tracewire.search_traces(table, 'status = "ERROR"')) == errors
    assert trace_ids(tracewire.search_traces(table, "status ILIKE 'error'")) == errors


@pytest.mark.parametrize(("filter_string", "spans"), [
    ("span.name = 'llm'", {"name": "llm"}),
    ("span.name = 'GET /items/{id}'", {"name": "GET /items/{id}"}),
    ("span.type = 'TOOL'", {"span_type": "TOOL"}),
    ("span.type = \"EMBEDDING\"", {"span_type": "EMBEDDING"}),
])
def test_span_filters_find_traces_having_such_a_span(shaped: tuple[str, list[tracewire.Trace]],
                                                     filter_string: str, spans: dict[str, str]) -> None:
    table, traces = shaped
    expected = having(traces, **spans)
    assert expected and len(expected) < len(traces)
    assert trace_ids(tracewire.search_traces(table, filter_string, max_results=1000)) == expected


def test_span_filter_operators(shaped: tuple[str, list[tracewire.Trace]]) -> None:
    table, traces = shaped

    def search(filter_string: str) -> set[str]:
        return trace_ids(tracewire.search_traces(table, filter_string, max_results=1000))

    chat = having(traces, name="retrieve")
    agent = having(traces, name="tool_call")
    assert search("span.name IN ('retrieve', 'tool_call')") == chat | agent
    assert search("span.name LIKE 'retr%'") == chat
    assert search("span.name ILIKE 'RETR%'") == chat
    assert search("span.name RLIKE '^tool_'") == agent
    # As in MLflow, the span clauses of one filter hold for one and the same span.
    assert search("span.type IN ('LLM') AND span.name = 'llm'") == chat
    assert search("span.type IN ('RETRIEVER') AND span.name = 'llm'") == set()
    assert search("span.name = 'llm' AND trace.text LIKE '%sunny%'") == chat
    assert search("span.name = 'retrieve' AND trace.text LIKE '%sunny%'") == set()
    assert search("span.status = 'ERROR'") == agent
    # != is "has a span named otherwise": every trace has its root
    assert search("span.name != 'llm'") == trace_ids(traces)
    assert search("span.name NOT IN ('agent', 'tool_call')") == trace_ids(traces) - agent
    assert search("span.name = 'nope'") == set()
    assert search("span.name = 'llm' AND tags.env = 'prod'") == chat & {
        t.info.trace_id for t in traces if t.info.tags.get("env") == "prod"}
    ordered = tracewire.search_traces(table, "span.type = 'LLM'", order_by=["execution_time_ms DESC"],
                                      max_results=2)
    everything = tracewire.search_traces(table, "span.type = 'LLM'", order_by=["execution_time_ms DESC"])
    assert [t.info.trace_id for t in ordered] == [t.info.trace_id for t in everything][:2]
    assert [t.info.execution_duration_ms for t in everything] == sorted(
        (t.info.execution_duration_ms for t in everything), reverse=True)


def test_full_text_search(shaped: tuple[str, list[tracewire.Trace]]) -> None:
    table, traces = shaped
    chat = having(traces, name="retrieve")
    items = having(traces, name="GET /items/{id}")
    assert trace_ids(tracewire.search_traces(table, "trace.text LIKE '%sunny%'", max_results=1000)) == chat
    assert trace_ids(tracewire.search_traces(table, "text ILIKE '%SUNNY%'", max_results=1000)) == chat
    assert trace_ids(tracewire.search_traces(table, "trace.text LIKE '%Zürich%'", max_results=1000)) == items
    assert trace_ids(tracewire.search_traces(table, "span.content LIKE '%tool down%'", max_results=1000)) \
        == having(traces, name="tool_call")
    assert tracewire.search_traces(table, "trace.text LIKE '%no such words%'") == []


@pytest.mark.parametrize(("order_by", "key"), [
    (["name"], lambda t: t.info.tags.get("mlflow.traceName")),
    (["tags.env DESC"], lambda t: t.info.tags.get("env")),
    (["tag.env"], lambda t: t.info.tags.get("env")),
    (["metadata.tenant ASC"], lambda t: t.info.trace_metadata.get("tenant")),
    (["end_time_ms DESC"], lambda t: t.info.request_time + t.info.execution_duration_ms),
    (["status"], lambda t: t.info.state),
    (["execution_time DESC", "client_request_id"], lambda t: t.info.execution_duration_ms),
])
def test_order_by_fields(shaped: tuple[str, list[tracewire.Trace]], order_by: list[str], key: Any) -> None:
    table, traces = shaped
    found = tracewire.search_traces(table, order_by=order_by, max_results=1000)
    assert len(found) == len(traces)
    descending = order_by[0].endswith("DESC")
    present = [key(t) for t in found if key(t) is not None]
    assert present == sorted(present, reverse=descending)
    assert all(key(t) is None for t in found[len(present):]), "missing values sort last"
    # Ties: timestamp DESC, then trace id (when order_by has a single key)
    if len(order_by) == 1:
        for a, b in itertools.pairwise(found):
            if key(a) == key(b):
                assert (-a.info.request_time, a.info.trace_id) < (-b.info.request_time, b.info.trace_id)


def test_pages_are_stable(shaped: tuple[str, list[tracewire.Trace]]) -> None:
    """Equal keys no longer come back in arbitrary order: the top N is a prefix of the top N+1."""
    table = shaped[0]
    for order_by in (["status"], None, ["execution_time_ms"]):
        everything = [t.info.trace_id for t in tracewire.search_traces(table, order_by=order_by)]
        for n in (1, 4, 7, 13):
            top = tracewire.search_traces(table, order_by=order_by, max_results=n)
            assert [t.info.trace_id for t in top] == everything[:n]


@pytest.mark.parametrize(("order_by", "message"), [
    (["span.name"], "not one value per trace"),
    (["trace.text"], "not one value per trace"),
    (["tags."], "unexpected character"),
    (["timestamp_ms DESC extra"], "expected the end"),
    ([""], "empty order_by"),
])
def test_bad_order_by_fields(shaped: tuple[str, list[tracewire.Trace]], order_by: list[str],
                             message: str) -> None:
    with pytest.raises(SearchFilterError, match=message):
        tracewire.search_traces(shaped[0], order_by=order_by)


@pytest.mark.parametrize(("filter_string", "message", "position"), [
    ("name RLIKE '('", "not a regular expression", 11),
    ("span.colour = 'x'", "unknown span field", 0),
    ("span.name > 'a'", "compares with", 10),
    ("trace.text = 'x'", "compares with LIKE ILIKE", 11),
    ("status = 'OK' AND span.name = 'x", "unclosed string literal", 30),
    ('status = "OK', "unclosed string literal", 9),
])
def test_bad_new_spellings_point_at_the_token(filter_string: str, message: str, position: int) -> None:
    with pytest.raises(SearchFilterError, match=message) as caught:
        parse_filter(filter_string)
    assert caught.value.position == position


def test_regexes_re2_rejects_point_at_the_clause(shaped: tuple[str, list[tracewire.Trace]]) -> None:
    with pytest.raises(SearchFilterError, match="RE2") as caught:
        tracewire.search_traces(shaped[0], "status = 'OK' AND name RLIKE '(?<=P)OST'")
    assert caught.value.position == 18
    assert tracewire.search_traces(shaped[0], "name RLIKE '^P(OST|UT) '")


def test_span_clauses_are_not_a_table_scan() -> None:
    for filter_string in ("span.name = 'llm'", "trace.text LIKE '%x%'"):
        with pytest.raises(SearchFilterError, match="search_traces only"):
            build_filter(filter_string)
