"""What the viewer's JSON API returns, computed from ``Trace`` objects (no web framework here).

A list row is a trace summary; a trace view is its spans in tree order (depth, offsets from the
trace start) with the critical path; a comparison aligns two traces' spans by name path.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import orjson

from tracewire.model import Span, Trace

PREVIEW_CHARS = 300


def _preview(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _root(trace: Trace) -> Span | None:
    ids = {s.span_id for s in trace.data.spans}
    roots = [s for s in trace.data.spans if s.parent_id is None or s.parent_id not in ids]
    return min(roots, key=lambda s: s.start_time_ns) if roots else None


def _total_tokens(trace: Trace) -> int | None:
    usage = trace.info.token_usage
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    parts = [v for k, v in usage.items() if k in ("input_tokens", "output_tokens") and isinstance(v, int)]
    return sum(parts) if parts else None


def summary(trace: Trace) -> dict[str, Any]:
    """One list row: the columns of the trace list page."""
    info = trace.info
    root = _root(trace)
    status = root.get_attribute("http.status_code") if root is not None else None
    return {
        "trace_id": info.trace_id,
        "time_ms": info.request_time,
        "name": info.tags.get("mlflow.traceName") or (root.name if root is not None else None),
        "state": info.state,
        "status_code": status if isinstance(status, int) else None,
        "duration_ms": info.execution_duration_ms,
        "session_id": info.session_id,
        "user_id": info.user_id,
        "client_request_id": info.client_request_id,
        "tokens": _total_tokens(trace),
        "request_preview": _preview(info.request_preview),
        "response_preview": _preview(info.response_preview),
        "truncated": info.trace_metadata.get("tracewire.truncated") == "true",
    }


def _children(trace: Trace) -> tuple[list[Span], dict[str, list[Span]]]:
    ids = {s.span_id for s in trace.data.spans}
    roots: list[Span] = []
    children: dict[str, list[Span]] = {}
    for span in sorted(trace.data.spans, key=lambda s: (s.start_time_ns, s.span_id)):
        if span.parent_id is None or span.parent_id not in ids:
            roots.append(span)
        else:
            children.setdefault(span.parent_id, []).append(span)
    return roots, children


def _tree_order(trace: Trace) -> list[tuple[Span, int, str]]:
    """Spans depth-first (children by start time) with their depth and name path."""
    roots, children = _children(trace)
    out: list[tuple[Span, int, str]] = []
    seen: dict[str, int] = {}

    def path_of(parent_path: str, span: Span) -> str:
        base = f"{parent_path}/{span.name}"
        count = seen.get(base, 0)
        seen[base] = count + 1
        return base if count == 0 else f"{base}[{count + 1}]"

    # Iterative DFS: a 20,000-deep chain must not hit the recursion limit.  Stored data may hold
    # duplicate span ids or parent cycles: every span is visited once, unreached ones become roots.
    visited: set[int] = set()
    pending = list(roots) + [s for s in trace.data.spans if s not in roots]
    for start in pending:
        if id(start) in visited:
            continue
        stack = [(start, 0, path_of("", start))]
        while stack:
            span, depth, path = stack.pop()
            if id(span) in visited:
                continue
            visited.add(id(span))
            out.append((span, depth, path))
            kids = [(kid, depth + 1, path_of(path, kid)) for kid in children.get(span.span_id, [])
                    if id(kid) not in visited]
            stack.extend(reversed(kids))
    return out


def _end(span: Span) -> int:
    return span.end_time_ns if span.end_time_ns is not None else span.start_time_ns


def critical_path(trace: Trace) -> list[str]:
    """Span ids (by start time) on the chain of work that decided when the trace ended.

    From the root, repeatedly take the child that finished last before the current point in
    time, then move the point to that child's start (Jaeger's definition); a child's own
    critical path is followed the same way.
    """
    roots, children = _children(trace)
    if not roots:
        return []
    out: list[Span] = []
    visited: set[int] = set()
    work = [max(roots, key=_end)]
    while work:
        span = work.pop()
        if id(span) in visited:
            continue
        visited.add(id(span))
        out.append(span)
        point = _end(span)
        chosen: list[Span] = []
        for kid in sorted(children.get(span.span_id, []), key=_end, reverse=True):
            if _end(kid) <= point and _end(kid) >= span.start_time_ns:
                chosen.append(kid)
                point = kid.start_time_ns
        work.extend(chosen)
    return [span.span_id for span in sorted(out, key=lambda s: s.start_time_ns)]


def _event(event: Any) -> dict[str, Any]:
    return {"name": event.name, "time_ns": event.timestamp_ns, "attributes": event.attributes}


def span_detail(span: Span) -> dict[str, Any]:
    """A span's inputs, outputs, other attributes and events, decoded."""
    attributes = span.attributes  # decoded once; inputs and outputs come out of it
    for key in ("mlflow.traceRequestId", "mlflow.spanType"):
        attributes.pop(key, None)
    return {
        "inputs": attributes.pop("mlflow.spanInputs", None),
        "outputs": attributes.pop("mlflow.spanOutputs", None),
        "attributes": attributes,
        "events": [_event(e) for e in span.events] if span.events else [],
    }


