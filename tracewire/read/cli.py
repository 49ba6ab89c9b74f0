"""The ``tracewire`` command line: read, move and maintain stored traces.

    tracewire search ./traces "status = 'ERROR'" --max-results 20    # a Delta table, or
    tracewire search ./traces.jsonl "status = 'ERROR'"               # a JSONL file (jsonl:/delta: URIs too)
    tracewire show ./traces tr-0123...
    tracewire compact ./traces --vacuum-hours 168
    tracewire consume --bootstrap-servers b:9092 --topic genai-traces --group ingest --table ./traces
    tracewire tail kafka://b:9092/genai-traces
    tracewire push ./traces --to mlflow+http://localhost:5000 --filter "status = 'ERROR'"
    tracewire ui ./traces --port 5170 --open
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from tracewire.model import Span, Trace


def _short(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_trace_line(trace: Trace) -> str:
    """One line per trace: time, id, state, duration, name, request id, session, user."""
    info = trace.info
    duration = f"{info.execution_duration_ms}ms" if info.execution_duration_ms is not None else "-"
    return "  ".join([
        _when(info.request_time), info.trace_id, f"{info.state:<5}", f"{duration:>7}",
        info.tags.get("mlflow.traceName", "-"),
        f"req={info.client_request_id or '-'}", f"session={info.session_id or '-'}",
        f"user={info.user_id or '-'}",
    ])


def format_tree(trace: Trace) -> str:
    """The span tree with durations and shortened inputs/outputs."""
    children: dict[str | None, list[Span]] = {}
    ids = {s.span_id for s in trace.data.spans}
    for span in sorted(trace.data.spans, key=lambda s: s.start_time_ns):
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    lines = [format_trace_line(trace)]
    usage = trace.info.token_usage
    if usage:
        lines.append(f"tokens: {usage}")

    def walk(span: Span, prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        duration = f"{span.duration_ms:.1f}ms" if span.duration_ms is not None else "open"
        status = "" if span.status_code == "OK" else f" [{span.status_code}]"
        lines.append(f"{prefix}{branch}{span.name} ({span.span_type}) {duration}{status}")
        inner = prefix + ("   " if last else "│  ")
        if span.inputs is not None:
            lines.append(f"{inner}  in:  {_short(span.inputs)}")
        if span.outputs is not None:
            lines.append(f"{inner}  out: {_short(span.outputs)}")
        for event in span.events:
            if event.name == "exception":
                lines.append(f"{inner}  ! {event.attributes.get('exception.type')}: "
                             f"{_short(event.attributes.get('exception.message', ''))}")
        kids = children.get(span.span_id, [])
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1)

    roots = children.get(None, [])
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return "\n".join(lines)


def _find(location: str, filter_string: str | None, order_by: Sequence[str] | None,
          max_results: int) -> list[Trace]:
    """Search the Delta table or JSON-lines file at ``location``; storage errors in one line."""
    from tracewire.read.storage import check_object_store, explain, resolve

    source = resolve(location)
    if source.kind == "jsonl":
        from tracewire.read.jsonl import search_jsonl

        run: Any = search_jsonl
    else:
        from tracewire.read.search import search_traces

        check_object_store(source.path)
        run = search_traces
    try:
        return list(run(source.path, filter_string, order_by, max_results))
    except ValueError:
        raise  # a bad filter: its message points at the token
    except Exception as exc:
        raise ValueError(explain(exc, location)) from None


def _search(args: argparse.Namespace, out: TextIO) -> int:
    traces = _find(args.table, args.filter, args.order_by, args.max_results)
    for trace in traces:
        if args.json:
            out.write(trace.to_json() + "\n")
        else:
            out.write(format_trace_line(trace) + "\n")
    out.flush()
    if not args.json:
        print(f"{len(traces)} trace(s)", file=sys.stderr)
    return 0


_SHOW_MAX = 1000


def _show(args: argparse.Namespace, out: TextIO) -> int:
    # Several requests that carried one traceparent share a trace id: show every one of them,
    # oldest first (each is told apart by its root span id).
    quoted = args.trace_id.replace("'", "''")
    traces = _find(args.table, f"trace_id = '{quoted}'", ["timestamp_ms ASC"], _SHOW_MAX)
    if not traces:
        print(f"no trace {args.trace_id} in {args.table}", file=sys.stderr)
        return 1
    if args.json:
        out.writelines(trace.to_json() + "\n" for trace in traces)
    else:
        out.write("\n\n".join(format_tree(trace) for trace in traces) + "\n")
    if len(traces) > 1:
        more = f" (the first {_SHOW_MAX} shown)" if len(traces) == _SHOW_MAX else ""
        print(f"{len(traces)} traces share the id {args.trace_id}{more}", file=sys.stderr)
    return 0


def _compact(args: argparse.Namespace, out: TextIO) -> int:
    from deltalake import DeltaTable

    from tracewire.read.storage import check_object_store, explain, resolve

    source = resolve(args.table, jsonl=False)
    check_object_store(source.path)
    try:
        table = DeltaTable(source.path)
    except Exception as exc:
        raise ValueError(explain(exc, args.table)) from None
    print(f"compacting {args.table} (version {table.version()})…", file=sys.stderr)
    metrics = table.optimize.compact(target_size=args.target_size)
    out.write(f"compacted: {metrics.get('numFilesRemoved', 0)} files removed, "
              f"{metrics.get('numFilesAdded', 0)} added\n")
    if args.vacuum_hours is not None:
        print(f"vacuuming files older than {args.vacuum_hours}h…", file=sys.stderr)
        removed = table.vacuum(retention_hours=args.vacuum_hours, dry_run=False,
                               enforce_retention_duration=False)
        out.write(f"vacuumed: {len(removed)} files deleted\n")
    return 0


def _consume(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio
    import logging
    import signal

    from tracewire.read.consumer import ConsumerStats, TraceConsumer
    from tracewire.read.storage import check_object_store

    options: dict[str, str] = {}
    for item in args.storage_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE, got {item!r}")
        options[key] = value
    check_object_store(args.table, options)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("tracewire.read.consumer").setLevel(logging.DEBUG)
    last = [0.0]

    def progress(stats: ConsumerStats) -> None:
        now = time.monotonic()
        if now - last[0] >= args.progress_every:
            last[0] = now
            rate = stats.written / max(now - stats.started, 1e-9)
            print(f"written {stats.written} traces ({rate:.0f}/s), dead letters {stats.dead_letters}, "
                  f"commits {stats.commits}, commit races {stats.commit_conflicts}",
                  file=sys.stderr, flush=True)

    consumer = TraceConsumer(
        args.bootstrap_servers, args.topic, args.group, args.table,
        dead_letter_table=args.dead_letter_table, max_batch=args.max_batch,
        compact_every=args.compact_every, progress=progress, storage_options=options or None,
    )

    async def run() -> ConsumerStats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, consumer.stop)
        return await consumer.run(idle_exit=args.idle_exit)

    from aiokafka.errors import KafkaConnectionError

    try:
        stats = asyncio.run(run())
    except KafkaConnectionError as exc:
        raise ValueError(f"cannot reach the Kafka broker at {args.bootstrap_servers} ({exc}); "
                         "check --bootstrap-servers and that the broker is running") from None
    out.write(f"consumed {stats.consumed}, written {stats.written}, dead letters "
              f"{stats.dead_letters}, duplicates skipped {stats.skipped_duplicates}, "
              f"commit races {stats.commit_conflicts}\n")
    return 0


def _tail(args: argparse.Namespace, out: TextIO) -> int:
    import asyncio

    from tracewire.read.consumer import PoisonMessage, record_from_message

    uri = args.uri
    if not uri.startswith("kafka://") or "/" not in uri[len("kafka://"):]:
        raise ValueError(f"expected kafka://host:port[,host:port]/topic, got {uri!r}")
    servers, _, topic = uri[len("kafka://"):].partition("/")

    async def run() -> None:
        import logging

        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaConnectionError

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers.split(","),
                                    auto_offset_reset="earliest" if args.from_beginning else "latest")
        seen = 0
        try:
            quiet = logging.getLogger("aiokafka")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)  # its per-address errors: the one line below says it
            try:
                await consumer.start()
            except KafkaConnectionError as exc:
                raise ValueError(f"cannot reach the Kafka broker at {servers} ({exc}); check the "
                                 "address and that the broker is running") from None
            finally:
                quiet.setLevel(level)
            async for message in consumer:
                try:
                    record = record_from_message(message.value)
                    out.write(format_trace_line(record.to_trace()) + "\n")
                except PoisonMessage as exc:
                    out.write(f"[partition {message.partition} offset {message.offset}] "
                              f"not a trace: {exc}\n")
                out.flush()
                seen += 1
                if args.max_messages and seen >= args.max_messages:
                    return
        finally:
            await consumer.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def _push(args: argparse.Namespace, out: TextIO) -> int:
    from tracewire.read.push import PushStats, push_traces

    def progress(stats: PushStats) -> None:
        rate = stats.sent / max(time.monotonic() - stats.started, 1e-9)
        print(f"sent {stats.sent + stats.rejected}/{stats.matched} traces ({rate:.0f}/s), "
              f"rejected {stats.rejected}", file=sys.stderr, flush=True)

    from tracewire.read.storage import check_object_store, resolve

    source = resolve(args.table)
    if source.kind == "delta":
        check_object_store(source.path)
    table = f"jsonl:{source.path}" if source.kind == "jsonl" else source.path
    stats = push_traces(table, args.to, args.filter, args.limit, batch_size=args.batch_size,
                        progress=progress)
    out.write(f"pushed {stats.sent} trace(s) to {args.to}; rejected {stats.rejected}; "
              f"matched {stats.matched}\n")
    return 0 if stats.rejected == 0 else 1


def _ui(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import uvicorn

        from tracewire.read.viewer import create_app
    except ImportError as exc:
        raise ValueError("the viewer needs the 'ui' extra: pip install 'tracewire[ui]'") from exc
    from tracewire.read.storage import check_object_store, resolve

    source = resolve(args.table)
    table = f"jsonl:{source.path}" if source.kind == "jsonl" else source.path
    check_object_store(source.path)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: traces hold user data, anyone who can reach "
              "this address can read them", file=sys.stderr)
    hosts = None if args.host in ("127.0.0.1", "localhost", "::1") else ["*"]
    app = create_app(table, allowed_hosts=hosts)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/"
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    out.write(f"tracewire ui: {table} at {url} (Ctrl-C to stop)\n")
    out.flush()
    if args.open:
        import threading
        import webbrowser

        threading.Timer(0.5, webbrowser.open, [url]).start()
    server.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracewire", description="Read and maintain tracewire traces.")
    commands = parser.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="find traces in an inference table",
                                 description="Find traces with an MLflow-style filter, e.g. "
                                 "\"status = 'ERROR' AND metadata.tenant = 'acme'\".")
    search.add_argument("table", help="Delta table path or URI, or a JSONL file (delta:/jsonl: URIs too)")
    search.add_argument("filter", nargs="?", default=None, help="filter string (default: all)")
    search.add_argument("--order-by", action="append", default=None,
                        help="e.g. 'timestamp_ms DESC' (repeatable; default newest first)")
    search.add_argument("--max-results", type=int, default=100)
    search.add_argument("--json", action="store_true", help="one trace JSON per line")
    search.set_defaults(run=_search)

    show = commands.add_parser("show", help="print a trace as a span tree",
                               description="Print a trace's span tree with durations and "
                               "shortened inputs/outputs; every trace with that id, oldest first, "
                               "when several requests shared one traceparent.")
    show.add_argument("table", help="Delta table path or URI, or a JSONL file")
    show.add_argument("trace_id")
    show.add_argument("--json", action="store_true", help="print the trace JSON instead")
    show.set_defaults(run=_show)

    compact = commands.add_parser("compact", help="compact small files (and vacuum old ones)",
                                  description="Rewrite small files into larger ones; with "
                                  "--vacuum-hours also delete unreferenced files older than that.")
    compact.add_argument("table", help="Delta table path or URI")
    compact.add_argument("--target-size", type=int, default=None, help="bytes per file")
    compact.add_argument("--vacuum-hours", type=int, default=None)
    compact.set_defaults(run=_compact)

    consume = commands.add_parser("consume", help="Kafka topic -> Delta table, one row per record",
                                  description="Consume traces from Kafka into an inference table "
                                  "as a consumer group; each Kafka record becomes exactly one row "
                                  "(or dead letter), even after a crash. A trace the producer sent "
                                  "twice is two records, so two rows.")
    consume.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port]")
    consume.add_argument("--topic", required=True)
    consume.add_argument("--group", required=True, help="consumer group id")
    consume.add_argument("--table", required=True, help="Delta table path or URI")
    consume.add_argument("--dead-letter-table", default=None,
                         help="where malformed messages go (default: TABLE_dead_letter)")
    consume.add_argument("--max-batch", type=int, default=5000, help="messages per Delta commit")
    consume.add_argument("--compact-every", type=int, default=200, help="compact after N commits (0: never)")
    consume.add_argument("--idle-exit", type=float, default=None,
                         help="exit after this many seconds without messages")
    consume.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                         help="object-store option for both tables, e.g. AWS_ENDPOINT_URL=http://... "
                         "(repeatable; AWS_* environment variables apply too)")
    consume.add_argument("--verbose", action="store_true",
                         help="log every Delta commit: offsets recorded, batch offsets, rows kept")
    consume.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    consume.set_defaults(run=_consume)

    tail = commands.add_parser("tail", help="follow a Kafka topic, one line per trace",
                               description="Print one line per trace as it arrives on the topic.")
    tail.add_argument("uri", help="kafka://host:port[,host:port]/topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max-messages", type=int, default=0, help="stop after N messages")
    tail.set_defaults(run=_tail)

    push = commands.add_parser("push", help="re-send stored traces to a destination",
                               description="Send the traces of an inference table (or JSONL file) "
                               "that match the filter to any destination URI (otlp+http://, "
                               "mlflow+http://, kafka://, delta:, jsonl:), oldest first; each trace "
                               "id at most once per run.")
    push.add_argument("table", help="Delta table path or URI, or a JSONL file")
    push.add_argument("--to", required=True, help="destination URI, as in TRACING_DESTINATION")
    push.add_argument("--filter", default=None, help="filter string (default: all)")
    push.add_argument("--limit", type=int, default=None, help="send at most N traces (the oldest)")
    push.add_argument("--batch-size", type=int, default=200, help="traces per export call")
    push.set_defaults(run=_push)
    ui = commands.add_parser("ui", help="browse traces in a local web app",
                             description="Serve a read-only trace viewer for the table (list, trace, "
                             "session and compare pages, JSON API under /api/).")
    ui.add_argument("table", help="Delta table path or URI, or a JSONL file (delta:/jsonl: URIs too)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5170)
    ui.add_argument("--open", action="store_true", help="open the page in a browser")
    ui.set_defaults(run=_ui)
    return parser


def _quiet_stdout() -> None:
    """The reader went away (``| head``): send what is still buffered nowhere, so the
    interpreter's final flush raises nothing either."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args, out or sys.stdout))
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except ValueError as exc:
        print(f"tracewire {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"tracewire {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
