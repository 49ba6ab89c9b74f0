"""A small OTLP/HTTP receiver on 127.0.0.1 for the tests: decodes what it is sent (gzip, protobuf,
with the official ``opentelemetry-proto`` messages) and answers what the test scripts."""

from __future__ import annotations

import dataclasses
import gzip
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw_size: int
    request: ExportTraceServiceRequest

    @property
    def spans(self) -> list[Any]:
        return [s for rs in self.request.resource_spans for ss in rs.scope_spans for s in ss.spans]

    @property
    def resource(self) -> dict[str, Any]:
        return {kv.key: value_of(kv.value) for kv in self.request.resource_spans[0].resource.attributes}


def value_of(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


# A reply: (status, body bytes); the default answers 200 with an empty ExportTraceServiceResponse.
Reply = Callable[[ExportTraceServiceRequest], tuple[int, bytes]]


def ok(_: ExportTraceServiceRequest) -> tuple[int, bytes]:
    return 200, ExportTraceServiceResponse().SerializeToString()


class OtlpReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []  # accepted requests (2xx answers)
        self.attempts = 0
        self.replies: list[Reply] = []  # consumed one per request; then ``ok``
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                raw_size = len(body)
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    receiver.attempts += 1
                    reply = receiver.replies.pop(0) if receiver.replies else ok
                status, answer = reply(request)
                if 200 <= status < 300:
                    with receiver._lock:
                        receiver.received.append(Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, raw_size, request))
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def spans(self) -> list[Any]:
        return [span for r in self.received for span in r.spans]
