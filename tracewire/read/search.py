"""``search_traces``: MLflow-style filter strings over an inference table (SPEC §8).

The filter is parsed into Arrow compute expressions and pushed into the Delta scan: time bounds
also prune ``request_date`` partitions, promoted columns (state, session, user, ...) are plain
column predicates, metadata and tags are map lookups.  The scan happens in two phases — the
matching rows' ids and sort keys first, then the full trace JSON of the top ``max_results``
only — so a broad filter over a large table never parses traces in Python.

Several rows may share a trace id (requests that carried one ``traceparent``): every matching row
is returned, each once.

A filter holds at most ``MAX_CLAUSES`` clauses and ``MAX_IN_VALUES`` values per ``IN`` list, and
every literal is checked against its column's range, so a bad filter is always a
``SearchFilterError`` pointing at the offending token, never an Arrow crash or a stray
``OverflowError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tracewire.export.table import PARTITION_COLUMN
from tracewire.model import Trace
from tracewire.read.filter import Clause, SearchFilterError, cut, parse_filter, to_timestamp


def _expression(clause: Clause) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    field: Any = ds.field(clause.column)
    if clause.kind == "map":
        field = pc.map_lookup(field, pa.scalar(clause.key), "first")
    convert = to_timestamp if clause.kind == "time" else (lambda v: v)
    op, value = clause.op, clause.value
    if op == "IS NULL":
        return field.is_null()
    if op == "IS NOT NULL":
        return field.is_valid()
    if op in ("IN", "NOT IN"):
        values = [convert(v) for v in value]
        if clause.kind == "map" or clause.kind in ("str", "state"):
            values = [str(v) for v in values]
        expr = field.isin(values)
        return ~expr if op == "NOT IN" else expr
    if op in ("LIKE", "ILIKE"):
        # SQL LIKE and arrow's match_like share the % and _ wildcards.
        return pc.match_like(field, str(value), ignore_case=op == "ILIKE")
    if clause.kind in ("str", "state", "map"):
        value = str(value)
    value = convert(value)
    return {
        "=": field == value, "!=": field != value, ">": field > value,
        ">=": field >= value, "<": field < value, "<=": field <= value,
    }[op]


def _partition_bounds(clauses: Sequence[Clause]) -> list[Any]:
    """``request_date`` predicates implied by timestamp bounds: prune whole days."""
    import pyarrow.dataset as ds

    out = []
    for clause in clauses:
        if clause.kind != "time" or clause.op not in (">", ">=", "<", "<=", "="):
            continue
        day = to_timestamp(clause.value).date()
        date = ds.field(PARTITION_COLUMN)
        if clause.op in (">", ">="):
            out.append(date >= day)
        elif clause.op in ("<", "<="):
            out.append(date <= day)
        else:
            out.append(date == day)
    return out


_ORDER_FIELDS = {"timestamp_ms": "request_time", "timestamp": "request_time",
                 "execution_time_ms": "execution_duration_ms", "status": "state",
                 "state": "state", "status_code": "status_code", "trace_id": "trace_id",
                 "client_request_id": "client_request_id", "session_id": "session_id",
                 "user_id": "user_id"}


def parse_order_by(order_by: Sequence[str] | None) -> list[tuple[str, str]]:
    if not order_by:
        return [("request_time", "descending")]
    out = []
    for item in order_by:
        parts = item.split()
        if not parts or len(parts) > 2 or parts[0].lower() not in _ORDER_FIELDS:
            raise SearchFilterError(item, 0, f"cannot order by {item!r}; fields: "
                                    f"{', '.join(sorted(_ORDER_FIELDS))}")
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise SearchFilterError(item, item.index(parts[1]), "expected ASC or DESC")
        out.append((_ORDER_FIELDS[parts[0].lower()], "descending" if direction == "DESC" else "ascending"))
    return out


def _and_all(expressions: Sequence[Any]) -> Any:
    """``a & b & ...`` as a balanced tree: its depth grows with log2 of the clauses, not linearly."""
    if len(expressions) == 1:
        return expressions[0]
    middle = len(expressions) // 2
    return _and_all(expressions[:middle]) & _and_all(expressions[middle:])


def build_filter(filter_string: str | None) -> Any:
    """The Arrow dataset expression for ``filter_string`` (None when it is empty)."""
    clauses = parse_filter(filter_string)
    expressions = [_expression(c) for c in clauses] + _partition_bounds(clauses)
    if not expressions:
        return None
    return _and_all(expressions)


def _check_clauses(filter_string: str, schema: Any) -> None:
    """Raise ``SearchFilterError`` at the first clause the table's schema cannot evaluate."""
    import pyarrow as pa

    empty = schema.empty_table()
    for clause in parse_filter(filter_string):
        try:
            empty.filter(_expression(clause))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problem = f"{clause.field} cannot be compared this way ({cut(problem, 120)})"
            raise SearchFilterError(filter_string, clause.pos, problem) from None


