"""``search_traces``: MLflow-style filter strings over an inference table (SPEC §8).

The filter is parsed into Arrow compute expressions and pushed into the Delta scan: time bounds
also prune ``request_date`` partitions, promoted columns (state, session, user, ...) are plain
column predicates, metadata and tags are map lookups.  The scan happens in two phases — the
matching rows' ids and sort keys first, then the full trace JSON of the top ``max_results``
only — so a broad filter over a large table never parses traces in Python.

Filters on spans (``span.name``, ``span.type``, ``span.status``) are checked on the parsed trace,
after a pushed-down substring test on the ``trace`` column has dropped the rows that cannot match.
``trace.text`` (``span.content``) is a ``LIKE`` over each span's JSON.  As in MLflow, all span
clauses of a filter hold for one and the same span.

Order is deterministic, as in MLflow: the ``order_by`` keys, then timestamp DESC, then trace id.

Several rows may share a trace id (requests that carried one ``traceparent``): every matching row
is returned, each once.

A filter holds at most ``MAX_CLAUSES`` clauses and ``MAX_IN_VALUES`` values per ``IN`` list, and
every literal is checked against its column's range, so a bad filter is always a
``SearchFilterError`` pointing at the offending token, never an Arrow crash or a stray
``OverflowError``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from tracewire.export.table import PARTITION_COLUMN
from tracewire.model import Span, Trace
from tracewire.read.filter import (
    Clause,
    SearchFilterError,
    cut,
    matches,
    parse_filter,
    parse_order_field,
    to_timestamp,
)


def _end_time_ms(request_time: Any, duration: Any) -> Any:
    """``request_time`` (microsecond timestamps) + ``execution_duration_ms`` as epoch milliseconds;
    on columns, or on dataset expressions (whose ``cast`` is a method: ``pc.cast`` takes arrays)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if isinstance(request_time, ds.Expression):
        micros = request_time.cast(pa.int64())
    else:
        micros = pc.cast(request_time, pa.int64())
    return pc.add(pc.divide(micros, 1000), duration)


