"""The filter grammar of ``search_traces`` (SPEC §8): MLflow's, parsed into clauses.

Clauses joined by ``AND``.  Fields, spelled as MLflow spells them, each optionally prefixed with
``attribute.``, ``attributes.`` or ``trace.`` and optionally quoted with backticks or double quotes:
``status`` (exact: ``'OK'``/``'ERROR'``), ``timestamp``/``timestamp_ms``,
``execution_time``/``execution_time_ms``, ``end_time``/``end_time_ms``, ``request_id``/``trace_id``,
``client_request_id``, ``name`` (the ``mlflow.traceName`` tag), ``run_id`` (the
``mlflow.sourceRun`` metadata), ``prompt``, ``text`` (full text over the trace, ``LIKE``/``ILIKE``);
``tag.<key>``/``tags.<key>``, ``metadata.<key>``/``request_metadata.<key>``; ``span.name``,
``span.type``, ``span.status``, ``span.content`` (traces having such a span; all span clauses
of a filter, ``text`` included, hold for the same span, as in MLflow).  tracewire's own
columns: ``state``, ``status_code``, ``session_id``, ``user_id``, ``execution_duration_ms``.
Operators ``= != > >= < <= LIKE ILIKE RLIKE IN NOT IN IS NULL IS NOT NULL``; strings in single
or double quotes.  A bad filter raises ``SearchFilterError`` pointing at the offending token.
Turning clauses into a table scan is ``tracewire.read.search``'s job.
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

# Clause kinds: str (a string column), state (the status column, compared exactly), int, time
# (request_time), end (request_time + execution_duration_ms), map (a tags/metadata key), span (a
# property of any span: checked on the parsed trace), text (LIKE over the whole trace JSON).
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE", "RLIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
_NUMBER_OPS = ("=", "!=", ">", ">=", "<", "<=", "IN", "NOT IN", "IS NULL", "IS NOT NULL")
OPERATORS: dict[str, tuple[str, ...]] = {
    "str": _STRING_OPS, "state": _STRING_OPS, "map": _STRING_OPS,
    "int": _NUMBER_OPS, "time": _NUMBER_OPS, "end": _NUMBER_OPS,
    "span": ("=", "!=", "LIKE", "ILIKE", "RLIKE", "IN", "NOT IN"),
    "text": ("LIKE", "ILIKE"),
}
NUMERIC_KINDS = ("int", "time", "end")

# attribute name -> (column, kind, map key)
_ATTRIBUTES: dict[str, tuple[str, str, str | None]] = {
    "status": ("state", "state", None),
    "state": ("state", "state", None),
    "timestamp_ms": ("request_time", "time", None),
    "timestamp": ("request_time", "time", None),
    "execution_time_ms": ("execution_duration_ms", "int", None),
    "execution_time": ("execution_duration_ms", "int", None),
    "execution_duration_ms": ("execution_duration_ms", "int", None),
    "end_time_ms": ("end_time", "end", None),
    "end_time": ("end_time", "end", None),
    "status_code": ("status_code", "int", None),
    "client_request_id": ("client_request_id", "str", None),
    "trace_id": ("trace_id", "str", None),
    "request_id": ("trace_id", "str", None),
    "session_id": ("session_id", "str", None),
    "user_id": ("user_id", "str", None),
    "name": ("tags", "map", "mlflow.traceName"),
    "trace_name": ("tags", "map", "mlflow.traceName"),
    "run_id": ("request_metadata", "map", "mlflow.sourceRun"),
    "prompt": ("tags", "map", "mlflow.linkedPrompts"),
    "text": ("trace", "text", None),
}
_ATTRIBUTE_PREFIXES = {"attribute", "attributes", "trace"}
_MAP_PREFIXES = {"metadata": "request_metadata", "request_metadata": "request_metadata",
                 "tags": "tags", "tag": "tags"}
_SPAN_FIELDS = {"name": "span", "type": "span", "status": "span", "content": "text"}

_QUOTED_KEY = r"""`[^`]*`|"(?:[^"]|"")*\""""
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<ident>(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)\.(?:{_QUOTED_KEY}|[A-Za-z_][A-Za-z0-9_.\-]*)
      | `[^`]+` | [A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'(?:[^']|'')*')
  | (?P<dstring>"(?:[^"]|"")*")
  | (?P<unclosed>'[^']*$|"[^"]*$)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|>=|<=|<>|=|>|<)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
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
    key: str | None = None  # map key for metadata./tags., span property for span.
    pos: int = 0  # where the clause starts in the filter text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == "`":
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def like_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """SQL ``LIKE``: ``%`` any run, ``_`` one character, the whole value."""
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(op: str, lhs: Any, value: Any) -> bool:
    """``lhs op value`` for one non-null string ``lhs``, as the scan evaluates it."""
    if op == "=":
        return bool(lhs == value)
    if op == "!=":
        return bool(lhs != value)
    if op == "IN":
        return lhs in value
    if op == "NOT IN":
        return lhs not in value
    if op in ("LIKE", "ILIKE"):
        return like_regex(value, op == "ILIKE").fullmatch(lhs) is not None
    if op == "RLIKE":
        return re.search(value, lhs) is not None
    raise ValueError(f"not a string comparison: {op}")


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
                                        f"expected AND between clauses, got {cut(token.value)!r}")
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

    def field(self) -> tuple[Clause, _Token]:
        token = self._next("a field")
        if token.kind not in ("ident", "dstring"):
            raise SearchFilterError(self.text, token.pos, f"expected a field, got {cut(token.value)!r}")
        name = token.value
        self._check_text(name, token)
        if token.kind == "dstring":
            prefix, key = "", _unquote(name)
        elif "." in name:
            prefix, _, key = name.partition(".")
            prefix, key = _unquote(prefix).lower(), _unquote(key)
        else:
            prefix, key = "", _unquote(name)
        if prefix in _MAP_PREFIXES:
            if not key:
                raise SearchFilterError(self.text, token.pos, f"{name} needs a key")
            return Clause(name, _MAP_PREFIXES[prefix], "map", "", key=key), token
        if prefix == "span":
            kind = _SPAN_FIELDS.get(key.lower())
            if kind is None:
                raise SearchFilterError(self.text, token.pos, f"unknown span field {cut(key)!r}; "
                                        f"known: {', '.join(sorted(_SPAN_FIELDS))}")
            return Clause(name, "trace", kind, "", key=key.lower()), token
        if (prefix in _ATTRIBUTE_PREFIXES or not prefix) and key.lower() in _ATTRIBUTES:
            column, kind, map_key = _ATTRIBUTES[key.lower()]
            return Clause(name, column, kind, "", key=map_key), token
        known = sorted({*_ATTRIBUTES, "tags.<key>", "metadata.<key>", "span.name", "span.type"})
        raise SearchFilterError(self.text, token.pos,
                                f"unknown field {cut(name)!r}; known fields: {', '.join(known)}")

    def _literal(self, clause: Clause) -> Any:
        token = self._next("a value")
        if token.kind in ("string", "dstring"):
            quote = token.value[0]
            value: Any = token.value[1:-1].replace(quote * 2, quote)
            self._check_text(value, token)
        elif token.kind == "number":
            value = float(token.value) if "." in token.value else int(token.value)
            if isinstance(value, float) and not math.isfinite(value):
                raise SearchFilterError(self.text, token.pos, f"number out of range: {cut(token.value)}")
        else:
            raise SearchFilterError(self.text, token.pos,
                                    f"expected a quoted string or a number, got {cut(token.value)!r}")
        if clause.kind in NUMERIC_KINDS and not isinstance(value, (int, float)):
            raise SearchFilterError(self.text, token.pos, f"{clause.field} takes a number")
        if clause.kind not in NUMERIC_KINDS and not isinstance(value, str):
            raise SearchFilterError(self.text, token.pos, f"{clause.field} takes a quoted string")
        if clause.kind == "int":
            low, high = _INT_RANGES[clause.column]
            if not low <= value <= high:
                raise SearchFilterError(self.text, token.pos,
                                        f"{clause.field} takes a number from {low} to {high}")
        if clause.kind in ("time", "end"):
            try:
                to_timestamp(value)
            except (OverflowError, OSError, ValueError):
                raise SearchFilterError(
                    self.text, token.pos,
                    f"{clause.field} out of range: milliseconds since 1970 for a date in years 1-9999",
                ) from None
        return value

    def _operator(self, clause: Clause) -> _Token:
        token = self._next("an operator")
        word = token.value.upper()
        if token.kind == "op":
            clause.op = "!=" if token.value == "<>" else token.value
        elif token.kind == "ident" and word in ("LIKE", "ILIKE", "RLIKE", "IN"):
            clause.op = word
        elif token.kind == "ident" and word == "NOT":
            nxt = self._next("IN")
            if nxt.value.upper() != "IN":
                raise SearchFilterError(self.text, nxt.pos, f"expected IN after NOT, got {cut(nxt.value)!r}")
            clause.op = "NOT IN"
        elif token.kind == "ident" and word == "IS":
            nxt = self._next("NULL")
            negate = nxt.value.upper() == "NOT"
            if negate:
                nxt = self._next("NULL")
            if nxt.value.upper() != "NULL":
                raise SearchFilterError(self.text, nxt.pos, f"expected NULL, got {cut(nxt.value)!r}")
            clause.op = "IS NOT NULL" if negate else "IS NULL"
        else:
            raise SearchFilterError(
                self.text, token.pos,
                f"unknown operator {cut(token.value)!r}; use = != > >= < <= LIKE ILIKE RLIKE IN NOT IN "
                "IS NULL IS NOT NULL",
            )
        if clause.op not in OPERATORS[clause.kind]:
            raise SearchFilterError(self.text, token.pos, f"{clause.field} compares with "
                                    f"{' '.join(OPERATORS[clause.kind])}, not {clause.op}")
        return token

    def _clause(self) -> Clause:
        clause, start = self.field()
        clause.pos = start.pos
        token = self._operator(clause)
        if clause.op in ("IS NULL", "IS NOT NULL"):
            return clause
        if clause.op in ("IN", "NOT IN"):
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
        value_at = self._peek()
        clause.value = self._literal(clause)
        if clause.op == "RLIKE":
            try:
                re.compile(clause.value)
            except (re.error, RecursionError, OverflowError) as exc:
                pos = value_at.pos if value_at is not None else token.pos
                raise SearchFilterError(self.text, pos, f"not a regular expression ({exc})") from None
        return clause


def cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def parse_filter(filter_string: str | None) -> list[Clause]:
    if filter_string is None or not filter_string.strip():
        return []
    return _Parser(filter_string).parse()


def parse_order_field(item: str) -> tuple[Clause, bool]:
    """One ``order_by`` entry (``"<field> [ASC|DESC]"``) as a clause (no operator) and ascending."""
    parser = _Parser(item)
    if not parser.tokens:
        raise SearchFilterError(item, 0, "empty order_by entry")
    clause, _ = parser.field()
    ascending = True
    direction = parser._peek()
    if direction is not None:
        parser.i += 1
        if direction.kind != "ident" or direction.value.upper() not in ("ASC", "DESC"):
            raise SearchFilterError(item, direction.pos,
                                    f"expected ASC or DESC, got {cut(direction.value)!r}")
        ascending = direction.value.upper() == "ASC"
    extra = parser._peek()
    if extra is not None:
        raise SearchFilterError(item, extra.pos, f"expected the end of the order_by entry, got "
                                f"{cut(extra.value)!r}")
    if clause.kind in ("span", "text"):
        raise SearchFilterError(item, 0, f"cannot order by {clause.field!r}: it is not one value per trace")
    return clause, ascending
