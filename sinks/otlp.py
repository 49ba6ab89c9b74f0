"""``OtlpSink``: traces to any OpenTelemetry receiver over OTLP/HTTP (protobuf, gzip).

    TRACING_DESTINATION=otlp+http://collector:4318          # path defaults to /v1/traces
    TRACING_OTLP_HEADERS="x-api-key=...,x-mlflow-experiment-id=3"

Spans carry MLflow's keys plus the OpenInference, OTel GenAI and HTTP attributes (see
``sinks._otlp_proto``), so an MLflow server, Phoenix or Jaeger each show the trace whole.  The
sink builds its own protobuf messages: it never touches the process's OpenTelemetry tracer
provider and never sees another library's spans.

Delivery: a 408/429/5xx answer or a connection error raises, so the pipeline retries the batch
with backoff (traces the receiver already took are not sent again); any other 4xx rejects the
request's traces for good (counted).  A request over ``max_request_bytes`` is split before it is
sent, and again on a 413; a single trace too large for either has its largest values replaced by
the SPEC §7 truncation marker (and is marked ``tracewire.truncated``); a partial-success answer
counts its rejected spans (``rejected_spans``) and the traces they may belong to as export errors.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sinks._http import RETRYABLE, RetryableError, gzip_body, new_client, split_uri
from sinks.base import Sink

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord
    from tracewire.model import Trace

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/v1/traces"
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
EXPERIMENT_HEADER = "x-mlflow-experiment-id"  # MLflow's OTLP endpoint requires it


def _version() -> str:
    from tracewire import __version__

    return __version__


class OtlpSink(Sink):
    name = "otlp"

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        compression: str = "gzip",
        timeout: float = 10.0,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        experiment_id: str = "0",
    ) -> None:
        import opentelemetry.proto  # noqa: F401  (fail at configuration time, not at export)

        from sinks import _otlp_proto

        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"OTLP endpoint must be an http(s) URL, got {endpoint!r}")
        if compression not in ("gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', got {compression!r}")
        if max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be >= 1024")
        self.endpoint = endpoint
        self.name = f"otlp:{endpoint}"
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self._headers = {str(k).lower(): str(v) for k, v in pairs}
        self._headers["content-type"] = "application/x-protobuf"
        self._compression = compression
        if compression == "gzip":
            self._headers["content-encoding"] = "gzip"
        self._timeout = timeout
        self._max_request_bytes = max_request_bytes
        self._experiment_id = experiment_id
        self._fixed_experiment = EXPERIMENT_HEADER in self._headers
        self._resource = _otlp_proto.resource(resource_attributes or {})
        self._proto = _otlp_proto
        self._client: Any = None
        self._delivered: set[str] = set()  # of the batch being retried: not sent again
        self._traces: dict[str, Trace] = {}  # of the group being sent, to shrink on a 413
        self.rejected_spans = 0

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> OtlpSink:
        """``otlp+http://host:4318[/path][?compression=none&max_request_bytes=N]``."""
        base, path, query = split_uri(uri, "otlp+")
        unknown = set(query) - {"compression", "max_request_bytes"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in {uri!r}")
        return cls(
            base + (path or DEFAULT_PATH),
            headers=settings.otlp_headers,
            resource_attributes=resource_attributes(settings),
            compression=query.get("compression", "gzip"),
            timeout=settings.export_timeout,
            max_request_bytes=int(query.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)),
            experiment_id=settings.mlflow_experiment_id,
        )

    # -- export --------------------------------------------------------------------------------
    async def export(self, batch: Sequence[TraceRecord]) -> int:
        rejected = 0
        groups: dict[str, list[Trace]] = {}
        for record in batch:
            if record.trace_id in self._delivered:
                continue
            try:
                trace = record.to_trace()
            except Exception:
                logger.warning("tracewire: OTLP sink cannot read trace %s; skipped", record.trace_id)
                rejected += 1
                continue
            key = "" if self._fixed_experiment else self._proto.experiment_of(trace, self._experiment_id)
            groups.setdefault(key, []).append(trace)
        budget = self._max_request_bytes - 4096  # room for the resource and the envelope
        for experiment, traces in groups.items():
            self._traces = {t.info.trace_id: t for t in traces}
            encoded = []
            for trace in traces:
                spans = self._proto.encode_trace(trace)
                if len(spans) > budget:
                    spans = self._proto.shrink(trace, budget)
                encoded.append((trace.info.trace_id, spans))
            for chunk in self._chunks(encoded):
                rejected += await self._send(chunk, experiment)
        self._traces = {}
        self._delivered.clear()
        return rejected

    def _chunks(self, encoded: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
        chunks: list[list[tuple[str, bytes]]] = []
        current: list[tuple[str, bytes]] = []
        size = 0
        for item in encoded:
            item_size = len(item[1])
            if current and size + item_size > self._max_request_bytes:
                chunks.append(current)
                current, size = [], 0
            current.append(item)
            size += item_size
        if current:
            chunks.append(current)
        return chunks

    async def _send(self, chunk: list[tuple[str, bytes]], experiment: str, shrunk: bool = False) -> int:
        """Post one request; returns the traces rejected for good (split again on a 413)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        body = self._proto.request_bytes(self._resource, _version(), [spans for _, spans in chunk])
        if self._compression == "gzip":
            body = await gzip_body(body)
        headers = self._headers
        if experiment:
            headers = {**headers, EXPERIMENT_HEADER: experiment}
        if self._client is None:
            self._client = new_client(self._timeout)
        response = await self._client.post(self.endpoint, content=body, headers=headers)
        status = response.status_code
        if status == 413 and len(chunk) > 1:
            half = len(chunk) // 2
            return await self._send(chunk[:half], experiment) + await self._send(chunk[half:], experiment)
        if status == 413 and not shrunk:
            # One trace over the receiver's limit: cut its largest values to half its size, once.
            trace_id, spans = chunk[0]
            smaller = self._proto.shrink(self._traces[trace_id], len(spans) // 2)
            return await self._send([(trace_id, smaller)], experiment, shrunk=True)
        if status in RETRYABLE:
            raise RetryableError(f"HTTP {status} from {self.endpoint}")
        if not 200 <= status < 300:
            logger.warning(
                "tracewire: %s rejected %d trace(s) with HTTP %d: %s",
                self.endpoint, len(chunk), status, response.text[:300],
            )
            self._delivered.update(trace_id for trace_id, _ in chunk)
            return len(chunk)
        self._delivered.update(trace_id for trace_id, _ in chunk)
        answer = ExportTraceServiceResponse()
        try:
            answer.ParseFromString(response.content)
        except Exception:  # a receiver that answers 200 with something else: delivered
            return 0
        partial = answer.partial_success
        if partial.rejected_spans > 0:
            self.rejected_spans += partial.rejected_spans
            logger.warning(
                "tracewire: %s rejected %d span(s) of %d trace(s): %s",
                self.endpoint, partial.rejected_spans, len(chunk), partial.error_message[:300],
            )
            # Which traces the spans belonged to is not said: count at most one per span.
            return min(len(chunk), int(partial.rejected_spans))
        return 0

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def after_fork(self) -> None:
        self._client = None  # the parent's connections are not ours
        self._delivered = set()


def resource_attributes(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """OTLP resource: service.name, service.version (APP_VERSION), deployment.environment
    (APP_ENVIRONMENT) and the SDK's name."""
    env = os.environ if environ is None else environ
    name = settings.service_name or os.path.basename(sys.argv[0] or "") or "unknown_service"
    attributes: dict[str, Any] = {
        "service.name": name,
        "telemetry.sdk.name": "tracewire",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": _version(),
    }
    if env.get("APP_VERSION"):
        attributes["service.version"] = env["APP_VERSION"]
    if env.get("APP_ENVIRONMENT"):
        attributes["deployment.environment"] = env["APP_ENVIRONMENT"]
    return attributes
