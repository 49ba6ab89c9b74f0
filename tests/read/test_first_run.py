"""What a new user meets on the first run: the CLI over JSONL files, one-line errors, pipes closed
early, dead brokers, settings warned once, the example demo's last lines."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracewire
from tracewire import SpanType
from tracewire.read.jsonl import search_jsonl
from tracewire.read.storage import Source, resolve

pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracewire.read.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The same traces in a Delta table and in a JSONL file, both written by the real sinks."""
    folder = tmp_path_factory.mktemp("first-run")
    table, lines = str(folder / "traces"), str(folder / "traces.jsonl")
    tracewire.configure(enabled=True, destination=f"delta:{table},jsonl:{lines}", batch_size=100,
                        batch_interval=0.01)
    try:
        for i in range(8):
            with tracewire.start_span(f"POST /chat/{i % 3}", span_type=SpanType.CHAIN) as root:
                root.set_inputs({"question": f"q{i}"})
                tracewire.update_current_trace(
                    client_request_id=f"req-{i}", session_id=f"s{i % 2}", user=f"u{i % 4}",
                    tags={"tier": "gold" if i % 3 == 0 else "free"}, metadata={"tenant": f"t{i % 2}"})
                with tracewire.start_span("retrieve", span_type=SpanType.RETRIEVER) as child:
                    child.set_outputs(["doc"] * 50)
                if i in (2, 5):
                    root.record_exception(RuntimeError("llm timeout"))
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    yield table, lines


FILTERS = [
    None, "status = 'ERROR'", "status != 'ERROR'", "session_id = 's1'",
    "client_request_id IN ('req-1', 'req-6')",
    "tags.tier = 'gold'", "metadata.tenant = 't0' AND status = 'OK'", "name LIKE 'POST /chat/1%'",
    "user_id ILIKE 'U%'", "execution_time_ms >= 0", "timestamp_ms > 0", "metadata.missing IS NULL",
    "client_request_id NOT IN ('req-0')",
]


@pytest.mark.parametrize("order_by", [None, ["timestamp_ms ASC"], ["client_request_id DESC"]])
def test_jsonl_search_matches_the_delta_table(stores: tuple[str, str], order_by: list[str] | None) -> None:
    table, lines = stores
    for filter_string in FILTERS:
        from_delta = tracewire.search_traces(table, filter_string, order_by, max_results=5)
        from_file = search_jsonl(lines, filter_string, order_by, max_results=5)
        expected = [t.info.client_request_id for t in from_delta]
        assert [t.info.client_request_id for t in from_file] == expected, filter_string
        assert from_file, filter_string


def test_cli_search_and_show_read_a_jsonl_file_in_every_spelling(stores: tuple[str, str]) -> None:
    _, lines = stores
    for location in (lines, f"jsonl:{lines}", f"jsonl://{lines}"):
        result = cli("search", location, "status = 'ERROR'")
        assert result.returncode == 0, result.stderr
        requests = sorted(line.split("req=")[1].split()[0] for line in result.stdout.splitlines())
        assert requests == ["req-2", "req-5"]
    trace_id = search_jsonl(lines, "client_request_id = 'req-5'")[0].info.trace_id
    shown = cli("show", lines, trace_id)
    assert shown.returncode == 0, shown.stderr
    assert "└─ retrieve (RETRIEVER)" in shown.stdout and "! RuntimeError: llm timeout" in shown.stdout
    table, _ = stores
    assert cli("search", f"delta:{table}", "status = 'ERROR'").stdout.count("ERROR") == 2


def test_a_gzipped_jsonl_file_is_read_too(stores: tuple[str, str], tmp_path: Path) -> None:
    _, lines = stores
    packed = tmp_path / "traces.jsonl.gz"
    packed.write_bytes(gzip.compress(Path(lines).read_bytes()))
    found = search_jsonl(packed, "status = 'ERROR'", ["timestamp_ms ASC"])
    assert sorted(t.info.client_request_id for t in found) == ["req-2", "req-5"]
    times = [t.info.request_time for t in found]
    assert times == sorted(times)  # equal milliseconds are ordered by trace id, as MLflow does


def test_jsonl_lines_that_are_not_traces_are_skipped(stores: tuple[str, str], tmp_path: Path) -> None:
    _, lines = stores
    good = Path(lines).read_bytes().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\n".join([b"not json", good[0], b"", b'{"info": 1}', *good[1:], good[0][:40]]))
    result = cli("search", str(broken), "--json", "--max-results", "100")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(good)
    assert "3 line(s) are not traces" in result.stderr
    bad_filter = cli("search", str(broken), "status = 'OK")
    assert bad_filter.returncode == 2 and "unclosed string literal" in bad_filter.stderr


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for debug in ("Os {", "kind:", "Traceback", "DeltaError", "Generic {"):
        assert debug not in result.stderr
    return lines[0]


