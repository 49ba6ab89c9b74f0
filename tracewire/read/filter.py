"""The filter grammar of ``search_traces`` (SPEC §8): MLflow's subset, parsed into clauses.

Clauses joined by ``AND``; fields ``status``/``state``, ``timestamp_ms``, ``execution_time_ms``,
``status_code``, ``client_request_id``, ``trace_id``, ``name``, ``metadata.<key>``,
``tags.<key>``, ``session_id``, ``user_id``; operators ``= != > >= < <= LIKE ILIKE IN NOT IN
IS NULL IS NOT NULL``.  A bad filter raises ``SearchFilterError`` pointing at the offending
token.  Turning clauses into a table scan is ``tracewire.read.search``'s job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from typing import Any


def to_timestamp(ms: float) -> dt.datetime:
    """A ``timestamp_ms`` literal as a UTC datetime (``OverflowError``/``ValueError`` out of range)."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


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
                raise SearchFilterError(self.text, token.pos, f"number out of range: {cut(token.value)}")
        else:
            raise SearchFilterError(self.text, token.pos,
                                    f"expected a quoted string or a number, got {cut(token.value)!r}")
        if clause.kind in ("int", "time") and not isinstance(value, (int, float)):
            raise SearchFilterError(self.text, token.pos, f"{clause.field} takes a number")
        if clause.kind == "int":
            low, high = _INT_RANGES[clause.column]
            if not low <= value <= high:
                raise SearchFilterError(self.text, token.pos,
                                        f"{clause.field} takes a number from {low} to {high}")
        if clause.kind == "time":
            try:
                to_timestamp(value)
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
                    raise SearchFilterError(self.text, sep.pos, f"expected , or ), got {cut(sep.value)!r}")
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


def cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_filter(filter_string: str | None) -> list[Clause]:
    if filter_string is None or not filter_string.strip():
        return []
    return _Parser(filter_string).parse()
