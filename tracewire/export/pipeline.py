"""The export pipeline: one bounded queue and one background worker serving every sink.

``submit`` (request path) is O(1): a bound check and a deque append under a lock, no
serialization and no I/O.  The worker thread runs its own asyncio loop; it takes batches by
count or interval, serializes and samples them (SPEC §7), and hands each batch to every sink.
Each sink drains its batches in order on its own task, with a deadline on every call and
retries with backoff while the sink is down; a batch releases its share of the bound when every
sink is done with it.  The bound (traces and bytes) covers everything accepted and not yet
released, so a dead sink fills it and new traces are dropped and counted — never the accepted
ones.  After ``os.fork()`` the child starts empty and lazily; nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures.thread  # its exit hook must be registered before ours
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from tracewire import context, metadata
from tracewire.config import Settings
from tracewire.export import finishing
from tracewire.export.counters import empty_stats
from tracewire.export.exporter import Exporter
from tracewire.export.record import TraceRecord
from tracewire.logs import RateLimitedLog
from tracewire.model import Trace
from tracewire.recording.live import LiveTrace

logger = logging.getLogger(__name__)

_BACKOFF_START = 0.1
_BACKOFF_MAX = 5.0


class _Batch:
    __slots__ = ("approx_bytes", "count", "pending_sinks", "records")

    def __init__(self, records: list[TraceRecord], count: int, approx_bytes: int, sinks: int):
        self.records = records
        self.count = count  # traces this batch holds in the bound (sampled-out ones included)
        self.approx_bytes = approx_bytes
        self.pending_sinks = sinks


class _SinkState:
    def __init__(self, sink: Exporter) -> None:
        self.sink = sink
        self.name: str = str(getattr(sink, "name", type(sink).__name__))
        self.batches: collections.deque[_Batch] = collections.deque()
        self.ready: asyncio.Event | None = None
        self.exported = 0
        self.errors = 0
        self.retries = 0
        self.failing = False


class ExportPipeline:
    """Bounded, batched, deadline-guarded export of finished traces to sinks."""

    def __init__(self, sinks: Sequence[Exporter], settings: Settings) -> None:
        self._settings = settings
        self._process_metadata: dict[str, str] | None = None
        self._sinks = [_SinkState(s) for s in sinks]
        self._init_process_state()
        _PIPELINES.add(self)

    def _init_process_state(self) -> None:
        """State that belongs to one process: re-made from scratch in a forked child."""
        self._pid = os.getpid()
        self._cond = threading.Condition(threading.Lock())
        # (trace, bytes counted for it at submit): a live trace can still grow after submit
        # (deferred body recording runs on the worker), so release exactly what was counted.
        self._queue: collections.deque[tuple[LiveTrace | Trace, int]] = collections.deque()
        self._held_traces = 0
        self._held_bytes = 0
        self._accepted = 0
        self._released = 0
        self._sampled_out = 0
        self._dropped_full = 0
        self._truncated = 0
        self._processing_errors = 0
        self._lost_at_shutdown = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._stopping = False
        self._closed = False
        self._deadline = 0.0
        self._rng = random.Random()
        self._log = RateLimitedLog(logger)
        for state in self._sinks:
            state.batches.clear()
            state.ready = None
            state.exported = state.errors = state.retries = 0
            state.failing = False

    def _metadata(self) -> dict[str, str]:
        """Process metadata (deployment env vars, git, source), resolved once, on the worker."""
        if self._process_metadata is None:
            self._process_metadata = metadata.process_metadata(self._settings.metadata_from_env)
        return self._process_metadata

    def _after_fork_in_child(self) -> None:
        self._init_process_state()
        for state in self._sinks:
            hook = getattr(state.sink, "after_fork", None)
            if callable(hook):
                try:
                    hook()
                except Exception:
                    logger.exception("tracewire: %s.after_fork failed", state.name)

    # -- request path ------------------------------------------------------------------------------
    def submit(self, trace: LiveTrace | Trace) -> bool:
        """Accept a finished trace for export; False (and counted) when the bound is full."""
        # A queued trace will hold its serialized JSON as well as the root request/response
        # text the sinks index on: count it at twice its captured bytes until it is serialized,
        # then at its real size (see _pump), so the byte bound bounds memory, not a fraction of it.
        size = 2 * finishing.approx_bytes(trace) + 512
        settings = self._settings
        with self._cond:
            if self._closed:
                self._dropped_full += 1
                return False
            if (
                self._held_traces >= settings.queue_max_traces
                or self._held_bytes + size > settings.queue_max_bytes
            ):
                self._dropped_full += 1
                full = True
            else:
                full = False
                self._queue.append((trace, size))
                self._held_traces += 1
                self._held_bytes += size
                self._accepted += 1
                wake = len(self._queue) >= settings.batch_size and not self._wake_pending
                if wake:
                    self._wake_pending = True
        if full:
            self._log.warning(
                "full", "tracewire: export queue full (%d traces, %d bytes held); dropping traces",
                self._held_traces, self._held_bytes,
            )
            return False
        if self._thread is None:
            self._start()
        elif wake:
            self._notify()
        return True

    # -- control --------------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every trace accepted so far is exported (or given up); True if so."""
        if threading.current_thread() is self._thread:
            return False
        with self._cond:
            target = self._accepted
            if self._released >= target:
                return True
        self._notify()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._released < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush within ``timeout``, stop the worker and close the sinks. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._deadline = time.monotonic() + timeout
        self.flush(timeout)
        self._stopping = True
        self._notify()
        thread.join(timeout + 1.0)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            out = empty_stats()
            out.update(
                accepted=self._accepted, sampled_out=self._sampled_out,
                dropped_full=self._dropped_full, truncated=self._truncated,
                processing_errors=self._processing_errors,
                lost_at_shutdown=self._lost_at_shutdown,
                queue_traces=self._held_traces, queue_bytes=self._held_bytes,
            )
            for state in self._sinks:
                out["exported"][state.name] = state.exported
                out["export_errors"][state.name] = state.errors
                out["sinks"][state.name] = {
                    "exported": state.exported, "errors": state.errors,
                    "retries": state.retries, "pending_batches": len(state.batches),
                    "healthy": not state.failing,
                }
            return out

    # -- worker ---------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._loop = asyncio.new_event_loop()
            self._wake = asyncio.Event()
            self._thread = threading.Thread(
                target=self._run, name=f"tracewire-export-{os.getpid()}", daemon=True
            )
            self._thread.start()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        # Nothing is traced on the worker: not here, not in its tasks (they copy this context),
        # not in its default executor's threads (run_in_executor does not copy the context).
        context.suppressed.set(True)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            thread_name_prefix=f"tracewire-export-io-{os.getpid()}", initializer=_suppress_here,
        ))
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except Exception:
            logger.exception("tracewire: export worker crashed")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        wake = self._wake
        assert wake is not None
        for state in self._sinks:
            state.ready = asyncio.Event()
        drains = [asyncio.create_task(self._drain(state)) for state in self._sinks]
        interval = self._settings.batch_interval
        while not self._stopping:
            try:
                await asyncio.wait_for(wake.wait(), interval)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            with self._cond:
                self._wake_pending = False
            await self._pump()
        await self._pump()
        await self._finish(drains)

    async def _pump(self) -> None:
        """Move everything queued into batches for the sinks (serialize + sample here).

        The loop is yielded after each batch, so the sinks start sending the first batch while
        the next ones are serialized (a burst does not wait for all of it to be serialized).
        """
        batch_size = self._settings.batch_size
        while True:
            await asyncio.sleep(0)
            with self._cond:
                if not self._queue:
                    return
                take = min(batch_size, len(self._queue))
                items = [self._queue.popleft() for _ in range(take)]
            records: list[TraceRecord] = []
            sampled_out = errors = truncated = 0
            for item, _ in items:
                try:
                    record = finishing.finish(item, self._settings, self._rng, self._metadata())
                except Exception:
                    errors += 1
                    logger.exception("tracewire: could not serialize a trace")
                    continue
                if record is None:
                    sampled_out += 1
                    continue
                if record.metadata.get("tracewire.truncated") == "true":
                    truncated += 1
                records.append(record)
            # From here on the batch holds serialized records: count what they really hold
            # (payload plus the root request/response text), not the request-path estimate.
            estimate = sum(size for _, size in items)
            held = sum(len(r.payload) + len(r.request or "") + len(r.response or "") for r in records)
            with self._cond:
                self._sampled_out += sampled_out
                self._processing_errors += errors
                self._truncated += truncated
                self._held_bytes += held - estimate
            batch = _Batch(records, len(items), held, len(self._sinks))
            if not records or not self._sinks:
                self._release(batch)
                continue
            for state in self._sinks:
                state.batches.append(batch)
                assert state.ready is not None
                state.ready.set()

    def _release(self, batch: _Batch) -> None:
        with self._cond:
            self._held_traces -= batch.count
            self._held_bytes -= batch.approx_bytes
            self._released += batch.count
            self._cond.notify_all()

    def _sink_done(self, batch: _Batch) -> None:
        batch.pending_sinks -= 1
        if batch.pending_sinks == 0:
            self._release(batch)

    async def _drain(self, state: _SinkState) -> None:
        """Export this sink's batches in order; retry a failing batch with backoff."""
        assert state.ready is not None
        timeout = self._settings.export_timeout
        backoff = _BACKOFF_START
        while True:
            if not state.batches:
                state.ready.clear()
                await state.ready.wait()
                continue
            batch = state.batches[0]
            try:
                rejected = await asyncio.wait_for(state.sink.export(batch.records), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.retries += 1
                if not state.failing:
                    state.failing = True
                self._log.warning(
                    f"sink:{state.name}",
                    "tracewire: sink %s failed to export %d traces (%s: %s); retrying in %.1fs",
                    state.name, len(batch.records), type(exc).__name__,
                    exc if not isinstance(exc, asyncio.TimeoutError) else "deadline exceeded",
                    backoff,
                )
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_START
            if state.failing:
                state.failing = False
                logger.warning("tracewire: sink %s recovered", state.name)
            failed = rejected if isinstance(rejected, int) and rejected > 0 else 0
            state.batches.popleft()
            with self._cond:
                state.exported += len(batch.records) - failed
                state.errors += failed
            self._sink_done(batch)

    async def _finish(self, drains: list[asyncio.Task[None]]) -> None:
        """Stop: give the sinks until the shutdown deadline, then count what is left as lost."""
        deadline = self._deadline
        while any(s.batches for s in self._sinks) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        for state in self._sinks:
            while state.batches:
                batch = state.batches.popleft()
                with self._cond:
                    state.errors += len(batch.records)
                    self._lost_at_shutdown += len(batch.records)
                self._sink_done(batch)
            try:
                await asyncio.wait_for(state.sink.aclose(), max(deadline - time.monotonic(), 0.5))
            except Exception:
                logger.warning("tracewire: closing sink %s failed", state.name, exc_info=True)


_PIPELINES: weakref.WeakSet[ExportPipeline] = weakref.WeakSet()


def _suppress_here() -> None:
    context.suppressed.set(True)


def _reset_after_fork() -> None:
    for pipeline in list(_PIPELINES):
        pipeline._after_fork_in_child()


def _shutdown_all() -> None:
    for pipeline in list(_PIPELINES):
        try:
            pipeline.shutdown(pipeline._settings.shutdown_timeout)
        except Exception:
            logger.exception("tracewire: shutdown at exit failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
# Flush at exit *before* concurrent.futures stops accepting work (sinks may use executors):
# threading's exit hooks run in reverse order of registration, ahead of atexit, and
# concurrent.futures.thread (imported above) registers its own when first imported.  atexit
# stays as the fallback; shutdown() is idempotent.
_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    try:
        _register_thread_exit(_shutdown_all)
    except RuntimeError:
        pass
atexit.register(_shutdown_all)
