"""The viewer's JSON API (``tracewire ui``) against a real Delta table written by the Delta sink."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette")
pytest.importorskip("deltalake")


from tests.e2e.servers import REPO, Server, free_port
from tests.read.viewer_data import XSS, write_demo
from tracewire.read.viewer import create_app

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    table = tmp_path_factory.mktemp("viewer") / "traces"
    return table, write_demo(table, big=1000)


class Client:
    """httpx against the app in-process (httpx.ASGITransport), called synchronously."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def client(demo: tuple[Path, dict[str, Any]]) -> Client:
    return Client(create_app(str(demo[0])))


@pytest.fixture
def ids(demo: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return demo[1]


def _all_ids(ids: dict[str, Any]) -> set[str]:
    return {*ids["chat"], ids["slow"], ids["xss"], ids["big"], ids["truncated"]}


def test_list_newest_first_with_columns(client: Client, ids: dict[str, Any]) -> None:
    r = client.get("/api/traces", params={"limit": 100})
    assert r.status_code == 200
    rows = r.json()["traces"]
    assert {row["trace_id"] for row in rows} == _all_ids(ids)
    assert r.json()["next_cursor"] is None
    times = [row["time_ms"] for row in rows]
    assert times == sorted(times, reverse=True)
    error = next(row for row in rows if row["trace_id"] == ids["chat"][4])
    assert error["state"] == "ERROR" and error["status_code"] == 500 and error["name"] == "POST /chat"
    assert error["session_id"] == "sess-1" and error["user_id"] == "user-0"
    assert error["tokens"] == 19 and error["request_preview"].startswith("question 4")
    assert next(row for row in rows if row["trace_id"] == ids["truncated"])["truncated"] is True


def test_filter_and_quick_filters(client: Client, ids: dict[str, Any]) -> None:
    r = client.get("/api/traces", params={"filter": "session_id = 'sess-1' AND user_id = 'user-0'"})
    assert {row["trace_id"] for row in r.json()["traces"]} == {ids["chat"][i] for i in (4, 10)}
    r = client.get("/api/traces", params={"errors": "1"})
    assert {row["trace_id"] for row in r.json()["traces"]} == {ids["chat"][4], ids["chat"][9]}
    now = time.time() * 1000
    r = client.get("/api/traces", params={"since_ms": now - 3_600_000})
    assert len(r.json()["traces"]) == len(_all_ids(ids))
    r = client.get("/api/traces", params={"since_ms": now + 60_000})
    assert r.json()["traces"] == []


@pytest.mark.parametrize("sort", ["time", "duration"])
def test_paging_visits_every_trace_once(client: Client, ids: dict[str, Any], sort: str) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, "sort": sort, **({"cursor": cursor} if cursor else {})}
        body = (client.get("/api/traces", params=params)).json()
        seen += [row["trace_id"] for row in body["traces"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(seen) == _all_ids(ids)
    assert pages == -(-len(seen) // 3)
    if sort == "duration":
        rows = (client.get("/api/traces", params={"sort": "duration", "limit": 100})).json()["traces"]
        durations = [row["duration_ms"] for row in rows]
        assert durations == sorted(durations, reverse=True)


def test_bad_filter_points_at_the_token(client: Client) -> None:
    text = "status = 'ERROR' AND bogus = 1"
    r = client.get("/api/traces", params={"filter": text})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["position"] == text.index("bogus") and error["text"] == text
    assert "bogus" in error["problem"]


@pytest.mark.parametrize("params", [
    {"cursor": "not-a-cursor"}, {"cursor": "eyJrIjoxfQ=="}, {"limit": "x"}, {"since_ms": "soon"},
], ids=["garbage-cursor", "cursor-without-ids", "limit", "since"])
def test_bad_parameters_are_400(client: Client, params: dict[str, str]) -> None:
    r = client.get("/api/traces", params=params)
    assert r.status_code == 400 and r.json()["error"]["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["status", "=", "'OK'", "AND", "(", ")", "IN", "NOT", "metadata.`a.b`",
                              "timestamp_ms", ">", "1e9", "'", "LIKE", "'%x%'", ",", "IS", "NULL"]),
             max_size=8).map(" ".join),
))
def test_any_filter_text_is_answered_not_crashed(demo: tuple[Path, dict[str, Any]], text: str) -> None:
    r = Client(create_app(str(demo[0]))).get("/api/traces", params={"filter": text, "limit": 2})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert isinstance(r.json()["error"]["message"], str)


