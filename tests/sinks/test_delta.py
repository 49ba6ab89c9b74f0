"""DeltaTableSink against real Delta tables on disk, read back by independent readers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tracewire
from sinks import DeltaTableSink

deltalake = pytest.importorskip("deltalake")


def write_traces(table: Path, n: int, prefix: str = "req") -> None:
    tracewire.configure(enabled=True, destination=f"delta:{table}", batch_interval=0.01)
    try:
        for i in range(n):
            with tracewire.start_span("POST /chat") as span:
                span.set_inputs({"question": f"q{i}"})
                span.set_attribute("http.status_code", 200 if i % 5 else 500)
                tracewire.update_current_trace(client_request_id=f"{prefix}-{i}",
                                               session_id=f"s{i % 3}", user="u1",
                                               metadata={"tenant": "acme"})
                span.set_outputs({"answer": f"a{i}"})
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)


def test_rows_schema_and_partitioning(tmp_path: Path) -> None:
    table = tmp_path / "traces"
    write_traces(table, 12)
    dt = deltalake.DeltaTable(str(table))
    assert dt.metadata().partition_columns == ["request_date"]
    names = [f.name for f in dt.schema().fields]
    assert names == [
        "trace_id", "client_request_id", "request_date", "request_time", "status_code", "state",
        "execution_duration_ms", "sampling_fraction", "session_id", "user_id", "request",
        "response", "trace", "request_metadata", "tags", "logging_error_codes",
    ]
    rows = dt.to_pyarrow_table().to_pylist()
    assert len(rows) == 12
    by_id = {r["client_request_id"]: r for r in rows}
    row = by_id["req-1"]
    assert row["status_code"] == 200 and row["state"] == "OK"
    assert row["session_id"] == "s1" and row["user_id"] == "u1"
    assert row["sampling_fraction"] == 1.0
    assert dict(row["request_metadata"])["tenant"] == "acme"
    assert dict(row["tags"])["mlflow.traceName"] == "POST /chat"
    assert row["request"] == '{"question":"q1"}'
    trace = tracewire.Trace.from_json(row["trace"])
    assert trace.info.trace_id == row["trace_id"]
    assert by_id["req-0"]["status_code"] == 500
    assert all(p.name.startswith("request_date=") for p in table.iterdir() if p.is_dir()
               and p.name != "_delta_log")


def test_polars_and_duckdb_read_the_same_rows(tmp_path: Path) -> None:
    table = tmp_path / "traces"
    write_traces(table, 7)
    expected = deltalake.DeltaTable(str(table)).to_pyarrow_table().num_rows
    polars = pytest.importorskip("polars")
    assert polars.read_delta(str(table)).height == expected
    duckdb = pytest.importorskip("duckdb")
    arrow = deltalake.DeltaTable(str(table)).to_pyarrow_dataset()  # noqa: F841 - read by duckdb
    assert duckdb.sql("select count(*) from arrow").fetchall() == [(expected,)]


def test_two_processes_append_concurrently(tmp_path: Path) -> None:
    table = tmp_path / "shared"
    script = textwrap.dedent(f"""
        import sys, tracewire
        tracewire.configure(enabled=True, destination="delta:{table}", batch_size=5,
                            batch_interval=0.01)
        for i in range(60):
            with tracewire.start_span("s"):
                tracewire.update_current_trace(client_request_id=f"p{{sys.argv[1]}}-{{i}}")
        assert tracewire.flush(60)
        stats = tracewire.stats()
        assert stats["exported"][f"delta:{table}"] == 60, stats
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(2)]
    assert [p.wait(180) for p in procs] == [0, 0]
    ids = deltalake.DeltaTable(str(table)).to_pyarrow_table(columns=["client_request_id"])
    values = ids.column("client_request_id").to_pylist()
    assert sorted(values) == sorted(f"p{n}-{i}" for n in range(2) for i in range(60))


def test_missing_path_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        DeltaTableSink.from_uri("delta:", tracewire.configure(enabled=False))


def test_fastapi_example_in_process_one_row_per_request(tmp_path: Path) -> None:
    """The FastAPI example with TRACING_DESTINATION=delta:...: one row per request."""
    import asyncio

    import httpx

    from examples.fastapi_app.app import app

    table = tmp_path / "inference"
    tracewire.configure(enabled=True, destination=f"delta:{table}", batch_interval=0.01)

    async def drive() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            responses = await asyncio.gather(*(
                client.post("/chat", json={"question": f"How do I enable tracing? {i}"},
                            headers={"X-Request-ID": f"inproc-{i}", "X-Session-ID": "sess-ex",
                                     "X-User-ID": "u-ex"})
                for i in range(12)
            ))
            health = await client.get("/health")  # excluded from tracing
        assert health.status_code == 200
        assert all(r.status_code == 200 for r in responses)
        return [r.headers["x-trace-id"] for r in responses]

    try:
        trace_ids = asyncio.run(drive())
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    rows = deltalake.DeltaTable(str(table)).to_pyarrow_table(
        columns=["trace_id", "client_request_id", "session_id", "user_id", "status_code", "state"]
    ).to_pylist()
    assert sorted(r["trace_id"] for r in rows) == sorted(trace_ids)
    assert sorted(r["client_request_id"] for r in rows) == sorted(f"inproc-{i}" for i in range(12))
    assert {(r["session_id"], r["user_id"], r["status_code"], r["state"]) for r in rows} == {
        ("sess-ex", "u-ex", 200, "OK")
    }
    found = tracewire.search_traces(str(table), "client_request_id = 'inproc-3'")
    assert [s.span_type for s in found[0].data.spans] == ["CHAIN", "RETRIEVER", "RERANKER", "LLM"]
