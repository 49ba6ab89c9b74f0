"""The process wiring: settings in force, the export pipeline, and the hook between them.

Recording (``tracewire.recording``) knows nothing of export: ``configure`` hands it the settings
and points ``RECORDER.on_finish`` at the pipeline's ``submit``.  The pipeline is created lazily —
on the first finished trace — and again in a forked child, so ``import tracewire`` costs
nothing and gunicorn ``--preload`` workers each get their own export worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tracewire import config, redaction
from tracewire.export.counters import empty_stats
from tracewire.recording.client import registry_stats
from tracewire.recording.live import LiveTrace
from tracewire.recording.recorder import RECORDER

if TYPE_CHECKING:  # the export side is imported when the first trace finishes: import stays cheap
    from tracewire.export.exporter import Exporter
    from tracewire.export.pipeline import ExportPipeline

logger = logging.getLogger(__name__)


class _Process:
    """The export side of this process (the recording side is ``RECORDER``)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.explicit_sinks: list[Exporter] | None = None
        self.pipeline: ExportPipeline | None = None


PROCESS = _Process()


def settings() -> config.Settings:
    return RECORDER.settings


def is_enabled() -> bool:
    return RECORDER.enabled


def configure(**kwargs: Any) -> config.Settings:
    sinks = kwargs.pop("sinks", None)
    if sinks is not None:
        sinks = _check_sinks(sinks)
        if kwargs.get("enabled") is None and "ENABLE_TRACING" not in os.environ:
            # Handing sinks in code is an explicit opt-in (e.g. MemorySink in a test suite);
            # an ENABLE_TRACING set by the deployment still wins.
            kwargs["enabled"] = True
    if kwargs.get("destination") is not None:
        from tracewire.export.destinations import validate

        validate(config.str_list(kwargs["destination"]))
    new = config.load(**kwargs)
    with PROCESS.lock:
        old = PROCESS.pipeline
        PROCESS.pipeline = None
        PROCESS.explicit_sinks = sinks
        _apply(new)
    if old is not None:
        old.shutdown(new.shutdown_timeout)
    if not new.enabled:
        logger.info("tracewire: tracing is off (ENABLE_TRACING is not true)")
    elif new.autolog:
        apply_autolog(new.autolog, strict=kwargs.get("autolog") is not None)
    return new


def apply_autolog(names: tuple[str, ...], strict: bool) -> None:
    """Patch the client libraries named in ``TRACING_AUTOLOG`` (``tracewire.<name>.autolog()``).

    Integrations are found by name, like destinations: the wiring never imports them."""
    import importlib

    for name in names:
        try:
            importlib.import_module(f"tracewire.{name}").autolog()
        except Exception as exc:
            if strict:
                raise ValueError(f"tracewire setting autolog: cannot trace {name!r}: {exc}") from exc
            logger.warning("tracewire: TRACING_AUTOLOG=%s: cannot trace %r: %s", ",".join(names), name, exc)


def _check_sinks(sinks: Sequence[Any]) -> list[Exporter]:
    checked = list(sinks)
    for sink in checked:
        if not callable(getattr(sink, "export", None)):
            raise ValueError(f"sinks= takes Sink instances, got {sink!r}")
    return checked


def _apply(new: config.Settings) -> None:
    RECORDER.use(new)
    RECORDER.on_finish = _submit
    redaction.use(new.redact_fields)


def pipeline(create: bool = True) -> ExportPipeline | None:
    current = PROCESS.pipeline
    if current is not None or not create:
        return current
    with PROCESS.lock:
        if PROCESS.pipeline is None:
            from tracewire.export.destinations import create_sinks
            from tracewire.export.pipeline import ExportPipeline

            current_settings = RECORDER.settings
            if PROCESS.explicit_sinks is not None:
                sinks = PROCESS.explicit_sinks
            else:
                sinks = create_sinks(current_settings.destination, current_settings)
            PROCESS.pipeline = ExportPipeline(sinks, current_settings)
        return PROCESS.pipeline


def _submit(trace: LiveTrace) -> None:
    pipe = PROCESS.pipeline or pipeline()
    if pipe is not None:
        pipe.submit(trace)


def flush(timeout: float = 5.0) -> bool:
    pipe = pipeline(create=False)
    return True if pipe is None else pipe.flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    with PROCESS.lock:
        pipe, PROCESS.pipeline = PROCESS.pipeline, None
    if pipe is not None:
        pipe.shutdown(RECORDER.settings.shutdown_timeout if timeout is None else timeout)


def stats() -> dict[str, Any]:
    pipe = pipeline(create=False)
    counters = empty_stats() if pipe is None else pipe.stats()
    return {**counters, **registry_stats()}


_apply(RECORDER.settings)  # the settings from the environment, until configure() says otherwise
if RECORDER.enabled and RECORDER.settings.autolog:  # env-only deployments: ENABLE_TRACING + TRACING_AUTOLOG
    apply_autolog(RECORDER.settings.autolog, strict=False)