def test_trace_view_tree_critical_path_and_marks(client: Client, ids: dict[str, Any]) -> None:
    view = (client.get(f"/api/traces/{ids['chat'][4]}")).json()
    spans = view["spans"]
    assert [(s["name"], s["depth"], s["type"]) for s in spans] == [
        ("POST /chat", 0, "CHAIN"), ("retrieve", 1, "RETRIEVER"), ("llm", 1, "LLM"), ("tool", 1, "TOOL")]
    root, _, llm, tool = spans
    assert root["inputs"]["messages"][0]["content"].startswith("question 4")
    assert llm["attributes"]["mlflow.chat.tokenUsage"]["total_tokens"] == 19
    assert "mlflow.spanInputs" not in llm["attributes"]
    assert tool["status"] == "ERROR"
    (event,) = tool["events"]
    assert event["name"] == "exception"
    assert "weather service down" in event["attributes"]["exception.stacktrace"]
    # retrieve, llm and tool ran one after the other: each one decided when the next could start.
    assert view["critical_path"] == [s["span_id"] for s in spans]
    assert view["marks"]["ttfb_ms"] == pytest.approx(1.0, abs=0.01)
    assert all(0 <= s["start_ms"] <= view["total_ms"] for s in spans)


def test_trace_view_of_big_trace_and_truncation(client: Client, ids: dict[str, Any]) -> None:
    view = (client.get(f"/api/traces/{ids['big']}")).json()
    assert len(view["spans"]) == 1000
    depths = [s["depth"] for s in view["spans"]]
    assert depths[0] == 0 and max(depths) == 2
    # Depth-first order: every span's parent comes before it.
    seen: set[str] = set()
    for span in view["spans"]:
        assert span["parent_id"] is None or span["parent_id"] in seen
        seen.add(span["span_id"])
    # Without details the page gets the tree only, then fetches the selected span.
    tree = client.get(f"/api/traces/{ids['big']}", params={"details": "0"}).json()
    assert [s["span_id"] for s in tree["spans"]] == [s["span_id"] for s in view["spans"]]
    assert tree["critical_path"] == view["critical_path"]
    assert all("inputs" not in s and "attributes" not in s for s in tree["spans"])
    last = view["spans"][-1]
    detail = client.get(f"/api/traces/{ids['big']}/spans/{last['span_id']}").json()
    assert detail == {k: last[k] for k in ("inputs", "outputs", "attributes", "events")}
    assert client.get(f"/api/traces/{ids['big']}/spans/{'0' * 16}").status_code == 404
    assert client.get(f"/api/traces/tr-nope/spans/{last['span_id']}").status_code == 404
    marker = (client.get(f"/api/traces/{ids['truncated']}")).json()["spans"][0]["inputs"]
    assert marker["tracewire.truncated"] is True and marker["original_size"] > 100_000


def test_session_view(client: Client, ids: dict[str, Any]) -> None:
    view = (client.get("/api/sessions/sess-1")).json()
    rows = view["traces"]
    assert sorted(row["trace_id"] for row in rows) == sorted(ids["chat"][i] for i in (1, 4, 7, 10))
    times = [row["time_ms"] for row in rows]
    assert times == sorted(times)  # oldest first; equal milliseconds ordered by trace id
    assert view["totals"] == {"traces": 4, "tokens": 16 + 19 + 22 + 25, "errors": 1,
                              "duration_ms": sum(row["duration_ms"] for row in view["traces"])}
    assert (client.get("/api/sessions/nope")).status_code == 404


def test_compare_aligns_by_name_path(client: Client, ids: dict[str, Any]) -> None:
    a, b = ids["chat"][4], ids["slow"]
    view = (client.get("/api/compare", params={"a": a, "b": b})).json()
    rows = {row["path"]: row for row in view["rows"]}
    assert list(rows) == ["/POST /chat", "/POST /chat/retrieve", "/POST /chat/llm", "/POST /chat/tool"]
    assert rows["/POST /chat/llm"]["outputs_equal"] is False
    assert rows["/POST /chat/llm"]["duration_delta_ms"] > 25  # the slow trace's llm slept 30 ms
    assert rows["/POST /chat/retrieve"]["outputs_equal"] is False  # different docs
    assert rows["/POST /chat/tool"]["b"] is None and rows["/POST /chat/tool"]["outputs_equal"] is None
    assert (client.get("/api/compare", params={"a": a})).status_code == 400
    assert (client.get("/api/compare", params={"a": a, "b": "tr-" + "0" * 32})).status_code == 404


