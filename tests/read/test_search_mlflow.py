"""search_traces against MLflow's own search grammar (``mlflow.utils.search_utils.SearchTraceUtils``)
on the same traces: for a filter MLflow accepts, the same trace ids; for one it rejects, a
``SearchFilterError``; for an order_by of MLflow's attribute fields, the same order (ties broken by
timestamp DESC, then trace id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracewire
from tests.read.search_data import BASE_MS, COUNT, shaped_id, write_shaped_table
from tracewire.model import Trace
from tracewire.read.filter import SearchFilterError

pytest.importorskip("deltalake")
search_utils = pytest.importorskip("mlflow.utils.search_utils")
mlflow_entities = pytest.importorskip("mlflow.entities")
from mlflow.exceptions import MlflowException  # noqa: E402

SearchTraceUtils = search_utils.SearchTraceUtils


class _MlflowInfo:
    """An MLflow ``TraceInfo`` built from the same trace, plus the ``end_time_ms`` attribute that
    MLflow's SQL store computes (its in-memory evaluator reads attributes by name)."""

    def __init__(self, trace: Trace):
        self._info = mlflow_entities.TraceInfo.from_dict(trace.info.to_dict())
        self.end_time_ms = self._info.timestamp_ms + (self._info.execution_time_ms or 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._info, name)


@pytest.fixture(scope="module")
def shaped_traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Trace]]:
    return write_shaped_table(tmp_path_factory.mktemp("mlflow-parity"))


@pytest.fixture(scope="module")
def shaped(shaped_traces: tuple[str, list[Trace]]) -> Iterator[tuple[str, list[_MlflowInfo]]]:
    path, traces = shaped_traces
    yield path, [_MlflowInfo(t) for t in traces]


def mlflow_ids(infos: list[_MlflowInfo], filter_string: str) -> set[str]:
    return {i.request_id for i in SearchTraceUtils.filter(infos, filter_string)}


def our_ids(table: str, filter_string: str) -> set[str]:
    return {t.info.trace_id for t in tracewire.search_traces(table, filter_string, max_results=1000)}


_PREFIXES = st.sampled_from(["", "attribute.", "attributes.", "trace."])
_TIMES = st.integers(BASE_MS - 500, BASE_MS + (COUNT // 3 + 1) * 250)


def _q(value: str, double: bool) -> str:
    return f'"{value}"' if double else f"'{value}'"


@st.composite
def string_clause(draw: st.DrawFn) -> str:
    field, values = draw(st.sampled_from([
        ("status", ["OK", "ERROR", "ok", "IN_PROGRESS"]),
        ("client_request_id", ["req-1", "req-10", "req-2", "nope"]),
        ("request_id", [shaped_id(i) for i in (0, 7, 14, 23, 99)]),
    ]))
    prefix, double = draw(_PREFIXES), draw(st.booleans())
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"]))
    if op in ("IN", "NOT IN"):
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
        return f"{prefix}{field} {op} ({', '.join(_q(v, False) for v in chosen)})"
    value = draw(st.sampled_from(values))
    if op in ("LIKE", "ILIKE"):
        value = draw(st.sampled_from([value, value[:2] + "%", "%" + value[-2:], value[0] + "_%", "%"]))
    return f"{prefix}{field} {op} {_q(value, double)}"


@st.composite
def numeric_clause(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(["timestamp_ms", "`timestamp`", "execution_time_ms", "execution_time",
                                  "end_time_ms", "end_time"]))
    prefix = draw(_PREFIXES) if field != "`timestamp`" else ""
    op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]))
    durations = st.sampled_from([0, 100, 200, 300, 350, 600, 700])
    value = draw(durations if "execution" in field else _TIMES)
    return f"{prefix}{field} {op} {value}"


@st.composite
def map_clause(draw: st.DrawFn) -> str:
    field, values = draw(st.sampled_from([
        ("tags.env", ["prod", "dev", "PROD"]), ("tag.env", ["prod", "dev"]),
        ("metadata.tenant", ["acme", "globex"]), ("request_metadata.tenant", ["acme"]),
        ("name", ["POST /chat", "agent", "GET /items/{id}"]), ("trace.name", ["POST /embed", "agent"]),
        ("run_id", ["run-0", "run-1"]), ("tags.`mlflow.traceName`", ["agent"]),
    ]))
    op = draw(st.sampled_from(["=", "!=", "LIKE", "ILIKE"] + (["IS NULL", "IS NOT NULL"]
                                                              if "." in field and "name" not in field
                                                              else [])))
    if op.startswith("IS"):
        return f"{field} {op}"
    value = draw(st.sampled_from(values))
    if op in ("LIKE", "ILIKE"):
        value = draw(st.sampled_from([value, value[:2] + "%", "%" + value[-2:], "%"]))
    return f"{field} {op} {_q(value, draw(st.booleans()))}"


