"""Search latency on a large inference table, and consumer throughput (issue 5).

Generates a Delta table of N traces (default 1,000,000) spread over 30 days, written in daily
batches straight through pyarrow (the same schema the sinks write), then times
``tracewire.search_traces`` for:

(a) a session_id lookup over all days,
(b) a metadata filter over one day,
(c) ``status = 'ERROR'`` over all days (newest 100),

each the median of 5 runs.  With ``--consumer`` it also measures ``tracewire consume``
throughput: 10 KB traces produced to the tansu broker, consumed into a fresh table.

Run: ``python -m benchmarks.bench_search [--quick] [--rows N] [--consumer]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

DAYS = 30
SPAN_TEMPLATE = (
    '{"trace_id":"AAAAAAAAAAAAAAAAAAAAAA==","span_id":"AAAAAAAAAAA=","parent_span_id":null,'
    '"name":"POST /chat","start_time_unix_nano":%d,"end_time_unix_nano":%d,"events":[],'
    '"status":{"code":"STATUS_CODE_%s","message":""},"attributes":{"mlflow.traceRequestId":'
    '"\\"%s\\"","mlflow.spanType":"\\"CHAIN\\"","mlflow.spanInputs":"{\\"q\\":\\"question %d\\"}",'
    '"mlflow.spanOutputs":"\\"%s\\""}}'
)


def _trace_json(trace_id: str, ms: int, state: str, i: int, session: str, tenant: str) -> str:
    span = SPAN_TEMPLATE % (ms * 1_000_000, (ms + 40) * 1_000_000, state, trace_id, i, "answer " * 20)
    return (
        '{"info":{"trace_id":"%s","client_request_id":"req-%d","trace_location":{"type":'
        '"MLFLOW_EXPERIMENT","mlflow_experiment":{"experiment_id":"0"}},"request_time":"%s",'
        '"state":"%s","trace_metadata":{"mlflow.trace_schema.version":"3","mlflow.trace.session":'
        '"%s","tenant":"%s"},"tags":{"mlflow.traceName":"POST /chat"},"execution_duration_ms":40},'
        '"data":{"spans":[%s]}}'
    ) % (trace_id, i, dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(), state,
         session, tenant, span)


def generate(path: Path, rows: int, seed: int = 1) -> dict[str, Any]:
    """Write ``rows`` traces over DAYS days; returns values to search for."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from tracewire.export.table import PARTITION_COLUMN, table_schema

    rng = random.Random(seed)
    start = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)
    per_day = rows // DAYS
    sessions = max(rows // 20, 1)
    probe: dict[str, Any] = {}
    for day in range(DAYS):
        day_start = int((start + dt.timedelta(days=day)).timestamp() * 1000)
        cols: dict[str, list[Any]] = {name: [] for name in table_schema().names}
        for j in range(per_day):
            i = day * per_day + j
            ms = day_start + rng.randrange(86_400_000)
            trace_id = "tr-%032x" % rng.getrandbits(128)
            state = "ERROR" if rng.random() < 0.02 else "OK"
            session = "sess-%d" % rng.randrange(sessions)
            tenant = "tenant-%d" % rng.randrange(50)
            when = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
            cols["trace_id"].append(trace_id)
            cols["client_request_id"].append(f"req-{i}")
            cols["request_date"].append(when.date())
            cols["request_time"].append(when)
            cols["status_code"].append(500 if state == "ERROR" else 200)
            cols["state"].append(state)
            cols["execution_duration_ms"].append(40)
            cols["sampling_fraction"].append(1.0)
            cols["session_id"].append(session)
            cols["user_id"].append("user-%d" % rng.randrange(1000))
            cols["request"].append('{"q":"question %d"}' % i)
            cols["response"].append('"answer"')
            cols["trace"].append(_trace_json(trace_id, ms, state, i, session, tenant))
            cols["request_metadata"].append([("mlflow.trace.session", session), ("tenant", tenant)])
            cols["tags"].append([("mlflow.traceName", "POST /chat")])
            cols["logging_error_codes"].append([])
            if day == DAYS // 2 and j == 0:
                probe = {"session": session, "tenant": tenant, "day_start": day_start}
        write_deltalake(str(path), pa.table(cols, schema=table_schema()), mode="append",
                        partition_by=[PARTITION_COLUMN])
    return probe


def _median_time(fn: Any, repeats: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        count = len(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), count


def run_search(rows: int, repeats: int = 5) -> list[dict[str, Any]]:
    import tracewire

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces"
        t0 = time.perf_counter()
        probe = generate(path, rows)
        gen_s = time.perf_counter() - t0
        table = str(path)
        day_end = probe["day_start"] + 86_400_000
        cases = [
            ("(a) session_id lookup, all days", f"session_id = '{probe['session']}'", 1.0),
            ("(b) metadata filter, one day",
             f"metadata.tenant = '{probe['tenant']}' AND timestamp_ms >= {probe['day_start']} "
             f"AND timestamp_ms < {day_end}", 1.0),
            ("(c) status = ERROR, all days", "status = 'ERROR'", 5.0),
        ]
        out = []
        for label, filter_string, target in cases:
            seconds, count = _median_time(lambda f=filter_string: tracewire.search_traces(table, f), repeats)
            out.append({"case": label, "seconds": seconds, "results": count, "target": target})
        out.append({"case": f"(table generation, {rows:,} rows)", "seconds": gen_s, "results": rows,
                    "target": float("nan")})
        return out


def run_consumer(n: int, size: int = 10_000) -> dict[str, Any]:
    """Produce ``n`` traces of ~``size`` bytes to tansu, then time the consumer into Delta."""
    import asyncio

    from tests.kafka_broker import Broker, unique_topic
    from tests.read.test_consumer import make_payloads, produce
    from tracewire.read.consumer import TraceConsumer

    base = make_payloads(200, prefix="bench")
    padding = "x" * size
    payloads = [p.replace(b'"answer ', ('"' + padding[: max(size - len(p), 0)] + ' answer ').encode(), 1)
                for p in base]
    values = [payloads[i % len(payloads)] for i in range(n)]
    broker = Broker().start()
    try:
        topic = unique_topic("bench")
        asyncio.run(produce(broker.bootstrap, topic, values, partitions=4))
        with tempfile.TemporaryDirectory() as tmp:
            consumer = TraceConsumer(broker.bootstrap, topic, "bench", str(Path(tmp) / "t"),
                                     max_batch=5000, compact_every=0)
            stats = asyncio.run(consumer.run(idle_exit=2))
    finally:
        broker.stop()
    # From the first message to the last Delta commit: group join and the idle exit excluded.
    return {"traces": stats.written, "seconds": stats.written / stats.rate, "per_s": stats.rate,
            "mb_s": stats.rate * len(values[0]) / 1e6, "bytes": len(values[0]),
            "commits": stats.commits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 3 repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--consumer", action="store_true", help="also measure consumer throughput")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    print(f"\n## Search latency, {rows:,} traces over {DAYS} days (median)\n")
    print("| query | seconds | results | target |")
    print("|---|---|---|---|")
    for r in run_search(rows, 3 if args.quick else 5):
        print(f"| {r['case']} | {r['seconds']:.3f} | {r['results']} | {r['target']} |")
    if args.consumer:
        c = run_consumer(5000 if args.quick else 30000)
        print("\n## Consumer throughput (Kafka -> Delta)\n")
        print(f"{c['traces']} traces of {c['bytes']} B in {c['seconds']:.1f} s, {c['commits']} commits: "
              f"{c['per_s']:.0f} traces/s, {c['mb_s']:.1f} MB/s (target 5,000 traces/s)")


if __name__ == "__main__":
    main()