def _value(clause: Clause) -> Any:
    """The clause's left-hand side as a dataset expression."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if clause.kind == "end":
        return _end_time_ms(ds.field("request_time"), ds.field("execution_duration_ms"))
    field: Any = ds.field(clause.column)
    if clause.kind == "map":
        field = pc.map_lookup(field, pa.scalar(clause.key), "first")
    return field


# Printable ASCII without quote or backslash: such text appears verbatim in the trace JSON.
_PLAIN = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+")
# Words and single spaces, no JSON punctuation: the same in our compact JSON and MLflow's spaced one.
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_\-./()@#!?']+(?: [A-Za-z0-9_\-./()@#!?']+)*")
SPAN_KINDS = ("span", "text")
"""Clauses on one span each (``span.*``, ``trace.text``): checked on the parsed trace."""


def _fragments(clause: Clause) -> list[str] | None:
    """Substrings one of which the trace JSON must hold for a span clause to match, or None."""
    plain = _PLAIN_TEXT if clause.kind == "text" else _PLAIN
    if clause.op in ("=", "IN"):
        values = clause.value if clause.op == "IN" else [clause.value]
        if all(plain.fullmatch(v) for v in values):
            return list(values)
    if clause.op in ("LIKE", "ILIKE"):
        pieces = [f for f in re.split(r"[%_]", clause.value) if plain.fullmatch(f)]
        if pieces:
            return [max(pieces, key=len)]
    return None


def _expression(clause: Clause) -> Any:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if clause.kind in SPAN_KINDS:  # a necessary condition only: the exact check runs on the trace
        fragments = _fragments(clause) if clause.key != "status" else None
        if not fragments:
            return ds.scalar(True)
        trace = ds.field("trace")
        ignore_case = clause.op == "ILIKE"
        return _or_all([pc.match_substring(trace, f, ignore_case=ignore_case) for f in fragments])
    field = _value(clause)
    convert = to_timestamp if clause.kind == "time" else (lambda v: v)
    op, value = clause.op, clause.value
    if op == "IS NULL":
        return field.is_null()
    if op == "IS NOT NULL":
        return field.is_valid()
    if op in ("IN", "NOT IN"):
        expr = field.isin([convert(v) for v in value])
        return (~expr & field.is_valid()) if op == "NOT IN" else expr  # null is in no list, nor out
    if op in ("LIKE", "ILIKE"):
        # SQL LIKE and arrow's match_like share the % and _ wildcards.
        return pc.match_like(field, str(value), ignore_case=op == "ILIKE")
    if op == "RLIKE":
        return pc.match_substring_regex(field, str(value))
    value = convert(value)
    return {
        "=": field == value, "!=": field != value, ">": field > value,
        ">=": field >= value, "<": field < value, "<=": field <= value,
    }[op]


def _span_value(clause: Clause, span: Span) -> str:
    if clause.kind == "text":  # the span's JSON, as MLflow's store keeps it for full-text search
        return json.dumps(span.to_dict(), ensure_ascii=False, default=str)
    return span.name if clause.key == "name" else span.span_type if clause.key == "type" else span.status


def _span_matches(clauses: Sequence[Clause], trace: Trace) -> bool:
    """Whether one span of ``trace`` satisfies every span clause (as MLflow: the same span)."""
    return any(all(matches(c.op, _span_value(c, span), c.value) for c in clauses)
               for span in trace.data.spans)


def _partition_bounds(clauses: Sequence[Clause]) -> list[Any]:
    """``request_date`` predicates implied by time bounds: prune whole days."""
    import pyarrow.dataset as ds

    out = []
    for clause in clauses:
        ops = (">", ">=", "<", "<=", "=") if clause.kind == "time" else ("<", "<=") if clause.kind == "end" \
            else ()
        if clause.op not in ops:  # an end time bounds the start from above only (durations >= 0)
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


def parse_order_by(order_by: Sequence[str] | None) -> list[tuple[Clause, bool]]:
    """The sort keys: ``order_by``'s, then timestamp DESC and trace id ASC as MLflow breaks ties."""
    keys = []
    for item in order_by or ():
        if not isinstance(item, str):
            raise SearchFilterError(repr(item), 0, "an order_by entry is a string like 'timestamp_ms DESC'")
        try:
            keys.append(parse_order_field(item))
        except SearchFilterError as exc:
            raise SearchFilterError(item, exc.position, f"cannot order by {cut(item)!r}: {exc.problem}") \
                from None
    columns = {(c.column, c.key) for c, _ in keys}
    if ("request_time", None) not in columns:
        keys.append((Clause("timestamp_ms", "request_time", "time", ""), False))
    if ("trace_id", None) not in columns:
        keys.append((Clause("trace_id", "trace_id", "str", ""), True))
    return keys


def _key_columns(keys: Sequence[tuple[Clause, bool]]) -> set[str]:
    columns = {"trace_id", PARTITION_COLUMN}
    for clause, _ in keys:
        columns |= {"request_time", "execution_duration_ms"} if clause.kind == "end" else {clause.column}
    return columns


def _sorted(rows: Any, keys: Sequence[tuple[Clause, bool]]) -> Any:
    """``rows`` sorted by ``keys`` (nulls last, as MLflow puts them when descending)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays, sort_keys = [], []
    for i, (clause, ascending) in enumerate(keys):
        if clause.kind == "end":
            column = _end_time_ms(rows.column("request_time"), rows.column("execution_duration_ms"))
        elif clause.kind == "map":
            column = pc.map_lookup(rows.column(clause.column), pa.scalar(clause.key), "first")
        else:
            column = rows.column(clause.column)
        arrays.append(column)
        sort_keys.append((f"k{i}", "ascending" if ascending else "descending"))
    table = pa.table(arrays, names=[f"k{i}" for i in range(len(arrays))])
    return rows.take(pc.sort_indices(table, sort_keys=sort_keys))  # nulls sort at the end


def _and_all(expressions: Sequence[Any]) -> Any:
    """``a & b & ...`` as a balanced tree: its depth grows with log2 of the clauses, not linearly."""
    if len(expressions) == 1:
        return expressions[0]
    middle = len(expressions) // 2
    return _and_all(expressions[:middle]) & _and_all(expressions[middle:])


def _or_all(expressions: Sequence[Any]) -> Any:
    if len(expressions) == 1:
        return expressions[0]
    middle = len(expressions) // 2
    return _or_all(expressions[:middle]) | _or_all(expressions[middle:])


def _check_regexes(filter_string: str, clauses: Sequence[Clause]) -> None:
    """RLIKE patterns pushed into the scan run on RE2, stricter than ``re`` (no lookarounds, no
    backreferences): reject those up front, pointing at the clause."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for clause in clauses:
        if clause.op == "RLIKE" and clause.kind not in SPAN_KINDS:
            try:
                pc.match_substring_regex(pa.array([""], pa.string()), clause.value)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problem = f"not a regular expression RE2 accepts ({cut(str(exc).splitlines()[0], 120)})"
                raise SearchFilterError(filter_string, clause.pos, problem) from None


