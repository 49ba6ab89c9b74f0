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

from tracewire._encoding import PREVIEW_CHARS, truncation_marker

REDACTED = "[REDACTED]"
_MAX_DEPTH = 64


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
            return redactor.redact(orjson.loads(data))
        except orjson.JSONDecodeError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"tracewire.binary": True, "content_type": kind or None, "size": len(data)}
    if kind == "application/x-www-form-urlencoded":
        return redactor.redact(form_dict(text))
    if kind not in ("text/event-stream", "text/plain", "text/html") and text[:1] in ("{", "["):
        # JSON sent without (or with a generic) content type still gets its secrets redacted.
        try:
            return redactor.redact(orjson.loads(data))
        except orjson.JSONDecodeError:
            pass
    return text


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

    __slots__ = ("_fields", "_form_re", "_json_re")

    def __init__(self, fields: tuple[str, ...]) -> None:
        self._fields = tuple(f.lower() for f in fields if f)
        if self._fields:
            names = "|".join(re.escape(f) for f in self._fields)
            # Previews of truncated bodies are cut mid-structure, so they are redacted textually.
            self._json_re: re.Pattern[str] | None = re.compile(
                r'("[^"]*(?:%s)[^"]*"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]*)' % names, re.IGNORECASE
            )
            self._form_re: re.Pattern[str] | None = re.compile(
                r"((?:^|&)[^=&]*(?:%s)[^=&]*=)[^&]*" % names, re.IGNORECASE
            )
        else:
            self._json_re = self._form_re = None

    def is_secret(self, name: str) -> bool:
        lowered = name.lower()
        return any(f in lowered for f in self._fields)

    def redact(self, value: Any, depth: int = 0) -> Any:
        if not self._fields:
            return value
        if isinstance(value, dict):
            if depth >= _MAX_DEPTH:
                return "<max depth>"
            return {
                k: REDACTED if isinstance(k, str) and self.is_secret(k) else self.redact(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list):
            if depth >= _MAX_DEPTH:
                return "<max depth>"
            return [self.redact(v, depth + 1) for v in value]
        return value

    def redact_text(self, text: str) -> str:
        if self._json_re is None or self._form_re is None:
            return text
        text = self._json_re.sub(lambda m: m.group(1) + '"' + REDACTED + '"', text)
        return self._form_re.sub(lambda m: m.group(1) + REDACTED, text)
