"""OTLP/HTTP export throughput: tracewire's OtlpSink vs OpenTelemetry's own OTLP/HTTP exporter
sending the same spans to the same receiver.

For 1 KB and 10 KB traces (root + retrieve + generate spans, as in ``bench_kafka``), in one run
against one receiver on 127.0.0.1 (its own process: reads each request body and answers an empty
``ExportTraceServiceResponse``, so the clients are what is measured):

- **OpenTelemetry exporter**: ``OTLPSpanExporter`` (``opentelemetry-exporter-otlp-proto-http``,
  gzip) exports ``ReadableSpan``s built ahead of time with the same names, ids, times, status and
  attributes (tracewire's JSON-text values), 512 spans per call (``BatchSpanProcessor``'s default
  batch); time until the last call returns.

Each measurement is the best of three runs, interleaved (the machine is shared).
- **OtlpSink alone**: ``export`` of the already-serialized records, 256 traces per call (the
  pipeline's batch) — the sink's own cost.  It sends more per span than the OTel exporter: values
  decoded to native OTLP values and the MLflow / OpenInference / gen_ai / HTTP attributes.
- **tracewire pipeline**: the traces submitted to ``tracewire`` with
  ``TRACING_DESTINATION=otlp+http://...``; first submit until ``flush()`` returns.

Run: ``python -m benchmarks.bench_otlp [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.bench_kafka import make_payloads, pipeline


def serve(port: int) -> None:
    """The receiver (run in its own process): read, answer 200, count nothing."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    answer = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _otel_spans(payloads: list[tuple[bytes, bytes]]) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    import tracewire

    resource = Resource.create({"service.name": "bench"})
    spans = []
    for _, value in payloads:
        trace = tracewire.Trace.from_json(value)
        trace_id = int(trace.info.trace_id[3:], 16)
        for span in trace.data.spans:
            context = SpanContext(trace_id, int(span.span_id, 16), False, TraceFlags(1))
            parent = (SpanContext(trace_id, int(span.parent_id, 16), False, TraceFlags(1))
                      if span.parent_id else None)
            spans.append(ReadableSpan(
                name=span.name, context=context, parent=parent, resource=resource,
                attributes={k: span.raw_attribute(k) for k in span.attributes},
                events=[Event(e.name, e.attributes, e.timestamp_ns) for e in span.events],
                kind=SpanKind.SERVER if parent is None else SpanKind.INTERNAL,
                status=Status(StatusCode.OK), start_time=span.start_time_ns, end_time=span.end_time_ns,
            ))
    return spans


def otel_exporter(url: str, payloads: list[tuple[bytes, bytes]], batch: int = 512) -> tuple[float, int]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    spans = _otel_spans(payloads)
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", compression=Compression.Gzip, timeout=30)
    assert exporter.export(spans[:1]) == SpanExportResult.SUCCESS  # warm-up: connection
    started = time.perf_counter()
    for i in range(0, len(spans), batch):
        assert exporter.export(spans[i:i + batch]) == SpanExportResult.SUCCESS
    elapsed = time.perf_counter() - started
    exporter.shutdown()
    return elapsed, len(spans)


def sink_only(url: str, payloads: list[tuple[bytes, bytes]], batch: int = 256) -> float:
    import tracewire
    from sinks import OtlpSink

    records = [tracewire.TraceRecord.from_trace(tracewire.Trace.from_json(v), v, 1.0) for _, v in payloads]

    async def go() -> float:
        sink = OtlpSink(url + "/v1/traces", resource_attributes={"service.name": "bench"})
        assert await sink.export(records[:1]) == 0
        started = time.perf_counter()
        for i in range(0, len(records), batch):
            assert await sink.export(records[i:i + batch]) == 0
        elapsed = time.perf_counter() - started
        await sink.aclose()
        return elapsed

    return asyncio.run(go())


def run(quick: bool = False, repeats: int = 3) -> list[dict[str, Any]]:
    from tests.kafka_broker import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_otlp", "--serve", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(url + "/v1/traces", content=b"", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        rows = []
        for size, n in ((1_000, 1000 if quick else 5000), (10_000, 300 if quick else 2000)):
            payloads = make_payloads(size, n)
            # Best of `repeats`, interleaved: the machine is shared, the fastest run is the one
            # least disturbed by others.
            otel_s = sink_s = pipe_s = float("inf")
            for _ in range(repeats):
                elapsed, spans = otel_exporter(url, payloads)
                otel_s = min(otel_s, elapsed)
                sink_s = min(sink_s, sink_only(url, payloads))
                pipe_s = min(pipe_s, pipeline(f"otlp+{url}", payloads)[0])
            rows.append({"size": size, "n": n, "spans": spans,
                         "avg_bytes": sum(len(v) for _, v in payloads) / n,
                         "otel": spans / otel_s, "sink": spans / sink_s, "pipe": spans / pipe_s})
        return rows
    finally:
        server.kill()
        server.wait()


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n## OTLP/HTTP export throughput (gzip, local receiver): tracewire vs OpenTelemetry's exporter\n")
    print("| trace size | traces (spans) | OTel OTLPSpanExporter spans/s | OtlpSink spans/s | ratio | "
          "tracewire pipeline spans/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['avg_bytes'] / 1000:.1f} KB | {r['n']} ({r['spans']}) | {r['otel']:.0f} | "
              f"{r['sink']:.0f} | {r['sink'] / r['otel']:.2f}x | {r['pipe']:.0f} | "
              f"{r['pipe'] / r['otel']:.2f}x |")
    print(f"\n(python {sys.version.split()[0]}, {os.cpu_count()} cpus; ratio > 1: tracewire is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
