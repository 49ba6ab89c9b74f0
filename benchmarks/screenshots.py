"""Regenerate the README's viewer screenshots: ``python -m benchmarks.screenshots [--out docs]``.

Writes a small demo table through the Delta sink, serves it with ``tracewire ui`` and saves the
list, trace and session pages from headless Chromium (Debian ``chromium``) as PNGs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


def write_table(table: Path) -> dict[str, str]:
    import tracewire
    from tests.read.viewer_data import chat_trace, configure_delta

    configure_delta(table)
    ids: dict[str, str] = {}
    try:
        for i in range(14):
            trace_id = chat_trace(i, f"sess-{i % 3}", f"user-{i % 4}", fail=i in (5, 11),
                                  slow_ms=3 + (i * 7) % 40)
            ids.setdefault(f"sess-{i % 3}", trace_id)
            if i == 5:
                ids["error"] = trace_id
        assert tracewire.flush(60)
    finally:
        tracewire.shutdown()
        tracewire.configure(enabled=False)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default docs/)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.servers import Server, free_port

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "traces"
        ids = write_table(table)
        port = free_port()
        argv = [sys.executable, "-m", "tracewire.read.cli", "ui", str(table), "--port", str(port)]
        server = Server(argv, {}, port)
        try:
            server.wait_ready("/api/info")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1280, "height": 640})
                page.goto(server.base_url + "/#/")
                expect(page.locator("tr.trace-row")).to_have_count(14)
                page.screenshot(path=str(out / "viewer-list.png"))
                page.goto(f"{server.base_url}/#/trace/{ids['error']}")
                page.locator(".span-row", has_text="tool").click()
                expect(page.locator("pre.stack")).to_be_visible()
                page.screenshot(path=str(out / "viewer-trace.png"))
                page.goto(f"{server.base_url}/#/session/sess-2")
                expect(page.locator(".turn").first).to_be_visible()
                page.screenshot(path=str(out / "viewer-session.png"))
                browser.close()
        finally:
            server.close()
    for name in ("viewer-list.png", "viewer-trace.png", "viewer-session.png"):
        print(out / name, (out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
