"""Request/response body capture: teed as the app reads or sends it, capped, decoded, redacted.

A body is never read ahead of the app and never held twice beyond ``max_value_bytes``: past the
cap only the byte count grows, and the recorded value becomes a truncation marker with the
original size and a (redacted) preview.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tracewire.encoding import PREVIEW_CHARS, truncation_marker

REDACTED = "[REDACTED]"
_MAX_DEPTH = 64
_MAX_KNOWN_NAMES = 4096


class BodyCapture:
    """Chunks of one body, kept up to ``cap`` bytes; ``size`` counts every byte seen."""

    __slots__ = ("cap", "chunks", "kept", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.size = 0

    def add(self, chunk: bytes) -> None:
        n = len(chunk)
        if not n:
            return
        self.size += n
        room = self.cap - self.kept
        if room > 0:
            piece = bytes(chunk) if n <= room else bytes(chunk[:room])
            self.chunks.append(piece)
            self.kept += len(piece)

    @property
    def truncated(self) -> bool:
        return self.size > self.cap

    def value(self, content_type: str, redactor: Redactor) -> Any:
        """The body as it should appear on the span (None when empty)."""
        if not self.size:
            return None
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        if self.truncated:
            preview = data[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
            return truncation_marker(self.size, redactor.redact_text(preview))
        return decode(data, content_type, redactor)


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def decode(data: bytes, content_type: str, redactor: Redactor) -> Any:
    """JSON parsed for JSON bodies, form bodies as a dict, text if UTF-8, else a size marker."""
    kind = media_type(content_type)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            return _as_json(data, value, redactor)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"tracewire.binary": True, "content_type": kind or None, "size": len(data)}
    if kind == "application/x-www-form-urlencoded":
        return redactor.redact(form_dict(text))
    if kind not in ("text/event-stream", "text/plain", "text/html") and text[:1] in ("{", "["):
        # JSON sent without (or with a generic) content type still gets its secrets redacted.
        try:
            return _as_json(data, orjson.loads(data), redactor)
        except orjson.JSONDecodeError:
            pass
    return text


def _as_json(data: bytes, value: Any, redactor: Redactor) -> Any:
    redacted = redactor.redact(value)
    # Nothing to redact: the body is already valid JSON text, so it is recorded as is (a
    # Fragment) instead of being encoded again.
    return orjson.Fragment(data) if redacted is value else redacted


def form_dict(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


class Redactor:
    """Replaces values of fields whose name contains a secret-like word (case-insensitive)."""

    __slots__ = ("_form_re", "_json_re", "_known", "_name_re")

    def __init__(self, fields: tuple[str, ...]) -> None:
        # "api_key" also matches "apikey", "api-key" and "API Key".
        words = "|".join(re.escape(f.lower()).replace("_", "[-_ ]?") for f in fields if f)
        # A secret word matches case-insensitively but must not run on into lower-case letters:
        # "access_token", "accessToken", "X-API-Key" are secrets; "max_tokens", "tokenizer",
        # "secretary" are not.
        names = f"(?i:{words})(?![a-z])" if words else ""
        self._name_re: re.Pattern[str] | None = None
        self._json_re: re.Pattern[str] | None = None
        self._form_re: re.Pattern[str] | None = None
        # Field names repeat from request to request (an API has a schema): remember the verdicts.
        self._known: dict[str, bool] = {}
        if names:
            self._name_re = re.compile(names)
            # Previews of truncated bodies are cut mid-structure, so they are redacted textually.
            self._json_re = re.compile(
                r'("[^"]*(?:%s)[^"]*"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]*)' % names
            )
            self._form_re = re.compile(r"((?:^|&)[^=&]*(?:%s)[^=&]*=)[^&]*" % names)

    def is_secret(self, name: str) -> bool:
        verdict = self._known.get(name)
        if verdict is None:
            verdict = self._name_re is not None and self._name_re.search(name) is not None
            if len(self._known) < _MAX_KNOWN_NAMES:
                self._known[name] = verdict
        return verdict

    def redact(self, value: Any, depth: int = 0) -> Any:
        """``value`` with secret-named fields replaced; the same object when nothing matched."""
        if self._name_re is None:
            return value
        if depth >= _MAX_DEPTH:
            return "<max depth>" if isinstance(value, (dict, list)) else value
        if isinstance(value, dict):
            known = self._known
            out: dict[Any, Any] | None = None
            for key, item in value.items():
                secret = known.get(key) if isinstance(key, str) else False
                if secret is None:
                    secret = self.is_secret(key)
                if secret:
                    new: Any = REDACTED
                elif isinstance(item, (dict, list)):
                    new = self.redact(item, depth + 1)
                else:
                    continue
                if new is not item:
                    if out is None:
                        out = dict(value)
                    out[key] = new
            return value if out is None else out
        if isinstance(value, list):
            changed = [self.redact(item, depth + 1) if isinstance(item, (dict, list)) else item
                       for item in value]
            return value if all(a is b for a, b in zip(changed, value, strict=True)) else changed
        return value

    def redact_text(self, text: str) -> str:
        if self._json_re is None or self._form_re is None:
            return text
        text = self._json_re.sub(lambda m: m.group(1) + '"' + REDACTED + '"', text)
        return self._form_re.sub(lambda m: m.group(1) + REDACTED, text)