def _scan_expression(clauses: Sequence[Clause]) -> Any:
    expressions = [_expression(c) for c in clauses] + _partition_bounds(clauses)
    return _and_all(expressions) if expressions else None


def build_filter(filter_string: str | None) -> Any:
    """The Arrow dataset expression for ``filter_string`` (None when it is empty).

    Span clauses need the parsed trace, which an expression cannot hold: they are rejected here
    (``search_traces`` evaluates them).
    """
    clauses = parse_filter(filter_string)
    for clause in clauses:
        if clause.kind in SPAN_KINDS:
            raise SearchFilterError(filter_string or "", clause.pos,
                                    f"{clause.field} is evaluated by search_traces only, not in a table scan")
    _check_regexes(filter_string or "", clauses)
    return _scan_expression(clauses)


def _check_clauses(filter_string: str, clauses: Sequence[Clause], schema: Any) -> None:
    """Raise ``SearchFilterError`` at the first clause the table's schema cannot evaluate."""
    import pyarrow as pa

    empty = schema.empty_table()
    for clause in clauses:
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

    ``order_by`` is a list like ``["timestamp_ms DESC"]`` (the default: newest first); ties are
    broken by timestamp DESC, then trace id.  Raises ``SearchFilterError`` (a ``ValueError``) for
    a bad filter or order_by.
    """
    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    parse_filter(filter_string)  # a bad filter or order_by fails before the table is opened
    parse_order_by(order_by)
    return search_dataset(open_dataset(table, storage_options), filter_string, order_by, max_results)


def search_dataset(
    dataset: Any, filter_string: str | None = None, order_by: Sequence[str] | None = None,
    max_results: int = 100,
) -> list[Trace]:
    """``search_traces`` over any pyarrow dataset in the inference-table schema (a Delta table's
    files, or a JSONL file loaded in memory): the same grammar, pushdown, order and ties."""
    if max_results < 1:
        raise ValueError("max_results must be >= 1")
    clauses = parse_filter(filter_string)
    keys = parse_order_by(order_by)
    _check_regexes(filter_string or "", clauses)
    expression = _scan_expression(clauses)
    exact = [c for c in clauses if c.kind in SPAN_KINDS]
    if dataset is None:  # a table without data files
        return []
    import pyarrow as pa
    import pyarrow.dataset as ds

    if expression is not None:
        try:  # an unknown map value type, a regex RE2 rejects: point at the clause, not at Arrow
            dataset.schema.empty_table().filter(expression)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            _check_clauses(filter_string or "", clauses, dataset.schema)
            raise
    key_columns = sorted(_key_columns(keys))
    if exact:
        # Span clauses: the pushed-down substring test leaves the candidates; parse those once.
        rows = dataset.to_table(columns=sorted({*key_columns, "trace"}), filter=expression)
        traces = [Trace.from_json(text) for text in rows.column("trace").to_pylist()]
        keep = pa.array([_span_matches(exact, t) for t in traces], pa.bool_())
        numbered = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
        winners = _sorted(numbered.filter(keep), keys).slice(0, max_results)
        return [traces[i] for i in winners.column("_row").to_pylist()]
    matches_ = dataset.to_table(columns=key_columns, filter=expression)
    if matches_.num_rows == 0:
        return []
    top = _sorted(matches_, keys).slice(0, max_results)
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
    if expression is not None and rows.num_rows > matches_.filter(second).num_rows:
        rows = dataset.to_table(columns=columns, filter=second & expression)
    rows = _sorted(rows, keys).slice(0, max_results)
    return [Trace.from_json(text) for text in rows.column("trace").to_pylist()]