valid_filters = st.lists(st.one_of(string_clause(), numeric_clause(), map_clause()),
                         min_size=1, max_size=3).map(" AND ".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter_string=valid_filters)
def test_valid_filters_match_the_same_traces_as_mlflow(shaped: tuple[str, list[_MlflowInfo]],
                                                        filter_string: str) -> None:
    table, infos = shaped
    assert our_ids(table, filter_string) == mlflow_ids(infos, filter_string)


@pytest.mark.parametrize("filter_string", [
    "status = 'ok'", "trace.status = 'ERROR'", "attributes.status = \"OK\"", "trace.name = 'agent'",
    f"trace.timestamp_ms >= {BASE_MS + 1000}", f"`timestamp` < {BASE_MS + 500}",
    "trace.client_request_id = 'req-4'", "execution_time > 300", f"end_time_ms <= {BASE_MS + 600}",
    f"attribute.request_id IN ('{shaped_id(7)}', '{shaped_id(14)}')", "tags.env != 'prod'",
    "metadata.tenant LIKE 'glob%'",
    "run_id = 'run-1'", "status NOT IN ('OK')", "name ILIKE 'post%' AND tags.env IS NULL",
])
def test_mlflow_spellings(shaped: tuple[str, list[_MlflowInfo]], filter_string: str) -> None:
    table, infos = shaped
    expected = mlflow_ids(infos, filter_string)
    assert our_ids(table, filter_string) == expected
    if filter_string != "status = 'ok'":
        assert expected, "a spelling test that matches nothing proves little"


_INVALID = [
    "colour = 'red'", "status > 'OK'", "tags.env > 'x'", "timestamp_ms LIKE '1%'",
    "execution_time_ms ILIKE '%'", "client_request_id = 5", "metadata.tenant = 5", "status = OK",
    "status = 'OK' OR status = 'ERROR'", "status =", "= 'OK'", "nope.status = 'OK'",
    "attributes.colour = 'x'", "trace.nope = 'x'", "status IN 'OK'", "tags.env IS 'x'",
    "metadata.tenant > 'a'", "name > 'a'", "end_time_ms LIKE 'x'",
    "text = 'weather'", "trace.text > 'a'"
]


@pytest.mark.parametrize("filter_string", _INVALID)
def test_filters_mlflow_rejects_are_rejected(shaped: tuple[str, list[_MlflowInfo]],
                                             filter_string: str) -> None:
    table, infos = shaped
    with pytest.raises((MlflowException, TypeError, KeyError, AttributeError)):
        SearchTraceUtils.filter(infos, filter_string)
    with pytest.raises(SearchFilterError):
        tracewire.search_traces(table, filter_string)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid=valid_filters, bad=st.sampled_from(_INVALID[:10]))
def test_an_invalid_clause_spoils_the_filter_in_both(shaped: tuple[str, list[_MlflowInfo]], valid: str,
                                                     bad: str) -> None:
    table, infos = shaped
    filter_string = f"{bad} AND {valid}"  # MLflow checks a clause when it evaluates it: put it first
    with pytest.raises((MlflowException, TypeError, KeyError, AttributeError)):
        SearchTraceUtils.filter(infos, filter_string)
    with pytest.raises(SearchFilterError):
        tracewire.search_traces(table, filter_string)


# Deliberate differences (README): tracewire rejects a dangling or missing AND that MLflow's
# sqlparse-based parser lets through, and accepts IS NULL / IN / numbers on more fields.
_STRICTER = ["status = 'OK' AND", "status = 'OK' status = 'ERROR'"]
_LENIENT = ["client_request_id IS NULL", "tags.env IN ('prod', 'dev')", "execution_time_ms IN (100, 200)",
            "text LIKE '%sunny%'"]  # bare text: a keyword to sqlparse


@pytest.mark.parametrize("filter_string", _STRICTER)
def test_stricter_than_mlflow(shaped: tuple[str, list[_MlflowInfo]], filter_string: str) -> None:
    table, infos = shaped
    SearchTraceUtils.filter(infos, filter_string)
    with pytest.raises(SearchFilterError):
        tracewire.search_traces(table, filter_string)


@pytest.mark.parametrize("filter_string", _LENIENT)
def test_more_lenient_than_mlflow(shaped: tuple[str, list[_MlflowInfo]], filter_string: str) -> None:
    table, infos = shaped
    with pytest.raises((MlflowException, TypeError)):
        SearchTraceUtils.filter(infos, filter_string)
    assert tracewire.search_traces(table, filter_string)


