"""Run the example service with uvicorn; ``--demo`` also sends it a few requests and exits.

    ENABLE_TRACING=true python -m examples.fastapi_app --demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from typing import Any

import uvicorn

import tracewire
from examples.fastapi_app.app import app

QUESTIONS = [
    "How do I enable tracing?",
    "Which request headers end up in the trace?",
    "Where are finished traces exported?",
]


def _post(base: str, path: str, body: dict[str, Any], n: int) -> tuple[str, str]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Request-ID": f"demo-request-{n}",
                 "X-Session-ID": "demo-session", "X-User-ID": "demo-user"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get("X-Trace-Id") or "(not traced)", response.read().decode()


def run_demo(server: uvicorn.Server, base: str, results: list[str]) -> None:
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        for n, question in enumerate(QUESTIONS):
            trace_id, text = _post(base, "/chat", {"question": question}, n)
            print(f"POST /chat         {trace_id}  {json.loads(text)['answer'][:60]!r}")
            results.append(trace_id)
        trace_id, text = _post(base, "/chat/stream", {"question": QUESTIONS[0]}, len(QUESTIONS))
        print(f"POST /chat/stream  {trace_id}  {text.count('data:')} events")
        results.append(trace_id)
    except Exception as exc:
        print(f"demo failed: {exc!r}", file=sys.stderr)
    finally:
        server.should_exit = True


def describe(destination: str) -> str:
    scheme, _, rest = destination.partition(":")
    brokers, _, topic = rest.lstrip("/").rpartition("/")
    return {
        "delta": f"the Delta table {rest}",
        "jsonl": f"the JSON-lines file {rest}",
        "kafka": f"the Kafka topic {topic} at {brokers}",
        "memory": "memory (this process only)",
    }.get(scheme, destination)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo", action="store_true", help="send demo requests, print trace ids, exit")
    args = parser.parse_args(argv)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    results: list[str] = []
    if args.demo:
        base = f"http://{args.host}:{args.port}"
        threading.Thread(target=run_demo, args=(server, base, results), daemon=True).start()
    print(f"serving on http://{args.host}:{args.port} (tracing {'on' if tracewire.is_enabled() else 'off'})")
    server.run()  # its lifespan shutdown flushes the traces
    if not args.demo:
        return 0
    if not tracewire.is_enabled():
        print("tracing is off: run with ENABLE_TRACING=true to record traces")
        return 0 if len(results) == len(QUESTIONS) + 1 else 1
    tracewire.flush()
    stats = tracewire.stats()
    destinations = _destinations()
    unusable = _unusable(destinations, stats)
    for destination, reason in unusable.items():
        print(f"destination {destination} is unusable ({reason}): no traces went there; "
              "fix TRACING_DESTINATION")
    for destination in destinations:
        if destination in unusable:
            continue
        print(f"traces are in {describe(destination)}")
        if destination.startswith(("delta:", "jsonl:")) and results:
            cli = os.path.relpath(os.path.join(os.path.dirname(sys.executable), "tracewire"))
            where = destination.partition(":")[2]
            print(f"  look at them: {cli} search {where} \"session_id = 'demo-session'\"")
            print(f"                {cli} show {where} {results[-1]}")
    print(f"exported: {stats['exported']}, export errors: {stats['export_errors']}")
    ok = (len(results) == len(QUESTIONS) + 1 and not unusable
          and sum(stats["exported"].values()) >= len(results))
    return 0 if ok else 1


def _unusable(destinations: tuple[str, ...], stats: dict[str, Any]) -> dict[str, str]:
    """The destinations no sink was built for, each with the reason."""
    from tracewire.export.destinations import validate

    out: dict[str, str] = {}
    for destination in destinations:
        try:
            validate([destination])
        except ValueError as exc:
            out[destination] = str(exc)
    if stats["sinks"] and len(stats["sinks"]) < len(destinations) - len(out):
        # A known scheme whose sink could not be built (a missing extra, a bad option): the
        # export worker logged which and why.
        out["(another destination)"] = "its sink could not be built; see the error logged above"
    return out


def _destinations() -> tuple[str, ...]:
    from tracewire import runtime as _runtime

    return _runtime.settings().destination


if __name__ == "__main__":
    sys.exit(main())
