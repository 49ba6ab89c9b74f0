"""Settings: keyword arguments win, env vars fill what was not given, defaults fill the rest.

Every setting is declared once in ``SETTINGS`` with its env var, default and parser.  A bad env
value is logged and its default used (a typo in a deployment must not take the service down); a
bad explicit argument raises ``ValueError`` (a bug in code should fail loudly, at start-up).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

DEFAULT_METADATA_FROM_ENV = (
    "app_version=APP_VERSION,deployment_id=DEPLOYMENT_ID,region=REGION,environment=APP_ENVIRONMENT"
)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _number(kind: type, low: float, high: float | None = None) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {kind.__name__}, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"must be {bound}, got {value!r}")
        return number

    return parse


def str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    raise ValueError(f"expected a comma-separated string or a list, got {value!r}")


def _regex_list(value: Any) -> tuple[str, ...]:
    patterns = str_list(value)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad regex {pattern!r}: {exc}") from None
    return patterns


def _env_mapping(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = []
        for part in str_list(value):
            key, sep, env = part.partition("=")
            if not sep or not key.strip() or not env.strip():
                raise ValueError(f"expected key=ENV_VAR pairs, got {part!r}")
            items.append((key.strip(), env.strip()))
    return tuple(items)


def _header_name(value: Any) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"[a-z0-9!#$%&'*+.^_`|~-]+", text):
        raise ValueError(f"not a valid HTTP header name: {value!r}")
    return text


class Headers(tuple):  # type: ignore[type-arg]
    """``(name, value)`` pairs whose values never show in a repr or a log line (API keys)."""

    def __repr__(self) -> str:
        return "Headers(%s)" % ", ".join(f"{k}=***" for k, _ in self)


def _headers(value: Any) -> Headers:
    """``k=v,k2=v2`` (values percent-decoded, as OTEL_EXPORTER_OTLP_HEADERS) or a mapping."""
    from urllib.parse import unquote

    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for number, part in enumerate(p for p in value.split(",") if p.strip()):
            key, sep, text = part.partition("=")
            if not sep:
                raise ValueError(f"header {number + 1} is not name=value")  # never echo a secret
            pairs.append((unquote(key).strip(), unquote(text).strip()))
    else:
        raise ValueError(f"expected name=value pairs or a mapping, got a {type(value).__name__}")
    return Headers((_header_name(k), v) for k, v in pairs)


AUTOLOG_INTEGRATIONS = ("openai",)


def _autolog_list(value: Any) -> tuple[str, ...]:
    names = tuple(name.lower() for name in str_list(value))
    unknown = [name for name in names if name not in AUTOLOG_INTEGRATIONS]
    if unknown:
        raise ValueError(
            f"unknown integration(s) {', '.join(unknown)}; known: {', '.join(AUTOLOG_INTEGRATIONS)}"
        )
    return names


def _nonempty_str(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("must not be empty")
    return text


# Names whose values are never captured (see tracewire.redaction for the word rule).
DEFAULT_REDACT_FIELDS: tuple[str, ...] = (
    "password", "passwd", "passphrase", "secret", "api_key", "apikey", "*token", "authorization",
    "private_key", "client_secret", "credential", "credentials", "cookie", "set_cookie",
    "proxy_authorization",
)


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False  # never log the value


SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", "ENABLE_TRACING", False, parse_bool, "master switch"),
    Setting("destination", "TRACING_DESTINATION", ("delta:./traces",), str_list,
            "sink URIs, comma-separated: kafka://h:p/topic, delta:PATH, jsonl:PATH, memory:"),
    Setting("sample_rate", "TRACING_SAMPLE_RATE", 1.0, _number(float, 0.0, 1.0),
            "head sampling rate, decided from the trace id at request start"),
    Setting("sampling_size_threshold", "TRACING_SAMPLING_SIZE_THRESHOLD", 65536,
            _number(int, 1), "traces above this many bytes are kept with p = threshold/size"),
    Setting("max_trace_bytes", "TRACING_MAX_TRACE_BYTES", 1048576, _number(int, 1024),
            "kept traces are truncated to fit this many bytes"),
    Setting("max_value_bytes", "TRACING_MAX_VALUE_BYTES", 262144, _number(int, 64),
            "cap on one captured input/output/attribute value"),
    Setting("capture_bodies", "TRACING_CAPTURE_BODIES", True, parse_bool,
            "record request/response bodies on the root span"),
    Setting("exclude_paths", "TRACING_EXCLUDE_PATHS", (), _regex_list,
            "regexes on the request path that are not traced"),
    Setting("metadata_from_env", "TRACING_METADATA_FROM_ENV",
            _env_mapping(DEFAULT_METADATA_FROM_ENV), _env_mapping,
            "trace metadata filled from deployment env vars, key=ENV_VAR pairs"),
    Setting("queue_max_traces", "TRACING_QUEUE_MAX_TRACES", 10000, _number(int, 1),
            "bound on traces held by the export pipeline"),
    Setting("queue_max_bytes", "TRACING_QUEUE_MAX_BYTES", 64 * 1024 * 1024, _number(int, 1024),
            "bound on bytes held by the export pipeline"),
    Setting("batch_size", "TRACING_BATCH_SIZE", 256, _number(int, 1),
            "traces per export batch"),
    Setting("batch_interval", "TRACING_BATCH_INTERVAL", 0.5, _number(float, 0.001),
            "seconds between exports when batches are not full"),
    Setting("export_timeout", "TRACING_EXPORT_TIMEOUT", 10.0, _number(float, 0.01),
            "deadline in seconds for one sink call"),
    Setting("shutdown_timeout", "TRACING_SHUTDOWN_TIMEOUT", 5.0, _number(float, 0.0),
            "deadline in seconds for the flush at shutdown"),
    Setting("client_max_traces", "TRACING_CLIENT_MAX_TRACES", 10000, _number(int, 1),
            "TracingClient traces held open at once; the oldest is dropped (and counted) beyond it"),
    Setting("client_trace_ttl", "TRACING_CLIENT_TRACE_TTL", 3600.0, _number(float, 0.001),
            "seconds a TracingClient trace may stay open before it is dropped (and counted)"),
    Setting("root_span_type", "TRACING_ROOT_SPAN_TYPE", "CHAIN", _nonempty_str,
            "span type of the request root span"),
    Setting("request_id_header", "TRACING_REQUEST_ID_HEADER", "x-request-id", _header_name,
            "header copied to client_request_id"),
    Setting("session_id_header", "TRACING_SESSION_ID_HEADER", "x-session-id", _header_name,
            "header copied to metadata mlflow.trace.session"),
    Setting("user_id_header", "TRACING_USER_ID_HEADER", "x-user-id", _header_name,
            "header copied to metadata mlflow.trace.user"),
    Setting("trace_id_header", "TRACING_TRACE_ID_HEADER", "x-trace-id", _header_name,
            "response header carrying the trace id"),
    Setting("redact_fields", "TRACING_REDACT_FIELDS", DEFAULT_REDACT_FIELDS, str_list,
            "values named with one of these words (case-insensitive; *word: only as the last word) "
            "replaced by [REDACTED] in bodies, query strings, span inputs/outputs, metadata, tags"),
    Setting("otlp_headers", "TRACING_OTLP_HEADERS", Headers(), _headers,
            "k=v,k2=v2 headers sent by the OTLP sinks (values never logged)", secret=True),
    Setting("service_name", "TRACING_SERVICE_NAME", None, _nonempty_str,
            "OTLP resource service.name (default: OTEL_SERVICE_NAME, else the program name)"),
    Setting("mlflow_experiment_id", "TRACING_MLFLOW_EXPERIMENT_ID", "0", _nonempty_str,
            "MLflow experiment id written to trace_location (and used by the MLflow sinks)"),
    Setting("autolog", "TRACING_AUTOLOG", (), _autolog_list,
            "client libraries traced automatically when tracing is configured, comma-separated: openai"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    enabled: bool
    destination: tuple[str, ...]
    sample_rate: float
    sampling_size_threshold: int
    max_trace_bytes: int
    max_value_bytes: int
    capture_bodies: bool
    exclude_paths: tuple[str, ...]
    metadata_from_env: tuple[tuple[str, str], ...]
    queue_max_traces: int
    queue_max_bytes: int
    batch_size: int
    batch_interval: float
    export_timeout: float
    shutdown_timeout: float
    client_max_traces: int
    client_trace_ttl: float
    root_span_type: str
    request_id_header: str
    session_id_header: str
    user_id_header: str
    trace_id_header: str
    redact_fields: tuple[str, ...]
    otlp_headers: Headers
    service_name: str | None
    mlflow_experiment_id: str
    autolog: tuple[str, ...] = ()
    # Producer and sink options that pass through to sinks (TRACING_KAFKA_*, ...).
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def load(
    environ: Mapping[str, str] | None = None, /, **kwargs: Any
) -> Settings:
    """Resolve settings: explicit keyword arguments > env vars > defaults.

    Keyword arguments are named like the env var, lower-cased, without ``TRACING_``
    (``enabled`` for ``ENABLE_TRACING``).  ``None`` means "not given".
    """
    env = os.environ if environ is None else environ
    unknown = sorted(set(kwargs) - set(_BY_NAME))
    if unknown:
        raise ValueError(
            f"unknown tracewire setting(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_BY_NAME))}"
        )
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        given = kwargs.get(setting.name)
        if given is not None:
            try:
                values[setting.name] = setting.parse(given)
            except ValueError as exc:
                shown = "***" if setting.secret else repr(given)
                raise ValueError(f"tracewire setting {setting.name}={shown}: {exc}") from None
            continue
        raw = env.get(setting.env)
        if raw is None or (raw.strip() == "" and setting.parse is not parse_bool):
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            logger.warning(
                "tracewire: ignoring %s=%r (%s); using the default %r",
                setting.env, "***" if setting.secret else raw, exc, setting.default,
            )
            values[setting.name] = setting.default
    if values["service_name"] is None and env.get("OTEL_SERVICE_NAME", "").strip():
        values["service_name"] = env["OTEL_SERVICE_NAME"].strip()
    extra = {
        k[len("TRACING_"):].lower(): v
        for k, v in env.items()
        if k.startswith(("TRACING_KAFKA_", "TRACING_DELTA_"))
    }
    return Settings(**values, extra=extra)
