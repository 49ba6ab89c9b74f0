"""Request/response body capture: teed as the app reads or sends it, capped, decoded, redacted.

A body is never read ahead of the app and never held twice beyond ``max_value_bytes``: past the
cap only the byte count grows, and the recorded value becomes a truncation marker with the
original size and a (redacted) preview.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from tracewire.encoding import dumps, truncation_marker
from tracewire.keys import PREVIEW_CHARS
from tracewire.redaction import REDACTED, Redactor

__all__ = ["REDACTED", "BodyCapture", "Redactor", "decode", "form_dict", "media_type", "preview"]

# A preview is built from at most this many bytes of the kept body: redacting shortens it, so
# more than PREVIEW_CHARS are read, but never the whole (possibly 256 KB) capture.
_PREVIEW_INPUT_BYTES = PREVIEW_CHARS * 8
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.I)
_DISPOSITION_PARAM = re.compile(
    r'(?:^|;)\s*(name|filename)(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"?|([^;]*))', re.I
)


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
            return truncation_marker(self.size, preview(data, content_type, redactor))
        return decode(data, content_type, redactor)


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _is_json(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def _looks_like_json(text: str) -> bool:
    return text.lstrip(" \t\r\n")[:1] in ("{", "[")


def decode(data: bytes, content_type: str, redactor: Redactor) -> Any:
    """The body as a value, redacted: JSON parsed, forms as dicts, text if UTF-8, else a marker.

    Whatever the declared type, a body that looks like JSON is redacted as JSON (browsers send
    JSON as ``text/plain`` to avoid a CORS preflight); JSON orjson rejects (a trailing comma,
    nesting past its limit) is redacted as text by a tolerant scanner, never stored verbatim.
    """
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        return multipart(data, content_type, redactor)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"tracewire.binary": True, "content_type": kind or None, "size": len(data)}
    if kind == "application/x-www-form-urlencoded":
        return redactor.redact(form_dict(text))
    if _is_json(kind) or _looks_like_json(text):
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return redactor.redact_json_text(text)
        return _as_json(data, value, redactor)
    return text


def preview(data: bytes, content_type: str, redactor: Redactor) -> str:
    """The preview of a body that was over the cap: redacted first, then cut."""
    head = data[:_PREVIEW_INPUT_BYTES]
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        text = dumps(multipart(head, content_type, redactor))
    else:
        text = head.decode("utf-8", "replace")
        if kind == "application/x-www-form-urlencoded":
            text = redactor.redact_form_text(text)
        elif _is_json(kind) or _looks_like_json(text):
            text = redactor.redact_json_text(text, PREVIEW_CHARS)
    return text[:PREVIEW_CHARS]


def multipart(data: bytes, content_type: str, redactor: Redactor) -> Any:
    """``multipart/form-data`` fields by name, redacted; files by name, type and size only.

    Tolerant of a body cut short (a capped body's preview); a body it cannot split into parts
    becomes a marker with its size, never the raw text.
    """
    match = _BOUNDARY.search(content_type)
    boundary = (match.group(1) or match.group(2)).encode("latin-1", "replace") if match else b""
    if not boundary:  # no (usable) boundary parameter: the body's first line names it
        first = data.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
        boundary = first[2:] if first.startswith(b"--") else b""
    parts = data.split(b"--" + boundary) if boundary else []
    if len(parts) < 2:
        return {"tracewire.unparsed": True, "content_type": "multipart/form-data", "size": len(data)}
    fields: dict[str, Any] = {}
    for raw in parts[1:]:
        if raw.startswith(b"--"):
            break  # the closing delimiter
        raw = raw[2:] if raw.startswith(b"\r\n") else raw[1:] if raw.startswith(b"\n") else raw
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = raw.partition(b"\n\n")
            if not sep:
                continue  # cut inside the part's headers: nothing of its value was kept
        if body.endswith(b"\r\n"):
            body = body[:-2]
        elif body.endswith(b"\n"):
            body = body[:-1]
        names, filename, part_type = _part_headers(head.decode("utf-8", "replace"))
        name = names[0] if names else ""
        value: Any
        if any(redactor.is_secret(n) for n in names):
            value = REDACTED
        elif filename is not None:
            value = {"filename": filename, "content_type": part_type or None, "size": len(body)}
        else:
            value = decode(body, part_type, redactor)
        if name in fields:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def _part_headers(head: str) -> tuple[list[str], str | None, str]:
    """(field names, file name, content type) from one part's headers."""
    names: list[str] = []
    filename: str | None = None
    part_type = ""
    for line in head.splitlines():
        header, _, rest = line.partition(":")
        header = header.strip().lower()
        if header == "content-type":
            part_type = rest.strip()
        elif header == "content-disposition":
            for param in _DISPOSITION_PARAM.finditer(rest):
                key, star, quoted, bare = param.groups()
                text = quoted.replace('\\"', '"') if quoted is not None else (bare or "").strip()
                if star:  # RFC 2231/5987: charset'lang'percent-encoded
                    text = unquote(text.split("'", 2)[-1])
                if key.lower() == "name":
                    names.append(text)
                else:
                    filename = text
    return names, filename, part_type


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
