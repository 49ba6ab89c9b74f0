"""W3C Trace Context (https://www.w3.org/TR/trace-context/): ``traceparent`` and ``tracestate``.

Both are parsed exactly per the spec and checked against OpenTelemetry's propagator in
``tests/middleware/test_tracecontext.py``.  Invalid input is ignored, never an error: an invalid
``traceparent`` starts a fresh trace, an invalid ``tracestate`` is discarded whole, and a
``tracestate`` counts only beside a valid ``traceparent``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_OWS = " \t"

# key = simple-key / multi-tenant-key; value = 0*255(chr) nblk-chr  (W3C §3.3.1)
_KEY = r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"(?:{_KEY})=(?:{_VALUE})")
MAX_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512  # what a vendor must propagate at least; cut on member boundaries
_LARGE_MEMBER = 128  # members longer than this go first when cutting (W3C §3.3.1.5)


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` from a ``traceparent`` value, or None when invalid."""
    value = value.strip(_OWS)
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":  # future versions may append fields after a dash
        return None
    return trace_id, parent_id, flags


def parse_tracestate(values: Sequence[bytes]) -> str | None:
    """The ``tracestate`` list (all header lines joined), normalized, or None when invalid.

    Members are ``key=value`` per the spec, optional spaces and tabs around commas, empty
    members allowed; a bad member, a repeated key or more than 32 members discard the whole
    list.  A list longer than 512 characters is cut on member boundaries: members over 128
    characters go first, then members from the end."""
    members: list[str] = []
    keys: set[str] = set()
    for raw in values:
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        for member in text.split(","):
            member = member.strip(_OWS)
            if not member:
                continue
            if _MEMBER.fullmatch(member) is None:
                return None
            key = member.partition("=")[0]
            if key in keys:
                return None
            keys.add(key)
            members.append(member)
            if len(members) > MAX_MEMBERS:
                return None
    if not members:
        return None
    if len(",".join(members)) > MAX_TRACESTATE_CHARS:
        members = _cut(members)
    return ",".join(members) or None


def _cut(members: list[str]) -> list[str]:
    kept = list(members)
    for member in sorted((m for m in members if len(m) > _LARGE_MEMBER), key=len, reverse=True):
        if len(",".join(kept)) <= MAX_TRACESTATE_CHARS:
            return kept
        kept.remove(member)
    while kept and len(",".join(kept)) > MAX_TRACESTATE_CHARS:
        kept.pop()
    return kept
