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

import dataclasses
import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from tracewire.model import Trace


class SearchFilterError(ValueError):
    """A filter or order_by that cannot be parsed; the message points at the bad token."""

    def __init__(self, text: str, position: int, problem: str):
        self.text = text
        self.position = position
        self.problem = problem
        super().__init__(f"{problem} at position {position}:\n  {text}\n  {' ' * position}^")


MAX_CLAUSES = 100
"""The most AND-ed clauses one filter may hold: each costs a kernel call per file and batch (256 take
~5 s over 400 files), and thousands crash the Arrow scan."""
MAX_IN_VALUES = 10_000
"""The most values one ``IN (...)`` list may hold."""

# Integer columns' ranges (status_code is int32 in the table, durations int64).
_INT_RANGES = {"status_code": (-(2**31), 2**31 - 1), "execution_duration_ms": (-(2**63), 2**63 - 1)}

# field name -> (column, kind); kind: str, int, time, state, map
_COLUMNS: dict[str, tuple[str, str]] = {
    "status": ("state", "state"),
    "state": ("state", "state"),
    "attributes.status": ("state", "state"),
    "timestamp_ms": ("request_time", "time"),
    "timestamp": ("request_time", "time"),
    "attributes.timestamp_ms": ("request_time", "time"),
    "execution_time_ms": ("execution_duration_ms", "int"),
    "execution_duration_ms": ("execution_duration_ms", "int"),
    "status_code": ("status_code", "int"),
    "client_request_id": ("client_request_id", "str"),
    "trace_id": ("trace_id", "str"),
    "request_id": ("trace_id", "str"),
    "session_id": ("session_id", "str"),
    "user_id": ("user_id", "str"),
}
_MAP_PREFIXES = {"metadata": "request_metadata", "request_metadata": "request_metadata",
                 "tags": "tags", "tag": "tags"}
