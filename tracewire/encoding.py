"""Turn any Python value into JSON text without ever raising.

Span inputs and outputs are captured at the moment they are set, so later mutation by user code
cannot change what was recorded, and so the request path pays for serialization once.  orjson
does the common case natively (dicts, lists, dataclasses, datetimes, UUIDs, enums, numpy);
``_default`` handles the rest readably; a sanitizing pass cuts cycles and oversized integers;
and as a last resort the value becomes its ``repr``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from tracewire.keys import PREVIEW_CHARS, TraceMetadataKey

logger = logging.getLogger(__name__)

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_MAX_DEPTH = 64
TRUNCATED_KEY = TraceMetadataKey.TRUNCATED  # the marker's flag has the trace flag's name


def _default(obj: Any) -> Any:
    """orjson's fallback for types it does not know."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"__bytes_base64__": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if isinstance(obj, BaseException):
        return {"type": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    model_dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(model_dump):
        return model_dump(mode="json")
    as_dict = getattr(obj, "dict", None)  # pydantic v1
    if callable(as_dict) and hasattr(obj, "__fields__"):
        return as_dict()
    tolist = getattr(obj, "tolist", None)  # numpy arrays/scalars that orjson declined
    if callable(tolist):
        return tolist()
    if hasattr(obj, "__dict__") and vars(obj):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")} or repr(obj)
    return repr(obj)


def clean_str(text: str) -> str:
    """``text`` itself when it is valid Unicode; else with its lone surrogates escaped.

    ``os.fsdecode`` and ``surrogateescape`` decoding smuggle undecodable bytes into ``str`` as
    lone surrogates, which UTF-8 (and so JSON) cannot carry: those bytes become ``\\xe9``
    escapes (other lone surrogates ``\\udXXX``), so the value is kept and stays readable.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _sanitize(value: Any, seen: set[int], depth: int) -> Any:
    """Plain-Python copy of ``value`` with cycles cut and exotic leaves made JSON-safe.

    A value whose conversion raises (a ``model_dump`` that fails, a mapping that cannot be
    iterated) becomes its ``repr`` on its own: its siblings keep their JSON.
    """
    try:
        return _sanitize_value(value, seen, depth)
    except Exception:
        return clean_str(_safe_repr(value))


def _sanitize_value(value: Any, seen: set[int], depth: int) -> Any:
    if isinstance(value, str):
        return clean_str(value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, enum.Enum):
        return _sanitize(value.value, seen, depth)
    if depth > _MAX_DEPTH:
        return "<max depth>"
    key = id(value)
    if key in seen:
        return "<cycle>"
    seen.add(key)
    try:
        if isinstance(value, Mapping):
            return {_key(k): _sanitize(v, seen, depth + 1) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            value = _default(value)
        if isinstance(value, (list, tuple)):
            return [_sanitize(v, seen, depth + 1) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
            return _sanitize(fields, seen, depth + 1)
        try:
            orjson.dumps(value, option=_OPTIONS)  # natively supported leaf (datetime, uuid, ...)
            return value
        except TypeError:
            pass
        converted = _default(value)
        if converted is value:
            return converted
        if isinstance(converted, str):
            return clean_str(converted)
        return _sanitize(converted, seen, depth + 1)
    finally:
        seen.discard(key)


def _key(key: Any) -> str:
    try:
        return clean_str(key if isinstance(key, str) else str(key))
    except Exception:
        return clean_str(_safe_repr(key))


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def dumps(value: Any) -> str:
    """JSON text for ``value``; never raises."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS).decode()
    except Exception:
        pass
    try:
        return orjson.dumps(_sanitize(value, set(), 0), default=_safe_repr, option=_OPTIONS).decode()
    except Exception:
        logger.debug("value of type %s is not JSON-encodable; using repr", type(value).__name__)
        return orjson.dumps(clean_str(_safe_repr(value))).decode()


def truncation_marker(original_size: int, preview: str) -> dict[str, Any]:
    """The value that stands in for a span input/output that was too large (SPEC §7)."""
    return {TRUNCATED_KEY: True, "original_size": original_size, "preview": preview}


def dumps_capped(value: Any, max_bytes: int) -> tuple[str, bool]:
    """JSON text for ``value``, replaced by a truncation marker beyond ``max_bytes``.

    Returns the text and whether it was truncated.  Huge strings and bytes are cut without
    encoding them first, so a 10 MB output costs a slice, not a full serialization.
    """
    if isinstance(value, (str, bytes, bytearray)) and len(value) > max_bytes:
        if isinstance(value, str):
            # isascii() is O(1) on CPython's compact strings: no 10 MB encode to learn the size.
            size = len(value) if value.isascii() else len(value.encode("utf-8", "replace"))
            preview = clean_str(value[:PREVIEW_CHARS])
        else:
            size, preview = len(value), bytes(value[:PREVIEW_CHARS]).decode("utf-8", "replace")
        return orjson.dumps(truncation_marker(size, preview)).decode(), True
    try:
        raw = orjson.dumps(value, default=_default, option=_OPTIONS)
    except Exception:
        text = dumps(value)
        raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return raw.decode(), False
    return marker_from_json(raw), True


def marker_from_json(raw: bytes) -> str:
    """The truncation marker for an encoded value, decoding only its preview."""
    preview = raw[: PREVIEW_CHARS * 4].decode("utf-8", "ignore")[:PREVIEW_CHARS]
    return orjson.dumps(truncation_marker(len(raw), preview)).decode()


def loads_or_text(text: str) -> Any:
    """An attribute's value from its JSON text (the text itself if it is not JSON)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
