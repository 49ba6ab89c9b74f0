"""The one redaction policy: values named like secrets never reach a trace.

Applied wherever a value is captured — span inputs/outputs (so decorated functions' arguments by
parameter name), trace metadata and tags, and, in the middleware, request/response bodies of
every content type and query strings.  A name is split into words (``_``, ``-``, spaces, dots and
camelCase boundaries: ``accessToken`` -> ``access`` ``token``); an entry of ``redact_fields``
matches a run of consecutive words that spells it (``api_key`` matches ``X-API-Key``, ``apiKey``,
``apikey``), with a plural ``s`` allowed on its last word (``secrets``, ``api_keys``).  An entry
starting with ``*`` must be the name's last word and takes no plural: ``*token`` redacts
``token``, ``access_token``, ``csrfToken`` but not ``token_delay_ms``, ``max_tokens`` or
``tokenizer``.  Free text (exception messages, log lines, prompts) is not scanned.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import orjson

from tracewire import encoding as _encoding
from tracewire.config import DEFAULT_REDACT_FIELDS

REDACTED = "[REDACTED]"
DEFAULT_FIELDS = DEFAULT_REDACT_FIELDS
# Deeper than the encoder's own cut (64) and shallower than orjson's recursion limit (254).
_MAX_DEPTH = 80
_LEAVES = frozenset({str, int, float, bool, type(None), bytes})
_MAX_KNOWN_NAMES = 4096
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_ENTRY_WORD = re.compile(r"[a-z0-9]+")
# A tolerant JSON tokenizer: strings (possibly cut short), punctuation, bare words, whitespace.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[{}\[\]:,]|[^\s{}\[\]:,"]+|\s+|.', re.S)
_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def words(name: str) -> list[str]:
    """The lower-case words of a field name: ``"X-API-Key"`` -> ``["x", "api", "key"]``."""
    return [w.lower() for w in _WORD.findall(name)]


class _TooDeep(Exception):
    pass


class Redactor:
    """Decides which names are secret and replaces their values with ``"[REDACTED]"``."""

    __slots__ = ("_known", "_rules", "fields")

    def __init__(self, fields: Iterable[str] = DEFAULT_FIELDS) -> None:
        self.fields = tuple(fields)
        rules: list[tuple[str, bool]] = []
        for entry in self.fields:
            entry = entry.strip().lower()
            suffix_only = entry.startswith("*")
            joined = "".join(_ENTRY_WORD.findall(entry))
            if joined:
                rules.append((joined, suffix_only))
        self._rules = tuple(rules)
        # Field names repeat from request to request (an API has a schema): remember verdicts.
        self._known: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def is_secret(self, name: Any) -> bool:
        if type(name) is not str:
            return False
        verdict = self._known.get(name)
        if verdict is None:
            verdict = self._match(name)
            if len(self._known) < _MAX_KNOWN_NAMES:
                self._known[name] = verdict
        return verdict

    def _match(self, name: str) -> bool:
        parts = words(name)
        last = len(parts) - 1
        for joined, suffix_only in self._rules:
            size = len(joined)
            for start in range(len(parts)):
                run = ""
                for end in range(start, len(parts)):
                    run += parts[end]
                    if suffix_only:
                        if run == joined and end == last:
                            return True
                    elif run == joined or run == joined + "s":
                        return True
                    if len(run) > size:
                        break
        return False

    # -- structured values -------------------------------------------------------------------
    def redact(self, value: Any) -> Any:
        """``value`` with secret-named fields replaced; the same object when nothing matched.

        Walks dicts (any Mapping), lists, tuples, dataclasses and pydantic models; a container
        that had something redacted comes back as a plain dict or list.  A value nested too
        deep (or a cycle) is first cut the way the JSON encoder cuts it, then redacted.
        """
        try:
            return self._walk(value, 0)
        except _TooDeep:
            return self._walk(_encoding._sanitize(value, set(), 0), 0)

    def _walk(self, value: Any, depth: int) -> Any:
        # On the request path (span inputs/outputs): one function with inline loops, since
        # Python calls, not the checks, are what a small dict costs.
        kind = type(value)
        if kind in _LEAVES or not self._rules:
            return value
        if depth >= _MAX_DEPTH:
            raise _TooDeep
        if kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
            known = self._known
            out: dict[Any, Any] | None = None
            for key, item in value.items():
                if known.get(key) is False:
                    if type(item) in _LEAVES:
                        continue
                    new: Any = self._walk(item, depth + 1)
                    if new is item:
                        continue
                elif self.is_secret(key):
                    new = REDACTED
                else:
                    new = self._walk(item, depth + 1)
                    if new is item:
                        continue
                if out is None:
                    out = dict(value)
                out[key] = new
            return value if out is None else out
        if kind is list or kind is tuple or isinstance(value, (list, tuple)):
            changed: list[Any] | None = None
            for i, item in enumerate(value):
                if type(item) in _LEAVES:
                    continue
                new = self._walk(item, depth + 1)
                if new is not item:
                    if changed is None:
                        changed = list(value)
                    changed[i] = new
            return value if changed is None else changed
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            names = [f.name for f in dataclasses.fields(value)]
            return self._redact_object(value, names, depth)
        fields = getattr(kind, "model_fields", None)  # pydantic v2 models
        if isinstance(fields, Mapping) and callable(getattr(value, "model_dump", None)):
            return self._redact_object(value, list(fields), depth)
        return value

    def _redact_object(self, value: Any, names: list[str], depth: int) -> Any:
        fields = {n: getattr(value, n, None) for n in names}
        redacted = self._walk(fields, depth)
        # Something inside was secret: the object becomes a dict of its (redacted) fields.
        return value if redacted is fields else redacted

    def redact_mapping_values(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """Metadata/tags: values under secret names replaced (values are already strings)."""
        return {k: (REDACTED if self.is_secret(k) else v) for k, v in mapping.items()}

    # -- text that could not be parsed whole -------------------------------------------------
    def redact_json_text(self, text: str, limit: int | None = None) -> str:
        """JSON-like text with secret-named values replaced, whatever its state.

        For bodies orjson rejects (trailing commas, nesting past its limit, single values cut
        mid-structure) and for previews of capped bodies: a string or bare word followed by
        ``:`` is a key (escapes decoded, so ``"pass\\u0077ord"`` is ``password``); the value
        after a secret key — a string, a literal, or a whole ``[...]``/``{...}`` — becomes
        ``"[REDACTED]"``, even when the text ends inside it.  With ``limit``, scanning stops
        once that many characters are produced (the output is redacted before it is cut).
        """
        if not self._rules:
            return text if limit is None else text[:limit]
        out: list[str] = []
        size = 0
        last_key: str | None = None  # the last significant token, when it could be a key
        skipping = 0  # > 0: inside the container of a redacted value (bracket depth)
        await_value = False  # a secret key and its ':' were emitted; the value comes next
        for match in _TOKEN.finditer(text):
            token = match.group()
            first = token[0]
            if skipping:
                if first in "{[":
                    skipping += 1
                elif first in "}]":
                    skipping -= 1
                continue
            if first.isspace():
                if await_value:
                    continue
                out.append(token)
                size += len(token)
                continue
            if await_value:
                await_value = False
                if first in "{[":
                    skipping = 1
                    continue
                if first not in ",}]:":
                    continue  # a string or literal value: already replaced
            if first == ":" and last_key is not None and self.is_secret(last_key):
                piece = ': "' + REDACTED + '"'
                await_value = True
            else:
                piece = token
            if first == '"':
                last_key = _json_string(token)
            elif first not in "{}[]:,":
                last_key = token
            else:
                last_key = None
            out.append(piece)
            size += len(piece)
            if limit is not None and size >= limit:
                break
        result = "".join(out)
        return result if limit is None else result[:limit]

    def redact_form_text(self, text: str) -> str:
        """An urlencoded form (possibly cut short) with secret-named values replaced."""
        out = []
        for field in text.split("&"):
            name, eq, _ = field.partition("=")
            out.append(name + eq + REDACTED if eq and self.is_secret(unquote_plus(name)) else field)
        return "&".join(out)


def _json_string(token: str) -> str:
    """The text of a JSON string token (possibly unterminated or with invalid escapes)."""
    if len(token) >= 2 and token.endswith('"'):
        try:
            value = orjson.loads(token)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(value, str):
                return value
        body = token[1:-1]
    else:
        body = token[1:]
    return _UNICODE_ESCAPE.sub(_unescape, body)


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code is not None:
        return chr(int(code, 16))
    char = match.group(2)
    return _SIMPLE_ESCAPES.get(char, char)


_policy = Redactor()
# Every JSON string token, whole (so the scan never restarts inside one: linear time whatever
# the escapes), and whether a colon follows it (then it is a key).
_JSON_STRING = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"(\s*:)?')


def use(fields: Iterable[str]) -> None:
    """Set the process's policy (``tracewire.runtime`` does, from ``TRACING_REDACT_FIELDS``)."""
    global _policy
    if tuple(fields) != _policy.fields:
        _policy = Redactor(fields)


def policy() -> Redactor:
    """The process's policy, from the ``redact_fields`` setting (``TRACING_REDACT_FIELDS``)."""
    return _policy


def redact(value: Any) -> Any:
    """``value`` under the process's policy (the same object when nothing is secret)."""
    if type(value) in _LEAVES:
        return value
    current = _policy
    try:
        return current._walk(value, 0)
    except _TooDeep:
        return current.redact(value)


def redact_json(text: str) -> str:
    """JSON text (a captured span input/output) with secret-named values replaced.

    Runs on the export worker.  Most values name no secret: their keys are found with one regex
    pass and looked up in the policy's verdict cache, and the text comes back unchanged.  Only a
    value with a secret name is parsed, walked and encoded again."""
    current = _policy
    if not current._rules or ('":' not in text and '" :' not in text):
        return text
    is_secret = current.is_secret
    for key, colon in _JSON_STRING.findall(text):
        if not colon:
            continue
        if "\\" in key:
            key = _json_string('"' + key + '"')
        if is_secret(key):
            break
    else:
        return text
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return current.redact_json_text(text)
    return _encoding.dumps(current.redact(value))
