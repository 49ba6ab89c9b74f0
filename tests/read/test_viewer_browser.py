"""The viewer in a real headless Chromium (Debian ``chromium`` driven by playwright) against
``tracewire ui`` served by real uvicorn over a real Delta table."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
pytest.importorskip("starlette")
pytest.importorskip("deltalake")

from tests.e2e.servers import Server, free_port  # noqa: E402
from tests.read import viewer_data  # noqa: E402

expect = playwright_sync.expect
BIG = 20_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    table = tmp_path_factory.mktemp("viewer-browser") / "traces"
    return table, viewer_data.write_demo(table, big=BIG)


@pytest.fixture(scope="module")
def server(demo: tuple[Path, dict[str, Any]]) -> Iterator[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "tracewire.read.cli", "ui", str(demo[0]), "--port", str(port)]
    srv = Server(argv, {}, port)
    try:
        srv.wait_ready("/api/info", timeout=30)
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


class Watched:
    """A page that records dialogs, page errors and every request it makes."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.csp_violations: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.csp_violations.append(m.text)
                     if "Content Security Policy" in m.text else None)

    def goto(self, hash_path: str) -> Any:
        self.page.goto(self.base_url + "/" + hash_path)
        return self.page

    def assert_clean(self) -> None:
        assert self.dialogs == []
        assert self.errors == []
        assert self.csp_violations == []
        assert all(url.startswith(self.base_url + "/") for url in self.requests), self.requests
        assert self.page.evaluate("window.__xss === undefined")


@pytest.fixture
def watched(browser: Any, server: Server) -> Iterator[Watched]:
    w = Watched(browser, server.base_url)
    yield w
    w.context.close()


