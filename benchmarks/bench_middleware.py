"""Benchmark: the per-request cost of the middleware, FastAPI (ASGI) and Flask (WSGI), in-process.

One request = a 1 KB JSON body, the X-Request-ID / X-Session-ID / X-User-ID headers, an endpoint
calling retrieve -> rerank -> generate (a root span plus 3 child spans when traced) and a ~1 KB
JSON response.  The apps are called directly (ASGI: a prepared scope, ``receive`` and ``send``;
WSGI: a prepared environ), so only framework + tracing cost is measured, no sockets.  Side by
side in one run:

- bare app (no middleware, undecorated functions);
- tracewire on (``memory:`` destination, the export worker running) and off (middleware present,
  ``ENABLE_TRACING`` false);
- OpenTelemetry's ASGI/WSGI middleware, TracerProvider + BatchSpanProcessor, a no-op exporter,
  child spans with ``tracer.start_as_current_span``;
- MLflow tracing (``@mlflow.trace`` on the endpoint and the same three functions).

Per request: p50 / p99 wall time, added p50 over the bare app, and effective CPU (process CPU
time / requests, measured after everything was exported).

Run: ``python -m benchmarks.bench_middleware [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

BODY = json.dumps({"question": "q" * 900, "top_k": 3, "filters": {"lang": "en"}}).encode()
DOCS = [{"id": f"d{i}", "text": "t" * 300} for i in range(3)]
ANSWER = "a" * 900
HEADERS = {"X-Request-ID": "req-123", "X-Session-ID": "session-1", "X-User-ID": "user-1",
           "Content-Type": "application/json", "User-Agent": "bench/1.0"}
Decorate = Callable[[str, str], Callable[[Callable[..., Any]], Callable[..., Any]]]


def children(decorate: Decorate) -> tuple[Callable[..., Any], ...]:
    @decorate("retrieve", "RETRIEVER")
    def retrieve(query: str) -> list[dict[str, str]]:
        return DOCS

    @decorate("rerank", "RERANKER")
    def rerank(query: str, docs: list[dict[str, str]]) -> list[dict[str, str]]:
        return docs[:2]

    @decorate("generate", "LLM")
    def generate(query: str, docs: list[dict[str, str]]) -> str:
        return ANSWER

    return retrieve, rerank, generate


def no_decorate(name: str, span_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return lambda fn: fn


def tracewire_decorate(name: str, span_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import tracewire

    return tracewire.trace(name=name, span_type=span_type)


def mlflow_decorate(name: str, span_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    import mlflow

    return mlflow.trace(name=name, span_type=span_type)  # type: ignore[no-any-return]


def make_fastapi(decorate: Decorate, root: Decorate | None = None, middleware: Any = None,
                 **options: Any) -> Any:
    from fastapi import FastAPI

    retrieve, rerank, generate = children(decorate)
    app = FastAPI()
    if middleware is not None:
        app.add_middleware(middleware, **options)

    async def chat(item_id: int, body: dict[str, Any]) -> dict[str, Any]:
        question = body["question"]
        docs = rerank(question, retrieve(question))
        return {"item_id": item_id, "answer": generate(question, docs), "sources": [d["id"] for d in docs]}

    app.post("/chat/{item_id}")(root("chat", "CHAIN")(chat) if root else chat)
    return app


def make_flask(decorate: Decorate, root: Decorate | None = None,
               wrap: Callable[[Any], Any] | None = None) -> Any:
    from flask import Flask, request

    retrieve, rerank, generate = children(decorate)
    app = Flask("bench")

    def chat(item_id: int) -> dict[str, Any]:
        question = request.get_json()["question"]
        docs = rerank(question, retrieve(question))
        return {"item_id": item_id, "answer": generate(question, docs), "sources": [d["id"] for d in docs]}

    app.post("/chat/<int:item_id>")(root("chat", "CHAIN")(chat) if root else chat)
    if wrap is not None:
        app.wsgi_app = wrap(app.wsgi_app)  # type: ignore[method-assign]
    return app


def asgi_driver(app: Any) -> Callable[[int], list[int]]:
    headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
    headers.append((b"content-length", str(len(BODY)).encode()))
    template = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/chat/42", "raw_path": b"/chat/42", "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5000), "server": ("b", 80),
    }
    message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(msg: dict[str, Any]) -> None:
        pass

    async def run(n: int) -> list[int]:
        samples = []
        for _ in range(n):
            scope = dict(template)
            t0 = time.perf_counter_ns()
            await app(scope, receive, send)
            samples.append(time.perf_counter_ns() - t0)
        return samples

    loop = asyncio.new_event_loop()
    return lambda n: loop.run_until_complete(run(n))


def wsgi_driver(app: Any) -> Callable[[int], list[int]]:
    from werkzeug.test import EnvironBuilder

    template = EnvironBuilder(path="/chat/42", method="POST", data=BODY, headers=HEADERS).get_environ()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        return lambda data: None

    def run(n: int) -> list[int]:
        samples = []
        for _ in range(n):
            environ = dict(template)
            environ["wsgi.input"] = io.BytesIO(BODY)
            t0 = time.perf_counter_ns()
            result = app(environ, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
            samples.append(time.perf_counter_ns() - t0)
        return samples

    return run


class Variant:
    """One app under test: ``setup`` puts the process in its state (tracing on/off) before each
    round, ``finish`` exports what the round produced (its CPU counts)."""

    def __init__(self, name: str, drive: Callable[[int], list[int]], setup: Callable[[], None],
                 finish: Callable[[], None], weight: float = 1.0) -> None:
        self.name, self.drive, self.setup, self.finish, self.weight = name, drive, setup, finish, weight
        self.samples: list[int] = []
        self.cpu = 0.0
        self.count = 0


def measure(variants: list[Variant], n: int, rounds: int = 20) -> list[dict[str, float]]:
    """Interleave the variants round by round, so machine drift hits all of them alike."""
    for variant in variants:
        variant.setup()
        variant.drive(max(int(min(n // 10, 300) * variant.weight), 20))
        variant.finish()
    for _ in range(rounds):
        for variant in variants:
            count = max(int(n / rounds * variant.weight), 10)
            variant.setup()
            gc.collect()
            cpu0 = time.process_time()
            variant.samples.extend(variant.drive(count))
            variant.finish()
            variant.cpu += time.process_time() - cpu0
            variant.count += count
    results = []
    for variant in variants:
        samples = sorted(variant.samples)
        results.append({"p50": samples[len(samples) // 2] / 1000,
                        "p99": samples[int(len(samples) * 0.99)] / 1000,
                        "effective": variant.cpu / variant.count * 1e6})
    return results


def _otel() -> tuple[Decorate, Any, Callable[[], None]] | None:
    try:
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        print("opentelemetry-sdk not installed; skipping its rows", file=sys.stderr)
        return None

    class NoOpExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoOpExporter(), max_queue_size=100_000))
    tracer = provider.get_tracer("bench")
    del ReadableSpan

    def decorate(name: str, span_type: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return tracer.start_as_current_span(name)  # type: ignore[return-value]

    return decorate, provider, lambda: bool(provider.force_flush()) or None


def _mlflow_finish() -> None:
    try:
        import mlflow

        mlflow.flush_trace_async_logging()
    except Exception:
        pass


def _noop_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 1000 if quick else 10000
    import tracewire
    from middleware import TracingMiddleware, TracingWSGIMiddleware
    from sinks import MemorySink

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("middleware").setLevel(logging.WARNING)

    def nothing() -> None:
        pass

    def tw_on() -> None:
        if not tracewire.is_enabled():
            tracewire.configure(enabled=True, destination="memory:", queue_max_traces=10**6,
                                queue_max_bytes=2**34)

    def tw_off() -> None:
        if tracewire.is_enabled():
            tracewire.configure(enabled=False)

    def tw_finish() -> None:
        assert tracewire.flush(120)
        MemorySink.default().clear()

    otel = _otel()
    try:
        import mlflow

        mlflow_name: str | None = f"MLflow tracing {mlflow.__version__} (@mlflow.trace)"
    except ImportError:
        mlflow_name = None
        print("mlflow-tracing not installed; skipping its rows", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for framework in ("FastAPI", "Flask"):
        if framework == "FastAPI":
            driver, tracing_mw = asgi_driver, TracingMiddleware

            def build(decorate: Decorate, root: Decorate | None = None, wrap: Any = None) -> Any:
                return make_fastapi(decorate, root, wrap)
        else:
            driver, tracing_mw = wsgi_driver, TracingWSGIMiddleware

            def build(decorate: Decorate, root: Decorate | None = None, wrap: Any = None) -> Any:
                return make_flask(decorate, root, wrap)

        variants = [
            Variant("bare app", driver(build(no_decorate)), tw_off, nothing),
            Variant("tracewire on (memory:)", driver(build(tracewire_decorate, wrap=tracing_mw)),
                    tw_on, tw_finish),
            Variant("tracewire off (ENABLE_TRACING=false)",
                    driver(build(tracewire_decorate, wrap=tracing_mw)), tw_off, nothing),
        ]
        if otel is not None:
            decorate, provider, otel_finish = otel
            if framework == "FastAPI":
                from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelAsgi

                otel_app = make_fastapi(decorate)
                otel_app.add_middleware(OtelAsgi, tracer_provider=provider)
            else:
                from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWsgi

                otel_app = make_flask(decorate, wrap=functools.partial(OtelWsgi, tracer_provider=provider))
            variants.append(Variant("OpenTelemetry middleware + BatchSpanProcessor", driver(otel_app),
                                    tw_off, otel_finish))
        if mlflow_name is not None:
            variants.append(Variant(mlflow_name, driver(build(mlflow_decorate, root=mlflow_decorate)),
                                    tw_off, _mlflow_finish, weight=0.2))
        results = measure(variants, n)
        base = results[0]
        for variant, result in zip(variants, results, strict=True):
            rows.append({"framework": framework, "name": variant.name, **result,
                         "added_p50": result["p50"] - base["p50"],
                         "added_eff": result["effective"] - base["effective"]})

    # The middleware alone, over an ASGI app that does nothing: isolates its own cost.
    noop = _noop_app()
    variants = [
        Variant("bare", asgi_driver(noop), tw_off, nothing),
        Variant("tracewire off", asgi_driver(TracingMiddleware(noop)), tw_off, nothing),
        Variant("tracewire on (root span only)", asgi_driver(TracingMiddleware(noop)), tw_on, tw_finish),
    ]
    results = measure(variants, n * 5)
    for variant, result in zip(variants, results, strict=True):
        rows.append({"framework": "middleware alone, over a no-op ASGI app", "name": variant.name,
                     **result, "added_p50": result["p50"] - results[0]["p50"],
                     "added_eff": result["effective"] - results[0]["effective"]})
    tracewire.shutdown()
    tracewire.configure(enabled=False)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n## Middleware: one request = 1 KB JSON body, 3 headers, root + 3 child spans (µs/request)")
    for framework in dict.fromkeys(r["framework"] for r in rows):
        group = [r for r in rows if r["framework"] == framework]
        tw = next((r for r in group if r["name"].startswith("tracewire on")), None)
        print(f"\n### {framework}\n")
        print("| variant | p50 | p99 | added p50 | effective CPU | added effective "
              "| added p50 vs tracewire |")
        print("|---|---|---|---|---|---|---|")
        for r in group:
            ratio = (r["added_p50"] / tw["added_p50"]) if tw and tw["added_p50"] > 0 else float("nan")
            print(f"| {r['name']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['added_p50']:.1f} | "
                  f"{r['effective']:.1f} | {r['added_eff']:.1f} | {ratio:.1f}x |")
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cpus)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
