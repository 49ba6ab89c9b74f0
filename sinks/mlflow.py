"""``MlflowSink``: full-fidelity traces into an MLflow tracking server, without importing mlflow.

    TRACING_DESTINATION=mlflow+http://mlflow:5000       # or mlflow+https://...[?experiment_id=3]

MLflow's OTLP ingestion keeps the span tree but not the client request id, the custom metadata
or explicit previews.  This sink writes the way MLflow's own client does: the whole trace info
first (``POST /api/3.0/mlflow/traces``, MLflow's ``StartTraceV3``: client request id, metadata,
tags, previews, state, experiment), then the spans (``POST /v1/traces``, OTLP protobuf with
MLflow's attribute keys, the path MLflow's ``log_spans`` uses).  Both calls are idempotent on
the server (an existing trace is merged, spans are upserted), so a retried batch is harmless.

The experiment is ``?experiment_id=`` when given, else the trace's own ``trace_location``
(``TRACING_MLFLOW_EXPERIMENT_ID`` when it was recorded).  Credentials, as for MLflow's client:
``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sinks._http import RETRYABLE, RetryableError, gzip_body, new_client, split_uri
from sinks.base import Sink

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord
    from tracewire.model import Trace

logger = logging.getLogger(__name__)

START_TRACE_PATH = "/api/3.0/mlflow/traces"
SPANS_PATH = "/v1/traces"
# MLflow's client cuts metadata and tags to these sizes before StartTraceV3 (mlflow.tracing.constant)
_MAX_METADATA_CHARS = 250
_MAX_TAG_KEY_CHARS = 250
_MAX_TAG_VALUE_CHARS = 4096
_CONCURRENCY = 8


def trace_info_json(trace: Trace, experiment_id: str) -> dict[str, Any]:
    """The trace info as MLflow's ``TraceInfoV3`` proto JSON (what ``StartTraceV3`` takes)."""
    from tracewire.model import format_request_time

    info = trace.info
    out: dict[str, Any] = {
        "trace_id": info.trace_id,
        "trace_location": {"type": "MLFLOW_EXPERIMENT",
                           "mlflow_experiment": {"experiment_id": experiment_id}},
        "request_time": format_request_time(info.request_time),
        "state": info.state if info.state in ("OK", "ERROR", "IN_PROGRESS") else "STATE_UNSPECIFIED",
        "trace_metadata": {
            k[:_MAX_METADATA_CHARS]: v[:_MAX_METADATA_CHARS] for k, v in info.trace_metadata.items()
        },
        "tags": {k[:_MAX_TAG_KEY_CHARS]: v[:_MAX_TAG_VALUE_CHARS] for k, v in info.tags.items()},
    }
    if info.client_request_id is not None:
        out["client_request_id"] = info.client_request_id
    if info.request_preview is not None:
        out["request_preview"] = info.request_preview
    if info.response_preview is not None:
        out["response_preview"] = info.response_preview
    if info.execution_duration_ms is not None:
        seconds, millis = divmod(info.execution_duration_ms, 1000)
        out["execution_duration"] = f"{seconds}.{millis:03d}s"
    return out


class MlflowSink(Sink):
    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment_id: str | None = None,
        default_experiment_id: str = "0",
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        timeout: float = 10.0,
    ) -> None:
        import opentelemetry.proto  # noqa: F401  (fail at configuration time, not at export)

        from sinks import _otlp_proto

        if not tracking_uri.startswith(("http://", "https://")):
            raise ValueError(f"MLflow tracking URI must be an http(s) URL, got {tracking_uri!r}")
        self.tracking_uri = tracking_uri.rstrip("/")
        self.name = f"mlflow:{self.tracking_uri}"
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self._headers = {str(k).lower(): str(v) for k, v in pairs}
        self._experiment_id = experiment_id
        self._default_experiment_id = default_experiment_id
        self._timeout = timeout
        self._proto = _otlp_proto
        self._client: Any = None
        self._started: set[str] = set()  # of the batch being retried: trace info already written
        self._delivered: set[str] = set()

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> MlflowSink:
        base, path, query = split_uri(uri, "mlflow+")
        unknown = set(query) - {"experiment_id"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in {uri!r}")
        return cls(
            base + path, experiment_id=query.get("experiment_id"),
            default_experiment_id=settings.mlflow_experiment_id,
            headers=auth_headers(os.environ), timeout=settings.export_timeout,
        )

    def _check(self, response: Any, what: str) -> bool:
        """True when accepted; raises when worth a retry; False when rejected for good."""
        status = response.status_code
        if 200 <= status < 300:
            return True
        if status in RETRYABLE:
            raise RetryableError(f"HTTP {status} from {self.tracking_uri} ({what})")
        logger.warning("tracewire: MLflow server %s rejected %s with HTTP %d: %s",
                       self.tracking_uri, what, status, response.text[:300])
        return False

    async def export(self, batch: Sequence[TraceRecord]) -> int:
        if self._client is None:
            self._client = new_client(self._timeout)
        rejected = 0
        traces: list[Trace] = []
        for record in batch:
            if record.trace_id in self._delivered:
                continue
            try:
                traces.append(record.to_trace())
            except Exception:
                logger.warning("tracewire: MLflow sink cannot read trace %s; skipped", record.trace_id)
                rejected += 1
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def start(trace: Trace, experiment: str) -> bool:
            if trace.info.trace_id in self._started:
                return True
            body = {"trace": {"trace_info": trace_info_json(trace, experiment)}}
            async with limit:
                response = await self._client.post(
                    self.tracking_uri + START_TRACE_PATH, json=body, headers=self._headers)
            ok = self._check(response, f"trace {trace.info.trace_id}")
            if ok:
                self._started.add(trace.info.trace_id)
            return ok

        groups: dict[str, list[Trace]] = {}
        for trace in traces:
            experiment = self._experiment_id or self._proto.experiment_of(trace, self._default_experiment_id)
            groups.setdefault(experiment, []).append(trace)
        for experiment, members in groups.items():
            results = await asyncio.gather(*(start(t, experiment) for t in members))
            accepted = [t for t, ok in zip(members, results, strict=True) if ok]
            rejected += len(members) - len(accepted)
            self._delivered.update(t.info.trace_id for t, ok in zip(members, results, strict=True) if not ok)
            if not accepted:
                continue
            body = self._proto.request_bytes(
                self._proto.resource({}), _version(),
                [self._proto.encode_trace(t, semconv=False) for t in accepted])
            headers = {**self._headers, "content-type": "application/x-protobuf",
                       "content-encoding": "gzip", "x-mlflow-experiment-id": experiment}
            response = await self._client.post(
                self.tracking_uri + SPANS_PATH, content=await gzip_body(body),
                headers=headers)
            if not self._check(response, f"the spans of {len(accepted)} trace(s)"):
                rejected += len(accepted)
            self._delivered.update(t.info.trace_id for t in accepted)
        self._started.clear()
        self._delivered.clear()
        return rejected

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def after_fork(self) -> None:
        self._client = None
        self._started = set()
        self._delivered = set()


def auth_headers(environ: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own client credentials (``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME``
    and ``MLFLOW_TRACKING_PASSWORD``), so a server behind auth takes the traces.  The OTLP sink's
    ``TRACING_OTLP_HEADERS`` are never sent here: one destination's key must not reach another."""
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"authorization": f"Bearer {token}"}
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        import base64

        return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _version() -> str:
    from tracewire import __version__

    return __version__