def test_list_filter_open_trace_select_span(watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    ids = demo[1]
    page = watched.goto("")
    rows = page.locator("tr.trace-row")
    expect(rows.first).to_be_visible()
    assert rows.count() == len(ids["chat"]) + 4  # chats, slow, xss, big, truncated
    page.fill("#filter", "session_id = 'sess-1'")
    page.click("#apply")
    expect(rows).to_have_count(4)
    assert "q=session_id" in page.url  # the filter is in the permalink
    page.click("#errors-only")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-trace-id", ids["chat"][4])
    page.click("tr.trace-row td.name")
    expect(page.locator("#trace-name")).to_have_text("POST /chat")
    expect(page.locator("#trace-id")).to_have_text(ids["chat"][4])
    expect(page.locator(".span-row")).to_have_count(4)
    expect(page.locator(".span-row.error")).to_have_count(1)
    page.locator(".span-row", has_text="llm").click()
    expect(page.locator("#span-title")).to_have_text("llm")
    expect(page.locator("#span-inputs")).to_contain_text('"prompt"')
    expect(page.locator("#span-inputs")).to_contain_text("question 4: what is the weather in city 4?")
    expect(page.locator("#span-outputs")).to_contain_text("answer 4")
    # The error span shows its exception with the stack trace.
    page.locator(".span-row", has_text="tool").click()
    expect(page.locator("pre.stack")).to_contain_text("RuntimeError: weather service down for city 4")
    # Selecting a span makes a permalink that opens on that span.
    link = page.url
    assert "#/trace/" in link and link.count("/") >= 6
    page.goto("about:blank")
    page.goto(link)
    expect(page.locator("#span-title")).to_have_text("tool")
    # Long strings are clipped with "show all".
    page.locator(".span-row", has_text="POST /chat").click()
    clipped = page.locator("#span-inputs .show-all")
    expect(clipped).to_have_count(1)
    assert "L" * 1500 not in page.locator("#span-inputs").inner_text()
    clipped.click()
    assert "L" * 1500 in page.locator("#span-inputs").inner_text()
    watched.assert_clean()


def test_quick_time_ranges_and_sort(watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    page = watched.goto("")
    rows = page.locator("tr.trace-row")
    expect(rows.first).to_be_visible()
    total = rows.count()
    page.click("#range-15m")
    expect(page.locator("#range-15m")).to_have_class("on")
    expect(rows).to_have_count(total)  # everything was written just now
    page.select_option("#sort", "duration")
    expect(rows.first).to_have_attribute("data-trace-id", demo[1]["big"])
    assert "sort=duration" in page.url and "range=15m" in page.url
    watched.assert_clean()


def test_paging(watched: Watched, demo: tuple[Path, dict[str, Any]], server: Server) -> None:
    import httpx

    every = [r["trace_id"] for r in httpx.get(f"{server.base_url}/api/traces?limit=100").json()["traces"]]
    page = watched.goto("")
    expect(page.locator("tr.trace-row").first).to_be_visible()
    # The page size is 50: with fewer traces there is no older page.
    expect(page.locator("#older")).to_be_disabled()
    assert [page.locator("tr.trace-row").nth(i).get_attribute("data-trace-id")
            for i in range(len(every))] == every
    watched.assert_clean()


def test_bad_filter_shows_error_with_token_marked(watched: Watched) -> None:
    page = watched.goto("")
    expect(page.locator("tr.trace-row").first).to_be_visible()
    page.fill("#filter", "status = 'ERROR' AND colour = 'red'")
    page.click("#apply")
    error = page.locator("#filter-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("unknown field 'colour'")
    expect(error.locator(".bad")).to_have_text("colour")
    # The page still works: fixing the filter clears the error.
    page.fill("#filter", "status = 'ERROR'")
    page.click("#apply")
    expect(page.locator("tr.trace-row")).to_have_count(2)
    expect(error).to_have_count(0)
    page.fill("#filter", "status = 'unclosed")
    page.click("#apply")
    expect(page.locator("#filter-error")).to_contain_text("unclosed string")
    watched.assert_clean()


def test_session_page(watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    ids = demo[1]
    page = watched.goto("#/session/sess-1")
    turns = page.locator(".turn")
    expect(turns).to_have_count(4)
    shown = [turns.nth(i).get_attribute("data-trace-id") for i in range(4)]
    # Oldest first; traces recorded in the same millisecond are ordered by trace id (as MLflow).
    assert sorted(map(str, shown)) == sorted(ids["chat"][i] for i in (1, 4, 7, 10))
    first = page.locator(f'.turn[data-trace-id="{ids["chat"][1]}"]')
    expect(first.locator(".bubble.req")).to_have_text("question 1: what is the weather in city 1?")
    expect(first.locator(".bubble.res")).to_have_text("answer 1")
    totals = page.locator("#session-totals")
    expect(totals).to_contain_text("4 traces")
    expect(totals).to_contain_text(f"{16 + 19 + 22 + 25} tokens")
    expect(totals).to_contain_text("1 errors")
    # From a trace page, the session link leads here.
    page = watched.goto(f"#/trace/{ids['chat'][7]}")
    page.click("#session-link")
    expect(page.locator("#session-id")).to_have_text("sess-1")
    watched.assert_clean()


def test_compare_page(watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    ids = demo[1]
    page = watched.goto("")
    expect(page.locator("tr.trace-row").first).to_be_visible()
    for trace_id in (ids["chat"][4], ids["slow"]):
        page.locator(f"tr.trace-row[data-trace-id='{trace_id}'] input.pick").check()
    page.click("#compare-selected")
    table = page.locator("#compare-table")
    expect(table.locator("tr.cmp-row")).to_have_count(4)
    llm = table.locator("tr.cmp-row[data-path='/POST /chat/llm']")
    expect(llm.locator("td.diff")).to_have_text("differs")
    expect(llm.locator("td.slower")).to_be_visible()  # the second trace's llm slept 30 ms
    expect(table.locator("tr.cmp-row.only")).to_have_count(1)  # only the first one called the tool
    llm.click()
    expect(page.locator(".cmp-detail")).to_contain_text("a different answer")
    expect(page.locator(".cmp-detail")).to_contain_text("answer 4")
    watched.assert_clean()


def test_live_toggle_shows_a_trace_written_after_load(
        watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    import tracewire

    page = watched.goto("")
    expect(page.locator("tr.trace-row").first).to_be_visible()
    page.click("#live")
    expect(page.locator("#live")).to_have_class("on")
    name = f"POST /live-{time.time_ns()}"
    viewer_data.configure_delta(demo[0])
    try:
        with tracewire.start_span(name):
            pass
        assert tracewire.flush(30)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    expect(page.locator("tr.trace-row td.name", has_text=name)).to_be_visible(timeout=15_000)
    expect(page.locator("tr.trace-row.new", has_text=name)).to_have_count(1)  # marked as new
    watched.assert_clean()


def test_xss_payloads_render_as_text(watched: Watched, demo: tuple[Path, dict[str, Any]]) -> None:
    ids = demo[1]
    page = watched.goto("")
    row = page.locator(f"tr.trace-row[data-trace-id='{ids['xss']}']")
    expect(row.locator("td.name")).to_have_text(viewer_data.XSS[1])
    expect(row.locator("td.preview")).to_have_text(viewer_data.XSS[0])
    row.locator("td.name").click()
    expect(page.locator("#trace-name")).to_have_text(viewer_data.XSS[1])
    page.locator("#trace-meta > summary").click()
    expect(page.locator("#trace-meta")).to_contain_text(viewer_data.XSS[0])  # metadata "note"
    page.locator(".span-row").nth(0).click()
    expect(page.locator("#span-inputs")).to_contain_text("<script>")
    page.locator(".span-row").nth(1).click()
    expect(page.locator("#span-title")).to_have_text(viewer_data.XSS[0])
    expect(page.locator(".event")).to_contain_text(viewer_data.XSS[1])
    assert page.locator("#main img, #main script").count() == 0
    page = watched.goto("#/session/sess-xss")
    expect(page.locator(".bubble.req")).to_have_text(viewer_data.XSS[0])
    # A filter holding a payload comes back inside the error box as text too.
    page = watched.goto("#/?q=" + quote(viewer_data.XSS[1]))
    expect(page.locator("#filter-error")).to_be_visible()
    page = watched.goto(f"#/trace/{quote(viewer_data.XSS[1])}")
    expect(page.locator(".error-box")).to_contain_text("no such trace")
    assert page.locator("#main img, #main script").count() == 0
    watched.assert_clean()


def test_big_trace_opens_fast_and_renders_only_visible_rows(
        watched: Watched, demo: tuple[Path, dict[str, Any]], record_property: Any) -> None:
    page = watched.page
    t0 = time.perf_counter()
    watched.goto(f"#/trace/{demo[1]['big']}")
    # A loaded 2-core machine can take longer than playwright's 5 s default: the figure is
    # measured below (and in benchmarks/bench_viewer.py), the bound here only catches a hang.
    expect(page.locator("#span-title")).to_have_text("POST /agent", timeout=20_000)
    seconds = time.perf_counter() - t0
    record_property("big_trace_open_s", seconds)
    fetch_ms, render_ms = page.evaluate("[document.body.dataset.fetchMs, document.body.dataset.renderMs]")
    print(f"\n{BIG}-span trace: opened in {seconds:.2f} s (fetch {fetch_ms} ms, first render {render_ms} ms)")
    assert seconds < 10  # the target is 2 s on a developer machine; CI shares 2 cores
    assert page.locator(".span-row").count() < 200  # virtualized: only what is visible
    expect(page.locator("#trace-head, .trace-head")).to_contain_text(f"{BIG} spans")
    # Scroll to the end: the last span is rendered there.
    page.locator("#span-tree").evaluate("t => { t.scrollTop = t.scrollHeight; }")
    expect(page.locator(".span-row", has_text="tool 197").last).to_be_visible()
    assert page.locator(".span-row").count() < 200
    # Collapsing the root hides all 19,999 other rows.
    page.locator("#span-tree").evaluate("t => { t.scrollTop = 0; }")
    page.locator(".span-row").first.locator(".twisty").click()
    expect(page.locator(".span-row")).to_have_count(1)
    watched.assert_clean()