_NAME_FIELDS = {"name", "trace_name", "attributes.name"}
_COMPARISONS = ("=", "!=", ">", ">=", "<", "<=")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<unclosed>'[^']*$)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|>=|<=|<>|=|>|<)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_.\-]*))?)
    """,
    re.VERBOSE,
)


@dataclasses.dataclass
class _Token:
    kind: str
    value: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SearchFilterError(text, pos, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind == "unclosed":
            raise SearchFilterError(text, pos, "unclosed string literal")
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    return tokens


@dataclasses.dataclass
class Clause:
    field: str
    column: str
    kind: str
    op: str
    value: Any = None
    key: str | None = None  # map key for metadata./tags.
    pos: int = 0  # where the clause starts in the filter text


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def _peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            raise SearchFilterError(self.text, len(self.text), f"expected {expected}, got end of filter")
        self.i += 1
        return token

    def parse(self) -> list[Clause]:
        clauses = [self._clause()]
        while self._peek() is not None:
            token = self._next("AND")
            if token.kind != "ident" or token.value.upper() != "AND":
                raise SearchFilterError(self.text, token.pos,
                                        f"expected AND between clauses, got {token.value!r}")
            if len(clauses) >= MAX_CLAUSES:
                raise SearchFilterError(self.text, token.pos,
                                        f"too many clauses: a filter holds at most {MAX_CLAUSES}")
            clauses.append(self._clause())
        return clauses

    def _check_text(self, value: str, token: _Token) -> None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            problem = f"not valid Unicode (a lone surrogate at character {exc.start})"
            raise SearchFilterError(self.text, token.pos, problem) from None

    def _field(self) -> tuple[Clause, _Token]:
        token = self._next("a field")
        if token.kind != "ident":
            raise SearchFilterError(self.text, token.pos, f"expected a field, got {token.value!r}")
        name = token.value
        lowered = name.lower()
        if lowered in _COLUMNS:
            column, kind = _COLUMNS[lowered]
            return Clause(lowered, column, kind, ""), token
        if lowered in _NAME_FIELDS:
            return Clause("name", "tags", "map", "", key="mlflow.traceName"), token
        prefix, dot, key = name.partition(".")
        if dot and prefix.lower() in _MAP_PREFIXES and key:
            key = key[1:-1] if key.startswith("`") and key.endswith("`") else key
            self._check_text(key, token)
            return Clause(name, _MAP_PREFIXES[prefix.lower()], "map", "", key=key), token
        known = sorted({*_COLUMNS, "name", "metadata.<key>", "tags.<key>"})
        raise SearchFilterError(self.text, token.pos,
                                f"unknown field {name!r}; known fields: {', '.join(known)}")

    def _literal(self, clause: Clause) -> Any:
        token = self._next("a value")
        if token.kind == "string":
            value: Any = token.value[1:-1].replace("''", "'")
            self._check_text(value, token)
        elif token.kind == "number":
            value = float(token.value) if "." in token.value else int(token.value)
            if isinstance(value, float) and not math.isfinite(value):
                raise SearchFilterError(self.text, token.pos, f"number out of range: {_cut(token.value)}")
        else:
            raise SearchFilterError(self.text, token.pos,
                                    f"expected a quoted string or a number, got {_cut(token.value)!r}")
        if clause.kind in ("int", "time") and not isinstance(value, (int, float)):
            raise SearchFilterError(self.text, token.pos, f"{clause.field} takes a number")
        if clause.kind == "int":
            low, high = _INT_RANGES[clause.column]
            if not low <= value <= high:
                raise SearchFilterError(self.text, token.pos,
                                        f"{clause.field} takes a number from {low} to {high}")
        if clause.kind == "time":
            try:
                _to_timestamp(value)
            except (OverflowError, OSError, ValueError):
                raise SearchFilterError(
                    self.text, token.pos,
                    f"{clause.field} out of range: milliseconds since 1970 for a date in years 1-9999",
                ) from None
        if clause.kind == "state" and isinstance(value, str):
            value = value.upper()
        return value

    def _clause(self) -> Clause:
        clause, start = self._field()
        clause.pos = start.pos
        token = self._next("an operator")
        word = token.value.upper()
        if token.kind == "op":
            clause.op = "!=" if token.value == "<>" else token.value
            if clause.kind in ("str", "state", "map") and clause.op not in ("=", "!="):
                raise SearchFilterError(self.text, token.pos,
                                        f"{clause.field} compares with = != LIKE ILIKE IN, not {token.value}")
            clause.value = self._literal(clause)
            return clause
        if token.kind == "ident" and word in ("LIKE", "ILIKE"):
            if clause.kind in ("int", "time"):
                raise SearchFilterError(self.text, token.pos, f"{word} needs a string field")
            clause.op = word
            clause.value = self._literal(clause)
            if not isinstance(clause.value, str):
                raise SearchFilterError(self.text, token.pos, f"{word} takes a quoted pattern")
            return clause
        if token.kind == "ident" and word == "IS":
            negate = False
            nxt = self._next("NULL")
            if nxt.value.upper() == "NOT":
                negate = True
                nxt = self._next("NULL")
            if nxt.value.upper() != "NULL":
                raise SearchFilterError(self.text, nxt.pos, f"expected NULL, got {nxt.value!r}")
            clause.op = "IS NOT NULL" if negate else "IS NULL"
            return clause
        if token.kind == "ident" and word in ("IN", "NOT"):
            if word == "NOT":
                nxt = self._next("IN")
                if nxt.value.upper() != "IN":
                    raise SearchFilterError(self.text, nxt.pos, f"expected IN after NOT, got {nxt.value!r}")
            clause.op = "NOT IN" if word == "NOT" else "IN"
            paren = self._next("(")
            if paren.kind != "lparen":
                raise SearchFilterError(self.text, paren.pos, f"expected ( after {clause.op}")
            values = [self._literal(clause)]
            while True:
                sep = self._next(", or )")
                if sep.kind == "rparen":
                    break
                if sep.kind != "comma":
                    raise SearchFilterError(self.text, sep.pos, f"expected , or ), got {_cut(sep.value)!r}")
                if len(values) >= MAX_IN_VALUES:
                    raise SearchFilterError(self.text, sep.pos,
                                            f"too many values: an IN list holds at most {MAX_IN_VALUES}")
                values.append(self._literal(clause))
            clause.value = values
            return clause
        raise SearchFilterError(
            self.text, token.pos,
            f"unknown operator {token.value!r}; use = != > >= < <= LIKE ILIKE IN NOT IN IS NULL IS NOT NULL",
        )


def _cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_filter(filter_string: str | None) -> list[Clause]:
    if filter_string is None or not filter_string.strip():
        return []
    return _Parser(filter_string).parse()


def _to_timestamp(ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def _expression(clause: Clause) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    field: Any = ds.field(clause.column)
    if clause.kind == "map":
        field = pc.map_lookup(field, pa.scalar(clause.key), "first")
    convert = _to_timestamp if clause.kind == "time" else (lambda v: v)
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
        day = _to_timestamp(clause.value).date()
        date = ds.field("request_date")
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
            problem = f"{clause.field} cannot be compared this way ({_cut(problem, 120)})"
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
    partitioning = ds.partitioning(pa.schema([("request_date", pa.date32())]), flavor="hive")
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
    key_columns = sorted({"trace_id", "request_date", *(column for column, _ in sort_keys)})
    matches = dataset.to_table(columns=key_columns, filter=expression)
    if matches.num_rows == 0:
        return []
    top = matches.sort_by(sort_keys).slice(0, max_results)
    ids = [i for i in set(top.column("trace_id").to_pylist()) if i is not None]
    # Second pass reads the (large) trace column of the winners only: their days' partitions,
    # their ids, sorted the same way; it holds every winner row, so its top ``max_results`` are
    # the answer.  Rows sharing a winner's id that did not match (several requests that carried
    # one traceparent) show up as extra rows: only then is the filter applied again.
    days = [d for d in set(top.column("request_date").to_pylist()) if d is not None]
    second = ds.field("trace_id").isin(ids)
    if days:
        second = second & ds.field("request_date").isin(days)
    columns = sorted({*key_columns, "trace"})
    rows = dataset.to_table(columns=columns, filter=second)
    if expression is not None and rows.num_rows > matches.filter(second).num_rows:
        rows = dataset.to_table(columns=columns, filter=second & expression)
    rows = rows.sort_by(sort_keys).slice(0, max_results)
    return [Trace.from_json(text) for text in rows.column("trace").to_pylist()]
