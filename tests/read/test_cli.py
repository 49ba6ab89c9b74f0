"""The ``tracewire`` CLI, run as a real subprocess against a real Delta table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import tracewire
from tests.kafka_broker import Broker, unique_topic
from tracewire import SpanType

pytest.importorskip("deltalake")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracewire.read.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("cli") / "traces"
    tracewire.configure(enabled=True, destination=f"delta:{path}", batch_size=1, batch_interval=0.01)
    try:
        for i in range(3):
            with tracewire.start_span("POST /chat", span_type=SpanType.CHAIN) as root:
                root.set_inputs({"question": f"q{i}"})
                tracewire.update_current_trace(client_request_id=f"req-{i}", session_id="s1")
                with tracewire.start_span("retrieve", span_type=SpanType.RETRIEVER) as child:
                    child.set_outputs(["doc"] * 50)
                if i == 2:
                    root.record_exception(RuntimeError("llm timeout"))
            assert tracewire.flush(30)  # one commit per trace: files for compact to merge
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    yield str(path)


def test_help_on_each_command() -> None:
    for command in ([], ["search"], ["show"], ["compact"]):
        result = cli(*command, "--help")
        assert result.returncode == 0
        assert "usage: tracewire" in result.stdout


def test_search_lines_and_json(table: str) -> None:
    result = cli("search", table, "status = 'ERROR'")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and "req=req-2" in lines[0] and "ERROR" in lines[0]
    result = cli("search", table, "session_id = 's1'", "--json", "--order-by", "timestamp_ms ASC",
                 "--max-results", "2")
    ids = [orjson.loads(line)["info"]["client_request_id"] for line in result.stdout.splitlines()]
    assert ids == ["req-0", "req-1"]


def test_search_bad_filter_exits_2_with_pointer(table: str) -> None:
    result = cli("search", table, "status = 'OK")
    assert result.returncode == 2
    assert "unclosed string literal" in result.stderr and "^" in result.stderr


def test_show_prints_the_span_tree(table: str) -> None:
    trace_id = tracewire.search_traces(table, "client_request_id = 'req-2'")[0].info.trace_id
    result = cli("show", table, trace_id)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert trace_id in out
    assert "└─ POST /chat (CHAIN)" in out
    assert "└─ retrieve (RETRIEVER)" in out
    assert "in:  {\"question\":\"q2\"}" in out
    assert "! RuntimeError: llm timeout" in out
    assert "…" in out  # long outputs are shortened
    missing = cli("show", table, "tr-" + "0" * 32)
    assert missing.returncode == 1 and "no trace" in missing.stderr


def test_compact_merges_files_and_keeps_rows(table: str) -> None:
    from deltalake import DeltaTable

    before = DeltaTable(table)
    rows = before.to_pyarrow_table().num_rows
    files = len(before.file_uris())
    assert files >= 3
    result = cli("compact", table, "--vacuum-hours", "0")
    assert result.returncode == 0, result.stderr
    assert "compacted:" in result.stdout and "vacuumed:" in result.stdout
    after = DeltaTable(table)
    assert after.to_pyarrow_table().num_rows == rows
    assert len(after.file_uris()) < files
    assert len(list(Path(table).rglob("*.parquet"))) == len(after.file_uris())


@pytest.mark.kafka
def test_tail_prints_one_line_per_trace(broker: Broker) -> None:
    topic = unique_topic("tail")
    tracewire.configure(enabled=True, destination=f"kafka://{broker.bootstrap}/{topic}",
                        batch_interval=0.01)
    try:
        for i in range(3):
            with tracewire.start_span("POST /chat"):
                tracewire.update_current_trace(client_request_id=f"tail-{i}", session_id="s-tail")
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    result = cli("tail", f"kafka://{broker.bootstrap}/{topic}", "--from-beginning", "--max-messages", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line.split("req=")[1].split()[0] for line in lines) == ["tail-0", "tail-1", "tail-2"]
    assert all("session=s-tail" in line and "POST /chat" in line for line in lines)
    bad = cli("tail", "kafka://nohost")
    assert bad.returncode == 2 and "expected kafka://" in bad.stderr


def test_show_prints_every_trace_sharing_the_id(tmp_path: Path) -> None:
    from tests.read.test_search import write_shared_trace_id_table

    path = tmp_path / "shared"
    trace_id = write_shared_trace_id_table(path)
    result = cli("show", str(path), trace_id)
    assert result.returncode == 0, result.stderr
    assert [line.count(trace_id) for line in result.stdout.splitlines() if trace_id in line] == [1, 1, 1]
    requests = [word for word in result.stdout.split() if word.startswith("req=")]
    assert requests == ["req=shared-0", "req=shared-1", "req=shared-2"]
    assert "3 traces share the id" in result.stderr
    as_json = cli("show", str(path), trace_id, "--json")
    rows = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["info"]["client_request_id"] for r in rows] == ["shared-0", "shared-1", "shared-2"]