_ORDER_FIELDS = ["timestamp_ms", "timestamp", "attributes.timestamp_ms", "`timestamp`", "execution_time_ms",
                 "execution_time", "end_time_ms", "status", "request_id", "trace.status"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order_by=st.lists(st.tuples(st.sampled_from(_ORDER_FIELDS), st.sampled_from(["", " ASC", " DESC",
                                                                                   " asc", " desc"])),
                         max_size=2).map(lambda items: [f + d for f, d in items]),
       max_results=st.integers(1, COUNT + 1))
def test_order_is_mlflows_order(shaped: tuple[str, list[_MlflowInfo]], order_by: list[str],
                                max_results: int) -> None:
    table, infos = shaped
    expected = [i.request_id for i in SearchTraceUtils.sort(infos, order_by)][:max_results]
    found = tracewire.search_traces(table, order_by=order_by, max_results=max_results)
    assert [t.info.trace_id for t in found] == expected


def test_shaped_table_has_ties(shaped: tuple[str, list[_MlflowInfo]]) -> None:
    """The order test above is only meaningful if timestamps and durations tie and ids are not in
    time order."""
    _, infos = shaped
    assert len({i.timestamp_ms for i in infos}) == COUNT // 3
    assert len({i.execution_time_ms for i in infos}) < COUNT // 2
    by_time = [i.request_id for i in sorted(infos, key=lambda i: i.timestamp_ms)]
    assert by_time != sorted(by_time)


# --- span and full-text filters: MLflow evaluates them in its SQL store only, so the same traces
# --- go into a real SqlAlchemyStore on a local SQLite file and its search_traces is the reference.


@pytest.fixture(scope="module")
def sql_store(shaped_traces: tuple[str, list[Trace]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(store, experiment id): MLflow's tracking store holding the shaped traces (~20 s: migrations)."""
    sqlalchemy_store = pytest.importorskip("mlflow.store.tracking.sqlalchemy_store")
    path = tmp_path_factory.mktemp("mlflow-sql")
    store = sqlalchemy_store.SqlAlchemyStore(f"sqlite:///{path}/mlflow.db", str(path / "artifacts"))
    experiment = store.create_experiment("tracewire-parity")
    for trace in shaped_traces[1]:
        data = trace.to_dict()
        data["info"]["trace_location"] = {"type": "MLFLOW_EXPERIMENT",
                                          "mlflow_experiment": {"experiment_id": experiment}}
        theirs = mlflow_entities.Trace.from_dict(data)
        store.start_trace(theirs.info)
        store.log_spans(experiment, theirs.data.spans)
    return store, experiment


def sql_ids(sql_store: Any, filter_string: str) -> set[str]:
    store, experiment = sql_store
    infos, _ = store.search_traces(locations=[experiment], filter_string=filter_string, max_results=1000)
    return {i.trace_id for i in infos}


@st.composite
def span_clause(draw: st.DrawFn) -> str:
    field, values = draw(st.sampled_from([
        ("span.name", ["llm", "retrieve", "tool_call", "GET /items/{id}", "agent", "nope"]),
        ("span.type", ["LLM", "TOOL", "CHAIN", "EMBEDDING", "UNKNOWN", "AGENT"]),
        ("span.status", ["OK", "ERROR", "UNSET"]),
    ]))
    op = draw(st.sampled_from(["=", "!=", "IN", "NOT IN", "LIKE", "RLIKE"]))
    if op in ("IN", "NOT IN"):
        chosen = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
        return f"{field} {op} ({', '.join(_q(v, False) for v in chosen)})"
    value = draw(st.sampled_from(values))
    if op == "LIKE":
        value = draw(st.sampled_from([value, value[:2] + "%", "%" + value[-2:], "%"]))
    if op == "RLIKE":
        value = draw(st.sampled_from([value, "^" + value[:2], value[-2:] + "$", "_"]))
    return f"{field} {op} {_q(value, draw(st.booleans()))}"


_TEXT = st.sampled_from(["sunny", "weather", "tool down", "Zürich", "embed", "nothing like this"])
text_clause = st.tuples(st.sampled_from(["trace.text", "attributes.text", "span.content"]),
                        st.sampled_from(["LIKE", "ILIKE"]), _TEXT).map(lambda c: f"{c[0]} {c[1]} '%{c[2]}%'")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filter_string=st.lists(st.one_of(span_clause(), text_clause, string_clause(), map_clause()),
                              min_size=1, max_size=3).filter(lambda cs: any(c.startswith(("span", "t"))
                                                                            for c in cs)).map(" AND ".join))
def test_span_and_text_filters_match_mlflows_sql_store(sql_store: Any, shaped: tuple[str, list[_MlflowInfo]],
                                                       filter_string: str) -> None:
    assert our_ids(shaped[0], filter_string) == sql_ids(sql_store, filter_string)