def test_errors_say_what_to_do_in_one_line(stores: tuple[str, str], tmp_path: Path) -> None:
    table, lines = stores
    missing = _one_line(cli("search", str(tmp_path / "nope")))
    assert "no such table or file" in missing and "check the path" in missing
    (tmp_path / "plain").mkdir()
    not_a_table = _one_line(cli("search", str(tmp_path / "plain")))
    assert "is not a Delta table (no _delta_log/ inside)" in not_a_table
    (tmp_path / "plain" / "traces.jsonl").write_bytes(Path(lines).read_bytes())
    hinted = _one_line(cli("show", str(tmp_path / "plain"), "tr-1"))
    assert "traces.jsonl" in hinted
    wrong_kind = _one_line(cli("search", f"delta:{lines}"))
    assert f"jsonl:{lines}" in wrong_kind
    assert "reads Delta tables only" in _one_line(cli("compact", lines))
    assert "not a JSON-lines file" in _one_line(cli("search", f"jsonl:{table}"))
    # A directory with an empty _delta_log: deltalake's "No files in log segment".
    (tmp_path / "empty" / "_delta_log").mkdir(parents=True)
    empty = _one_line(cli("search", str(tmp_path / "empty")))
    assert "is not a Delta table" in empty
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    for command in (("search", "s3://bucket/traces"), ("show", "delta:s3://bucket/traces", "tr-1"),
                    ("compact", "s3://bucket/traces")):
        assert "no AWS credentials for s3://bucket/traces" in _one_line(cli(*command, env=env))


@given(st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_resolve_names_a_source_or_says_why_not(text: str) -> None:
    try:
        source = resolve(text)
    except ValueError as exc:
        assert "\n" not in str(exc).replace(text, "")
    else:
        assert isinstance(source, Source) and source.kind in ("delta", "jsonl") and source.path


def test_search_into_a_closed_pipe_exits_quietly(stores: tuple[str, str], tmp_path: Path) -> None:
    _, lines = stores
    big = tmp_path / "big.jsonl"
    big.write_bytes(Path(lines).read_bytes() * 150)  # ~1 MB of --json output: more than a pipe holds
    result = subprocess.run(
        f"{sys.executable} -m tracewire.read.cli search {big} --json --max-results 2000 | head -1",
        shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert orjson.loads(result.stdout)["info"]["trace_id"]
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("command", ["tail", "consume"])
def test_a_dead_broker_ends_in_one_line_without_unclosed_consumer(command: str, tmp_path: Path) -> None:
    servers = f"127.0.0.1:{closed_port()}"
    if command == "tail":
        result = cli("tail", f"kafka://{servers}/topic")
    else:
        result = cli("consume", "--bootstrap-servers", servers, "--topic", "t", "--group", "g",
                     "--table", str(tmp_path / "t"))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"tracewire {command}: cannot reach the Kafka broker at {servers}"), last
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr
    if command == "tail":  # no logging configured: our line is the only one
        assert result.stderr.strip() == last


def test_a_bad_enable_tracing_is_warned_once() -> None:
    code = ("import tracewire, middleware, tracewire.runtime as r; from tracewire.read import cli;"
            "tracewire.flush(); print(tracewire.is_enabled(), r.settings().enabled)")
    env = {**os.environ, "ENABLE_TRACING": "maybe"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert result.stderr.count("ENABLE_TRACING") == 1, result.stderr


def _demo(destination: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ENABLE_TRACING": "true",
           "TRACING_DESTINATION": destination}
    argv = [sys.executable, "-m", "examples.fastapi_app", "--demo", "--port", str(closed_port())]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


@pytest.mark.e2e
def test_demo_says_a_mistyped_destination_is_unusable(tmp_path: Path) -> None:
    result = _demo("deltaa:./x", tmp_path)
    assert result.returncode == 1
    assert "traces are in" not in result.stdout
    assert "destination deltaa:./x is unusable (unknown destination scheme 'deltaa'" in result.stdout
    assert "fix TRACING_DESTINATION" in result.stdout


@pytest.mark.e2e
def test_demo_to_jsonl_prints_a_search_command_that_works(tmp_path: Path) -> None:
    result = _demo("jsonl:./traces.jsonl", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "traces are in the JSON-lines file ./traces.jsonl" in result.stdout
    search = next(line for line in result.stdout.splitlines() if "look at them:" in line)
    assert "search ./traces.jsonl \"session_id = 'demo-session'\"" in search
    found = cli("search", "./traces.jsonl", "session_id = 'demo-session'", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.splitlines()) == 4
