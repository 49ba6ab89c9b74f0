"""Run every benchmark and print one table per section: ``python -m benchmarks [--quick]``.

Sections whose prerequisites are missing (wrk, the tansu broker, mlflow, OpenTelemetry) are
skipped with a note; ``--only NAME`` runs one section.  ``--results FILE`` also writes the
tables, with the machine they came from, to a Markdown file (``benchmarks/results.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = [
    ("core", "benchmarks.bench_core", "one trace, root + 2 children, vs mlflow-tracing"),
    ("middleware", "benchmarks.bench_middleware", "request-path overhead, ASGI and WSGI, in-process"),
    ("kafka", "benchmarks.bench_kafka", "export throughput to Kafka vs raw aiokafka"),
    ("otlp", "benchmarks.bench_otlp", "OTLP/HTTP export throughput vs OpenTelemetry's exporter"),
    ("memory", "benchmarks.bench_memory", "memory while the broker is down"),
    ("servers", "benchmarks.bench_servers", "uvicorn and gunicorn under wrk, tracing off vs on"),
    ("search", "benchmarks.bench_search", "search latency and consumer throughput"),
    ("viewer", "benchmarks.bench_viewer", "tracewire ui: list API, big trace pages in chromium"),
    ("openai", "benchmarks.bench_openai", "OpenAI autolog: added cost per client call"),
]


def machine() -> str:
    return (f"{platform.node()} — {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, smaller sizes")
    parser.add_argument("--only", choices=[name for name, _, _ in SECTIONS], action="append")
    parser.add_argument("--results", default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args()
    chunks = [f"# tracewire benchmark results\n\n{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{'quick' if args.quick else 'full'} run, on {machine()}.\n"]
    for name, module_name, what in SECTIONS:
        if args.only and name not in args.only:
            continue
        print(f"\n=== {name}: {what}", file=sys.stderr, flush=True)
        started = time.monotonic()
        # Each section in its own process: no heap, thread or GC state carried from the last one.
        argv = [sys.executable, "-m", module_name] + (["--quick"] if args.quick else [])
        if name == "search":
            argv.append("--consumer")
        result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        sys.stderr.write(result.stderr)
        text = result.stdout
        if result.returncode != 0:
            text += f"\n## {name}\n\nskipped: exit code {result.returncode}: {result.stderr.strip()[-300:]}\n"
        print(text, flush=True)
        chunks.append(text + f"\n({name}: {time.monotonic() - started:.0f} s)\n")
    if args.results:
        with open(args.results, "w") as out:
            out.write("\n".join(chunks))


if __name__ == "__main__":
    main()
