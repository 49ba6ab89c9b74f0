"""``DeltaTableSink``: traces appended to a Delta Lake "inference table" (SPEC §6).

One row per trace, partitioned by ``request_date``, with the columns Databricks inference tables
use, readable by any Delta reader (deltalake, Polars, DuckDB, Spark).  Writes run on a dedicated
thread so the export worker's loop stays responsive and the pipeline's deadline applies.
Several processes may append to one local table: Delta's optimistic concurrency retries the
commit, and a failed commit (after delta-rs's own retries) makes the pipeline retry the batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sinks.base import Sink
from tracewire.export.table import PARTITION_COLUMN, records_to_table

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord

logger = logging.getLogger(__name__)

_COMMIT_RETRIES = 50


class DeltaTableSink(Sink):
    """Append traces to the Delta table at ``path`` (local path or object-store URI)."""

    name = "delta"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage_options: dict[str, str] | None = None,
        target_file_size: int | None = None,
    ) -> None:
        try:
            import deltalake  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "the delta destination needs the 'delta' extra: pip install 'tracewire[delta]'"
            ) from exc
        self.path = os.fspath(path)
        if "://" not in self.path:
            self.path = os.path.abspath(self.path)
        self.name = f"delta:{self.path}"
        self._storage_options = storage_options
        self._target_file_size = target_file_size
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> DeltaTableSink:
        path = uri.partition(":")[2]
        if not path:
            raise ValueError(f"delta destination needs a path or URI: {uri!r}")
        options = {
            key[len("delta_option_"):]: value
            for key, value in settings.extra.items()
            if key.startswith("delta_option_")
        }
        return cls(path, storage_options=options or None)

    def write(self, records: Sequence[TraceRecord]) -> None:
        """Append ``records`` synchronously (also usable outside the pipeline)."""
        from deltalake import CommitProperties, write_deltalake
        from deltalake.exceptions import CommitFailedError, DeltaError

        table = records_to_table(records)
        for attempt in range(5):
            try:
                write_deltalake(
                    self.path, table, mode="append", partition_by=[PARTITION_COLUMN],
                    storage_options=self._storage_options,
                    target_file_size=self._target_file_size,
                    commit_properties=CommitProperties(max_commit_retries=_COMMIT_RETRIES),
                )
                return
            except (CommitFailedError, DeltaError) as exc:
                # Two processes creating the table at once: one loses version 0; retry as append.
                conflict = isinstance(exc, CommitFailedError) or "already exists" in str(exc).lower()
                if not conflict or attempt == 4:
                    raise
                logger.debug("delta commit conflict on %s, retrying: %s", self.path, exc)

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracewire-delta")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self.write, list(batch))
        except RuntimeError:
            # At interpreter exit executors refuse new work; write on the worker thread instead.
            self.write(batch)
            return
        await future

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def after_fork(self) -> None:
        self._executor = None
