"""Process-wide state: the resolved settings, the export pipeline, the process metadata.

Everything here is created lazily and re-created in a forked child, so ``import tracewire``
costs nothing and gunicorn ``--preload`` workers each get their own export worker.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from tracewire import config

if TYPE_CHECKING:
    from tracewire.pipeline import ExportPipeline, Finished

logger = logging.getLogger(__name__)


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.settings = config.load()
        self.enabled = self.settings.enabled
        self.explicit_sinks: list[Any] | None = None
        self.pipeline: ExportPipeline | None = None
        self.metadata: dict[str, str] | None = None
        self.last_trace_id: str | None = None


STATE = _State()


def settings() -> config.Settings:
    return STATE.settings


def is_enabled() -> bool:
    return STATE.enabled


def process_metadata() -> dict[str, str]:
    metadata = STATE.metadata
    if metadata is None:
        from tracewire.metadata import process_metadata as resolve

        metadata = STATE.metadata = resolve(STATE.settings.metadata_from_env)
    return metadata


def configure(**kwargs: Any) -> config.Settings:
    sinks = kwargs.pop("sinks", None)
    if sinks is not None:
        sinks = list(sinks)
        for sink in sinks:
            if not callable(getattr(sink, "export", None)):
                raise ValueError(f"sinks= takes Sink instances, got {sink!r}")
        if kwargs.get("enabled") is None and "ENABLE_TRACING" not in os.environ:
            # Handing sinks in code is an explicit opt-in (e.g. MemorySink in a test suite);
            # an ENABLE_TRACING set by the deployment still wins.
            kwargs["enabled"] = True
    if "destination" in kwargs and kwargs["destination"] is not None:
        from tracewire.destinations import validate

        validate(config._str_list(kwargs["destination"]))
    new = config.load(**kwargs)
    with STATE.lock:
        old = STATE.pipeline
        STATE.pipeline = None
        STATE.settings = new
        STATE.explicit_sinks = sinks
        STATE.metadata = None
        STATE.enabled = new.enabled
    if old is not None:
        old.shutdown(new.shutdown_timeout)
    if not new.enabled:
        logger.info("tracewire: tracing is off (ENABLE_TRACING is not true)")
    elif new.autolog:
        apply_autolog(new.autolog, strict=kwargs.get("autolog") is not None)
    return new


def apply_autolog(names: tuple[str, ...], strict: bool) -> None:
    """Patch the client libraries named in ``TRACING_AUTOLOG`` (``tracewire.<name>.autolog()``)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(f"tracewire.{name}").autolog()
        except Exception as exc:
            if strict:
                raise ValueError(f"tracewire setting autolog: cannot trace {name!r}: {exc}") from exc
            logger.warning("tracewire: TRACING_AUTOLOG=%s: cannot trace %r: %s", ",".join(names), name, exc)


def pipeline(create: bool = True) -> ExportPipeline | None:
    current = STATE.pipeline
    if current is not None or not create:
        return current
    with STATE.lock:
        if STATE.pipeline is None:
            from tracewire.pipeline import ExportPipeline

            if STATE.explicit_sinks is not None:
                sinks = STATE.explicit_sinks
            else:
                from tracewire.destinations import create_sinks

                sinks = create_sinks(STATE.settings.destination, STATE.settings)
            STATE.pipeline = ExportPipeline(sinks, STATE.settings)
        return STATE.pipeline


def submit(trace: Finished) -> None:
    STATE.last_trace_id = trace.trace_id
    pipe = STATE.pipeline or pipeline()
    if pipe is not None:
        pipe.submit(trace)


def flush(timeout: float = 5.0) -> bool:
    pipe = pipeline(create=False)
    return True if pipe is None else pipe.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    with STATE.lock:
        pipe, STATE.pipeline = STATE.pipeline, None
    if pipe is not None:
        pipe.shutdown(STATE.settings.shutdown_timeout if timeout is None else timeout)


def stats() -> dict[str, Any]:
    from tracewire.client import registry_stats

    pipe = pipeline(create=False)
    if pipe is None:
        from tracewire.pipeline import empty_stats

        return {**empty_stats(), **registry_stats()}
    return {**pipe.stats(), **registry_stats()}


if STATE.enabled and STATE.settings.autolog:  # env-only deployments: ENABLE_TRACING + TRACING_AUTOLOG
    apply_autolog(STATE.settings.autolog, strict=False)