def find_span(trace: Trace, span_id: str) -> Span | None:
    return next((s for s in trace.data.spans if s.span_id == span_id), None)


def trace_view(trace: Trace, details: bool = True) -> dict[str, Any]:
    """The trace page's data: summary, info, spans in tree order, critical path, marks.

    ``details=False`` leaves out each span's name path, inputs/outputs/attributes/events (the
    page fetches the selected span's alone): a 20,000-span trace then decodes and ships less.
    """
    order = _tree_order(trace)
    start = min((s.start_time_ns for s in trace.data.spans), default=0)
    end = max((_end(s) for s in trace.data.spans), default=start)
    spans = []
    for span, depth, path in order:
        row = {
            "span_id": span.span_id,
            "parent_id": span.parent_id,
            "name": span.name,
            "depth": depth,
            "type": span.span_type,
            "status": span.status_code,
            "status_message": span.status_message,
            "start_ms": (span.start_time_ns - start) / 1e6,
            "duration_ms": span.duration_ms,
        }
        if details:
            row["path"] = path
            row.update(span_detail(span))
        spans.append(row)
    root = _root(trace)
    marks: dict[str, Any] = {}
    if root is not None:
        ttfb = root.get_attribute("tracewire.ttfb_ms")
        if isinstance(ttfb, (int, float)):
            marks["ttfb_ms"] = (root.start_time_ns - start) / 1e6 + ttfb
        if root.get_attribute("tracewire.client_disconnected") is True:
            marks["disconnect_ms"] = (_end(root) - start) / 1e6
    return {
        "summary": summary(trace),
        "info": trace.info.to_dict(),
        "total_ms": (end - start) / 1e6,
        "spans": spans,
        "critical_path": critical_path(trace),
        "marks": marks,
    }


def session_view(session_id: str, traces: Sequence[Trace]) -> dict[str, Any]:
    """A session's traces oldest first, with totals."""
    rows = sorted((summary(t) for t in traces), key=lambda r: r["time_ms"])  # stable: keeps sub-ms order
    return {
        "session_id": session_id,
        "traces": rows,
        "totals": {
            "traces": len(rows),
            "tokens": sum(r["tokens"] or 0 for r in rows),
            "duration_ms": sum(r["duration_ms"] or 0 for r in rows),
            "errors": sum(1 for r in rows if r["state"] == "ERROR"),
        },
    }


def _compare_side(span: Span) -> dict[str, Any]:
    return {"span_id": span.span_id, "duration_ms": span.duration_ms, "status": span.status_code,
            "outputs": span.outputs}


def compare_view(a: Trace, b: Trace) -> dict[str, Any]:
    """Both traces' spans aligned by name path (``/root/child[2]``), in the first trace's order."""
    left = {path: span for span, _, path in _tree_order(a)}
    right = {path: span for span, _, path in _tree_order(b)}
    depth = {path: d for _, d, path in _tree_order(a)} | {path: d for _, d, path in _tree_order(b)}
    paths = list(left) + [p for p in right if p not in left]
    rows = []
    for path in paths:
        sa, sb = left.get(path), right.get(path)
        row: dict[str, Any] = {
            "path": path, "depth": depth[path],
            "name": (sa or sb).name if (sa or sb) is not None else path,  # type: ignore[union-attr]
            "a": _compare_side(sa) if sa is not None else None,
            "b": _compare_side(sb) if sb is not None else None,
            "duration_delta_ms": None, "outputs_equal": None,
        }
        if sa is not None and sb is not None:
            if sa.duration_ms is not None and sb.duration_ms is not None:
                row["duration_delta_ms"] = sb.duration_ms - sa.duration_ms
            row["outputs_equal"] = sa.raw_attribute("mlflow.spanOutputs") == sb.raw_attribute(
                "mlflow.spanOutputs")
        rows.append(row)
    return {"a": summary(a), "b": summary(b), "rows": rows}


# -- paging cursors: keyset pages expressed as filter clauses -----------------------------------

def encode_cursor(key: float, ids: Sequence[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"k": key, "ids": list(ids)})).decode()


def decode_cursor(cursor: str) -> tuple[float, list[str]]:
    """``(sort key of the last row, ids of the rows shown with that key)``; ValueError if bad."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        key, ids = data["k"], data["ids"]
    except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError("bad page cursor") from exc
    if not isinstance(key, (int, float)) or not isinstance(ids, list) or not all(
            isinstance(i, str) and i.startswith("tr-") and len(i) < 80 for i in ids):
        raise ValueError("bad page cursor")
    return float(key), ids
