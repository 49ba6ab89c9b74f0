"""search_traces over a real Delta table: every field and operator of SPEC §8."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracewire
from tracewire.read.search import SearchFilterError, build_filter

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
                time.sleep(0.002 * i)  # distinct durations and request times
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
