"""Viewer (``tracewire ui``) latency: the list API on a large table, trace pages of big traces.

(a) List API on N traces over 30 days (default 1,000,000; the table of ``bench_search``):
    start-up of ``tracewire ui`` until it answers, then the newest page, errors only, a
    session, a metadata filter over one day, the 10th page (keyset cursors) and the slowest-first
    sort — each the median of the repeats, over real HTTP to a real uvicorn.
(b) Trace page for 1,000- and 20,000-span traces: the trace API cold (a fresh app reads the
    table) and warm, and the page in headless Chromium (Debian ``chromium``): time until the
    first span's details show, and its split into fetch+parse and first render.

Run: ``python -m benchmarks.bench_viewer [--quick] [--rows N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _serve(table: Path) -> tuple[Any, float]:
    from tests.e2e.servers import Server, free_port

    port = free_port()
    t0 = time.perf_counter()
    server = Server([sys.executable, "-m", "tracewire.read.cli", "ui", str(table), "--port", str(port)], {}, port)
    server.wait_ready("/api/info", timeout=60)
    return server, time.perf_counter() - t0


def _probe(table: Path) -> dict[str, Any]:
    """Values to search for in an existing table: those of its newest trace."""
    from tracewire.read.search import search_traces

    newest = search_traces(str(table), max_results=1)[0].info
    return {"session": newest.session_id, "tenant": newest.trace_metadata.get("tenant"),
            "day_start": newest.request_time // 86_400_000 * 86_400_000}


def run_list(rows: int, repeats: int, existing: Path | None = None) -> list[dict[str, Any]]:
    from benchmarks.bench_search import generate

    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        table = existing or Path(tmp) / "traces"
        if existing is None:
            t0 = time.perf_counter()
            probe = generate(table, rows)
            out.append({"case": f"(table generation, {rows:,} rows)", "seconds": time.perf_counter() - t0,
                        "results": rows, "target": float("nan")})
        else:
            probe = _probe(table)
        server, startup = _serve(table)
        out.append({"case": "start-up until the API answers", "seconds": startup, "results": 0,
                    "target": 2.0})
        try:
            base = server.base_url + "/api/traces"

            def get(**params: Any) -> Any:
                r = httpx.get(base, params={"limit": 50, **params}, timeout=60)
                r.raise_for_status()
                return r.json()

            def tenth_page() -> Any:
                body = get()
                for _ in range(9):
                    body = get(cursor=body["next_cursor"])
                return body

            day_end = probe["day_start"] + 86_400_000
            cases: list[tuple[str, Callable[[], Any], int]] = [
                ("newest 50", lambda: get(), 1),
                ("errors only", lambda: get(errors=1), 1),
                ("one session", lambda: get(filter=f"session_id = '{probe['session']}'"), 1),
                ("metadata filter, one day", lambda: get(
                    filter=f"metadata.tenant = '{probe['tenant']}' AND timestamp_ms >= {probe['day_start']} "
                           f"AND timestamp_ms < {day_end}"), 1),
                ("10th page (10 requests, per request)", tenth_page, 10),
                ("slowest first", lambda: get(sort="duration"), 1),
            ]
            for label, fn, per in cases:
                seconds, body = _median(fn, repeats)
                out.append({"case": f"list API: {label}", "seconds": seconds / per,
                            "results": len(body["traces"]), "target": 1.0})
        finally:
            server.close()
    return out


def _write_big(table: Path, sizes: list[int]) -> dict[int, str]:
    import tracewire
    from tests.read.viewer_data import big_trace, configure_delta

    configure_delta(table)
    try:
        ids = {n: big_trace(n) for n in sizes}
        assert tracewire.flush(120)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    return ids


def _api_cold(table: Path, trace_id: str, details: bool) -> int:
    from tracewire.read.viewer import create_app

    async def go() -> int:
        transport = httpx.ASGITransport(app=create_app(str(table)))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            r = await client.get(f"/api/traces/{trace_id}", params={"details": "1" if details else "0"})
            r.raise_for_status()
            return len(r.content)

    return asyncio.run(go())


def run_traces(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "traces"
        ids = _write_big(table, sizes)
        for n, trace_id in ids.items():
            for details in (False, True):
                seconds, size = _median(lambda t=trace_id, d=details: _api_cold(table, t, d), repeats)
                what = "whole trace" if details else "tree for the page"
                out.append({"case": f"{n:,} spans: trace API cold, {what} ({size / 1e6:.1f} MB)",
                            "seconds": seconds, "results": n, "target": float("nan")})
        if not os.path.exists(CHROMIUM):
            print(f"(no {CHROMIUM}: page timings skipped)", file=sys.stderr)
            return out
        from playwright.sync_api import expect, sync_playwright

        server, _ = _serve(table)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                for n, trace_id in ids.items():
                    opens = []
                    for _ in range(repeats + 1):  # the first open reads the table, the rest hit the cache
                        page = browser.new_page(viewport={"width": 1400, "height": 900})
                        t0 = time.perf_counter()
                        page.goto(f"{server.base_url}/#/trace/{trace_id}")
                        expect(page.locator("#span-title")).to_be_visible(timeout=60_000)
                        total = time.perf_counter() - t0
                        fetch_ms, render_ms = page.evaluate(
                            "[Number(document.body.dataset.fetchMs), Number(document.body.dataset.renderMs)]")
                        opens.append((total, fetch_ms, render_ms))
                        page.close()
                    cold, warm = opens[0], opens[1:]
                    out.append({"case": f"{n:,} spans: page opens, first (fetch {cold[1]:.0f} ms, "
                                        f"first render {cold[2]:.0f} ms)",
                                "seconds": cold[0], "results": n, "target": 2.0})
                    out.append({"case": f"{n:,} spans: page re-opens, median (fetch "
                                        f"{statistics.median(w[1] for w in warm):.0f} ms, first render "
                                        f"{statistics.median(w[2] for w in warm):.0f} ms)",
                                "seconds": statistics.median(w[0] for w in warm), "results": n,
                                "target": 2.0})
                browser.close()
        finally:
            server.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--skip-list", action="store_true")
    parser.add_argument("--skip-traces", action="store_true")
    parser.add_argument("--table", type=Path, default=None,
                        help="list an existing table (e.g. bench_search's) instead of generating one")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = 3 if args.quick else 5
    results = [] if args.skip_list else run_list(rows, repeats, args.table)
    if not args.skip_traces:
        results += run_traces([1_000, 20_000], repeats)
    size = f"{rows:,}-trace table" if args.table is None else f"table {args.table}"
    print(f"\n## Viewer latency ({size} for the list; median of {repeats})\n")
    print("| case | seconds | results | target |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['seconds']:.3f} | {r['results']} | {r['target']} |")


if __name__ == "__main__":
    main()
