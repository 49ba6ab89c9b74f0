"""Every reserved name in one place: MLflow's attribute, metadata and tag keys, tracewire's
own keys, span types and inference-table error codes (as MLflow keeps them in
``mlflow/tracing/constant.py``).  The bottom layer: it imports nothing of tracewire.
"""

from __future__ import annotations

TRACE_ID_PREFIX = "tr-"
TRACE_SCHEMA_VERSION = "3"  # MLflow's trace schema (metadata ``mlflow.trace_schema.version``)
RECORD_SCHEMA_VERSION = "1"  # of the Kafka message layout (header ``tracewire-schema``)
PREVIEW_CHARS = 1000  # request/response previews, as MLflow cuts them


class SpanType:
    """Well-known span types; any other string is accepted too (an open set, as in MLflow)."""

    LLM = "LLM"
    CHAT_MODEL = "CHAT_MODEL"
    CHAIN = "CHAIN"
    AGENT = "AGENT"
    TOOL = "TOOL"
    RETRIEVER = "RETRIEVER"
    EMBEDDING = "EMBEDDING"
    RERANKER = "RERANKER"
    PARSER = "PARSER"
    MEMORY = "MEMORY"
    GUARDRAIL = "GUARDRAIL"
    EVALUATOR = "EVALUATOR"
    WORKFLOW = "WORKFLOW"
    TASK = "TASK"
    UNKNOWN = "UNKNOWN"


class SpanAttributeKey:
    REQUEST_ID = "mlflow.traceRequestId"
    SPAN_TYPE = "mlflow.spanType"
    INPUTS = "mlflow.spanInputs"
    OUTPUTS = "mlflow.spanOutputs"
    CHAT_USAGE = "mlflow.chat.tokenUsage"
    FUNCTION_NAME = "mlflow.spanFunctionName"


class TraceMetadataKey:
    SCHEMA_VERSION = "mlflow.trace_schema.version"
    SESSION = "mlflow.trace.session"
    USER = "mlflow.trace.user"
    TOKEN_USAGE = "mlflow.trace.tokenUsage"
    SAMPLING_FRACTION = "tracewire.sampling_fraction"
    TRUNCATED = "tracewire.truncated"
    SIZE_BYTES = "tracewire.size_bytes"
    LOGGING_ERROR_CODES = "tracewire.logging_error_codes"  # the inference table's column, in the JSON
    TRUNCATION_COUNTS = "tracewire.truncation"  # what truncation removed: "spans_dropped=3,span_values=1"
    REJECTED_HEADERS = "tracewire.rejected_headers"


class TraceTagKey:
    TRACE_NAME = "mlflow.traceName"


class ErrorCode:
    """``logging_error_codes`` of the inference table (Databricks' names)."""

    MAX_REQUEST_SIZE_EXCEEDED = "MAX_REQUEST_SIZE_EXCEEDED"
    MAX_RESPONSE_SIZE_EXCEEDED = "MAX_RESPONSE_SIZE_EXCEEDED"
    TRACE_TRUNCATED = "TRACE_TRUNCATED"
