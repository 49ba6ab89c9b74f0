"""Micro-benchmark: the cost of one trace with a root and two child spans (1 KB in/out).

Measured side by side in one process: the bare functions, tracewire (export to ``memory:``,
the worker running), and ``mlflow-tracing`` (``@mlflow.trace`` on the same functions, exporting
asynchronously — its default — to a local ``file:`` store, and with an exporter that drops the
traces; the default ``sqlite:`` store needs SQLAlchemy, which ``mlflow-tracing`` does not have).
Reports, per trace:

- p50 / p99 of the added wall time of one call (request-path cost), over the bare call;
- effective cost: process CPU time divided by traces, after everything was exported — on a
  2-core machine the export thread's CPU is not free.

Run: ``python -m benchmarks.bench_core [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

PAYLOAD = "x" * 1000


def make_app(decorate: Callable[..., Any]) -> Callable[[str], str]:
    @decorate(span_type="RETRIEVER")
    def retrieve(query: str) -> str:
        return PAYLOAD

    @decorate(span_type="LLM")
    def generate(query: str, context: str) -> str:
        return PAYLOAD

    @decorate(span_type="CHAIN")
    def handle(query: str) -> str:
        return generate(query, retrieve(query)[:10])

    return handle


def bare(**_: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return lambda fn: fn


def measure(fn: Callable[[str], str], n: int, finish: Callable[[], None]) -> dict[str, float]:
    for _ in range(min(n // 10, 200)):
        fn(PAYLOAD)
    finish()
    gc.collect()
    samples = []
    cpu0 = time.process_time()
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn(PAYLOAD)
        samples.append(time.perf_counter_ns() - t0)
    finish()
    cpu = time.process_time() - cpu0
    samples.sort()
    return {
        "p50": samples[len(samples) // 2] / 1000,
        "p99": samples[int(len(samples) * 0.99)] / 1000,
        "mean": statistics.fmean(samples) / 1000,
        "effective": cpu / n * 1e6,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 2000 if quick else 20000
    rows: list[dict[str, Any]] = []

    base = measure(make_app(bare), n, lambda: None)
    rows.append({"name": "bare functions", **base})

    import tracewire

    tracewire.configure(enabled=True, destination="memory:", queue_max_traces=10**6,
                        queue_max_bytes=2**34)
    from sinks import MemorySink

    def tw_finish() -> None:
        assert tracewire.flush(120)
        MemorySink.default().clear()

    rows.append({"name": "tracewire (memory: sink)", **measure(make_app(tracewire.trace), n, tw_finish)})
    tracewire.configure(enabled=False)
    rows.append({"name": "tracewire, ENABLE_TRACING=false",
                 **measure(make_app(tracewire.trace), n, lambda: None)})
    tracewire.shutdown()

    try:
        import mlflow
    except ImportError:
        print("mlflow-tracing not installed; skipping its rows", file=sys.stderr)
    else:
        import tempfile

        from benchmarks.bench_middleware import MLflow

        mlflow_n = max(n // 20, 200)
        with tempfile.TemporaryDirectory() as store:
            ml = MLflow(store)  # a local file store: mlflow-tracing's default sqlite:// fails here
            ml.use(ml.store_provider)()
            rows.append({"name": f"mlflow-tracing {ml.version}, async export to a local store",
                         **measure(make_app(mlflow.trace), mlflow_n, ml.finish)})
            ml.use(ml.drop_provider)()
            rows.append({"name": f"mlflow-tracing {ml.version}, no export",
                         **measure(make_app(mlflow.trace), mlflow_n, ml.finish)})

    for row in rows:
        row["added_p50"] = row["p50"] - base["p50"]
        row["added_eff"] = row["effective"] - base["effective"]
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    tw = next(r for r in rows if r["name"].startswith("tracewire (memory"))
    print("\n## Core: one trace = root + 2 child spans, 1 KB inputs/outputs (µs per trace)\n")
    print("| variant | p50 | p99 | added p50 | effective CPU | added effective | vs tracewire (added p50) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["added_p50"] / tw["added_p50"] if tw["added_p50"] > 0 else float("nan")
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
