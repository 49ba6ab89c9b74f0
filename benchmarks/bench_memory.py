"""Memory while the Kafka broker is down: RSS over time against the configured byte bound.

Traces with a 10 KB output are produced as fast as one thread can, for a fixed time, with the
Kafka destination pointing at a port where no broker listens.  Every second the process RSS
(``/proc/self/statm``), the pipeline's held bytes and its drop counter are sampled.  The bound
(``TRACING_QUEUE_MAX_BYTES``) should cap the growth: RSS rises by about the bound, then stays
flat while drops are counted.

Run: ``python -m benchmarks.bench_memory [--quick] [--bound-mb N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import time
from typing import Any


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens here once the socket is closed


def run(seconds: float, bound_mb: int) -> list[dict[str, Any]]:
    import tracewire

    tracewire.configure(enabled=True, destination=f"kafka://127.0.0.1:{_closed_port()}/down",
                        queue_max_bytes=bound_mb * 1024 * 1024, queue_max_traces=10**6,
                        export_timeout=2.0, shutdown_timeout=1.0)
    payload = "y" * 10_000

    @tracewire.trace(span_type="LLM")
    def generate(prompt: str) -> str:
        return payload

    @tracewire.trace(span_type="CHAIN")
    def handle(i: int) -> str:
        return generate(f"question {i}")

    import aiokafka  # noqa: F401 - imported by the sink on first use; not part of the growth

    handle(-1)
    gc.collect()
    base = rss_mb()
    rows = []
    started = time.monotonic()
    next_sample = started + 1.0
    i = 0
    while True:
        handle(i)
        i += 1
        now = time.monotonic()
        if now >= next_sample:
            stats = tracewire.stats()
            rows.append({"t": now - started, "requests": i, "accepted": stats["accepted"],
                         "dropped": stats["dropped_full"], "held_mb": stats["queue_bytes"] / 1e6,
                         "rss_mb": rss_mb(), "growth_mb": rss_mb() - base})
            next_sample += 1.0
            if now - started >= seconds:
                break
    tracewire.shutdown(1.0)
    for row in rows:
        row["bound_mb"] = bound_mb * 1.048576
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    bound = rows[0]["bound_mb"]
    print(f"\n## Memory with the broker down (bound {bound:.1f} MB, 10 KB traces)\n")
    print("| t (s) | requests | accepted | dropped | held MB | RSS MB | RSS growth MB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['t']:.0f} | {r['requests']} | {r['accepted']} | {r['dropped']} | {r['held_mb']:.1f} | "
              f"{r['rss_mb']:.0f} | {r['growth_mb']:.0f} |")
    last = rows[-1]
    print(f"\nRSS growth {last['growth_mb']:.0f} MB for a {bound:.0f} MB bound "
          f"({last['growth_mb'] / bound:.2f}x); held bytes never above the bound: "
          f"{max(r['held_mb'] for r in rows) <= bound}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 s instead of 30 s")
    parser.add_argument("--bound-mb", type=int, default=64)
    args = parser.parse_args()
    print_table(run(8 if args.quick else 30, args.bound_mb))


if __name__ == "__main__":
    main()
