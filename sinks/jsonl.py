"""``JsonlSink``: one trace JSON per line, appended to a local file.

Several processes (gunicorn workers) may append to the same file: each batch is written with a
single ``write`` on an ``O_APPEND`` descriptor under an exclusive ``flock``, so lines from
different processes never interleave.

A batch is written whole or not at all: the file's size is taken under the lock before writing,
and when a write fails part-way (a full disk, a file size limit) the file is truncated back to it
before the error is raised, so the pipeline's retry writes each trace exactly once.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sinks.base import Sink

if TYPE_CHECKING:
    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord

logger = logging.getLogger(__name__)


class JsonlSink(Sink):
    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.name = f"jsonl:{self.path}"
        self._fd: int | None = None

    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> JsonlSink:
        path = uri.partition(":")[2]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"jsonl destination needs a path: {uri!r}")
        return cls(path)

    def _open(self) -> int:
        if self._fd is None:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    async def export(self, batch: Sequence[TraceRecord]) -> None:
        data = b"".join(record.payload + b"\n" for record in batch)
        fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    if written == 0:
                        raise OSError(f"short write to {self.path}")
                    view = view[written:]
            except BaseException:
                # Never leave half a batch (a cut line glued to the next one) behind.
                try:
                    os.ftruncate(fd, start)
                except OSError as exc:
                    logger.error("could not truncate %s back to %d bytes: %s", self.path, start, exc)
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def after_fork(self) -> None:
        # The inherited descriptor is shared with the parent; open our own.
        self._fd = None
