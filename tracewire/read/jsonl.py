"""Search a JSON-lines trace file (what the ``jsonl:`` destination writes) like a Delta table.

The file's traces become an in-memory table in the inference-table schema
(``tracewire.export.table``), and the filter and order are the very Arrow expressions
``search_traces`` pushes into a Delta scan (``tracewire.read.search``), so a filter means the same
thing on either.  A line that is not a trace (a truncated last line, a stray log line) is skipped
and counted, never fatal.  Gzipped files (``.gz``) are read too.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from tracewire.export.record import TraceRecord
from tracewire.keys import TraceMetadataKey
from tracewire.model import Trace

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class JsonlTraces:
    """The traces of one file as a pyarrow table (None: no trace in it) and the lines skipped."""

    table: Any
    skipped: int = 0


def _open(path: str) -> io.BufferedIOBase:
    if path.endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    return open(path, "rb")


def record_from_line(line: bytes) -> TraceRecord:
    """A stored trace JSON line as the record the exporters and the table use (``ValueError``)."""
    trace = Trace.from_json(line)
    try:
        fraction = float(trace.info.trace_metadata.get(TraceMetadataKey.SAMPLING_FRACTION, "1"))
    except ValueError:
        fraction = 1.0
    return TraceRecord.from_trace(trace, line, fraction)


def _records(path: str, skipped: list[int]) -> Iterator[TraceRecord]:
    with _open(path) as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield record_from_line(line)
            except Exception as exc:
                skipped.append(number)
                logger.debug("%s line %d is not a trace (%s: %s)", path, number, type(exc).__name__, exc)


def load(path: str | os.PathLike[str]) -> JsonlTraces:
    """Read every trace of the file at ``path`` (``OSError`` when it cannot be read)."""
    from tracewire.export.table import records_to_table

    skipped: list[int] = []
    records = list(_records(os.fspath(path), skipped))
    if skipped:
        first = ", ".join(str(n) for n in skipped[:5])
        logger.warning("%s: %d line(s) are not traces and were skipped (line %s%s)", os.fspath(path),
                       len(skipped), first, ", ..." if len(skipped) > 5 else "")
    return JsonlTraces(records_to_table(records) if records else None, len(skipped))


def search_jsonl(
    path: str | os.PathLike[str],
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int = 100,
) -> list[Trace]:
    """``search_traces`` over a JSON-lines file: same filter grammar, order and result shape."""
    import pyarrow.dataset as ds

    from tracewire.read.filter import parse_filter
    from tracewire.read.search import parse_order_by, search_dataset

    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    parse_filter(filter_string)  # a bad filter fails before the file is read
    parse_order_by(order_by)
    table = load(path).table
    if table is None:
        return []
    return search_dataset(ds.dataset(table), filter_string, order_by, max_results)