def test_untrusted_content_is_returned_as_data(client: Client, ids: dict[str, Any]) -> None:
    r = client.get(f"/api/traces/{ids['xss']}")
    assert r.headers["content-type"] == "application/json"
    view = r.json()
    assert view["summary"]["name"] == XSS[1] and view["spans"][1]["name"] == XSS[0]


def test_security_headers_read_only_and_static_confinement(client: Client) -> None:
    for path in ("/", "/static/app.js", "/api/traces", "/api/traces/tr-missing"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert (client.get("/api/traces/tr-missing")).status_code == 404
    index = (client.get("/")).text
    assert "<script src=\"/static/app.js\"" in index and "http" not in index.replace("http-equiv", "")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert (client.request(method, "/api/traces")).status_code == 405
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                 "/static/%2e%2e%2f%2e%2e%2fcli.py", "/static//etc/passwd", "/static/....//app.py"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "create_app" not in r.text
    # DNS rebinding: a page on another name cannot talk to the viewer.
    r = client.get("/api/traces", headers={"host": "evil.example"})
    assert r.status_code == 400


def test_cli_serves_and_warns_off_localhost(demo: tuple[Path, dict[str, Any]]) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "tracewire.read.cli", "ui", f"delta:{demo[0]}", "--port", str(port)]
    server = Server(argv, {}, port)
    try:
        server.wait_ready("/api/info", timeout=30)
        info = httpx.get(f"{server.base_url}/api/info").json()
        assert info["table"] == str(demo[0])
        assert f"http://127.0.0.1:{port}/" in server.log()
        assert "warning" not in server.log()
    finally:
        server.close()
    # Another address: it warns that traces hold user data before it binds.  192.0.2.1 is a
    # documentation address no interface has: the bind fails and nothing is ever sent.
    proc = subprocess.Popen([sys.executable, "-m", "tracewire.read.cli", "ui", str(demo[0]),
                             "--host", "192.0.2.1", "--port", str(free_port())], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "warning" in line and "user data" in line
    finally:
        proc.kill()
        proc.communicate()


def test_cli_defaults_and_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tracewire.read.cli import build_parser, main

    args = build_parser().parse_args(["ui", str(tmp_path / "t")])
    assert args.host == "127.0.0.1" and args.port == 5170 and args.open is False
    assert main(["ui", str(tmp_path / "traces.jsonl")]) != 0  # no such file: one line, no server
    assert "traces.jsonl" in capsys.readouterr().err
    assert main(["ui", str(tmp_path / "missing")]) == 2  # fails at start-up (as search/show do), no server
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("params", [{}, {"errors": "1"}, {"filter": "metadata.tenant = 'tenant-3'"}],
                         ids=["all", "errors", "metadata"])
def test_paging_over_many_days(tmp_path: Path, params: dict[str, str]) -> None:
    """Newest-first pages search the day before the cursor first, then the rest: no row lost."""
    from benchmarks.bench_search import generate
    from tracewire.read.search import search_traces

    table = tmp_path / "days"
    generate(table, 600)  # 20 a day over 30 days, in the sinks' schema
    expected = search_traces(str(table), params.get("filter"), max_results=1000)
    if params.get("errors"):
        expected = [t for t in expected if t.info.state == "ERROR"]
    client = Client(create_app(str(table)))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = {"limit": 7, **params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/traces", params=page).json()
        seen += body["traces"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [r["trace_id"] for r in seen] == [t.info.trace_id for t in expected]
    assert len(seen) > (3 if params else 500)


def test_a_jsonl_file_is_served_like_a_table_and_rereads_when_it_grows(
    demo: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from deltalake import DeltaTable

    lines = [text.encode() for text in DeltaTable(str(demo[0])).to_pyarrow_table(columns=["trace"])
             .column("trace").to_pylist()]
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"\n".join(lines[:5]) + b"\n")
    client = Client(create_app(f"jsonl:{path}"))
    first = client.get("/api/traces", params={"limit": 500}).json()["traces"]
    assert len(first) == 5
    with path.open("ab") as out:  # a JsonlSink appending while the viewer runs
        out.write(b"\n".join(lines[5:]) + b"\n")
    rows = client.get("/api/traces", params={"limit": 500}).json()["traces"]
    table_rows = Client(create_app(str(demo[0]))).get("/api/traces", params={"limit": 500}).json()["traces"]
    assert [r["trace_id"] for r in rows] == [r["trace_id"] for r in table_rows]
    one = rows[0]["trace_id"]
    assert client.get(f"/api/traces/{one}").json()["spans"]
    bad = client.get("/api/traces", params={"filter": "status = 'OK' AND"})
    assert bad.status_code == 400 and bad.json()["error"]["position"] > 0