def open_dataset(table: str, storage_options: dict[str, str] | None = None) -> Any:
    """The table's current files as a pyarrow dataset, ``request_date`` as a hive partition.

    Local tables are read with pyarrow's own dataset over the files the Delta log lists:
    deltalake's ``to_pyarrow_dataset`` (1.x with pyarrow 26) aborts the interpreter at exit about
    half the time ("terminate called without an active exception"), which a CLI cannot afford.
    Object-store tables still go through deltalake's filesystem handler.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    delta = DeltaTable(table, storage_options=storage_options)
    if "://" in table and not table.startswith("file://"):
        return delta.to_pyarrow_dataset()
    files = [uri.removeprefix("file://") for uri in delta.file_uris()]
    base = os.path.abspath(table.removeprefix("file://"))  # the log lists absolute paths
    partitioning = ds.partitioning(pa.schema([(PARTITION_COLUMN, pa.date32())]), flavor="hive")
    if not files:
        return None
    return ds.dataset(files, format="parquet", partitioning=partitioning, partition_base_dir=base)


def search_traces(
    table: str,
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int = 100,
    storage_options: dict[str, str] | None = None,
) -> list[Trace]:
    """Traces in the inference table at ``table`` matching ``filter_string`` (MLflow grammar).

    ``order_by`` is a list like ``["timestamp_ms DESC"]`` (the default: newest first).
    Raises ``SearchFilterError`` (a ``ValueError``) for a bad filter.
    """
    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    expression = build_filter(filter_string)
    sort_keys = parse_order_by(order_by)
    dataset = open_dataset(table, storage_options)
    if dataset is None:  # a table without data files
        return []
    import pyarrow as pa
    import pyarrow.dataset as ds

    if expression is not None:
        try:  # an unknown map value type or the like: point at the clause, not at Arrow
            dataset.schema.empty_table().filter(expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            _check_clauses(filter_string or "", dataset.schema)
            raise
    key_columns = sorted({"trace_id", PARTITION_COLUMN, *(column for column, _ in sort_keys)})
    matches = dataset.to_table(columns=key_columns, filter=expression)
    if matches.num_rows == 0:
        return []
    top = matches.sort_by(sort_keys).slice(0, max_results)
    ids = [i for i in set(top.column("trace_id").to_pylist()) if i is not None]
    # Second pass reads the (large) trace column of the winners only: their days' partitions,
    # their ids, sorted the same way; it holds every winner row, so its top ``max_results`` are
    # the answer.  Rows sharing a winner's id that did not match (several requests that carried
    # one traceparent) show up as extra rows: only then is the filter applied again.
    days = [d for d in set(top.column(PARTITION_COLUMN).to_pylist()) if d is not None]
    second = ds.field("trace_id").isin(ids)
    if days:
        second = second & ds.field(PARTITION_COLUMN).isin(days)
    columns = sorted({*key_columns, "trace"})
    rows = dataset.to_table(columns=columns, filter=second)
    if expression is not None and rows.num_rows > matches.filter(second).num_rows:
        rows = dataset.to_table(columns=columns, filter=second & expression)
    rows = rows.sort_by(sort_keys).slice(0, max_results)
    return [Trace.from_json(text) for text in rows.column("trace").to_pylist()]
