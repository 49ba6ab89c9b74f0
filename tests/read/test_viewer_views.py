"""The viewer's pure view functions on hand-built traces: critical path, tree order, compare."""

from __future__ import annotations

import pytest

from tracewire.model import Span, Trace, TraceData, TraceInfo
from tracewire.read.viewer import views

MS = 1_000_000


def make_trace(spans: list[tuple[str, str | None, str, int, int]], trace_id: str = "tr-" + "1" * 32) -> Trace:
    """``(span_id, parent_id, name, start_ms, end_ms)`` rows -> a finished Trace."""
    out = []
    for span_id, parent, name, start, end in spans:
        span = Span(trace_id, span_id.ljust(16, "0"), parent.ljust(16, "0") if parent else None, name,
                    start * MS)
        span.end_time_ns = end * MS
        span.status_code = "OK"
        out.append(span)
    return Trace(TraceInfo(trace_id=trace_id, request_time=0, execution_duration_ms=100), TraceData(out))


def ids(*names: str) -> list[str]:
    return [n.ljust(16, "0") for n in names]


def test_critical_path_skips_work_that_overlapped_a_later_finisher() -> None:
    # root [0,100]: a [0,60] overlaps b [10,90], which finishes last; c [0,5] ends before b starts.
    # Inside b: d [20,85] finishes last; e [12,30] overlaps it; g [10,19] ends before d starts.
    trace = make_trace([("f", None, "root", 0, 100), ("a", "f", "a", 0, 60), ("b", "f", "b", 10, 90),
                        ("c", "f", "c", 0, 5), ("d", "b", "d", 20, 85), ("e", "b", "e", 12, 30),
                        ("9", "b", "g", 10, 19)])
    assert views.critical_path(trace) == ids("f", "c", "b", "9", "d")


def test_critical_path_of_parallel_children_is_the_slowest() -> None:
    trace = make_trace([("f", None, "root", 0, 50), ("a", "f", "x", 1, 40), ("b", "f", "x", 1, 49)])
    assert views.critical_path(trace) == ids("f", "b")


def test_tree_order_deep_chain_does_not_recurse() -> None:
    n = 5000
    rows: list[tuple[str, str | None, str, int, int]] = [("1", None, "s0", 0, 2 * n)]
    rows += [(f"{i + 1:016x}", f"{i:016x}" if i > 1 else "1", f"s{i}", i, 2 * n - i) for i in range(1, n)]
    view = views.trace_view(make_trace(rows))
    assert [s["depth"] for s in view["spans"]] == list(range(n))
    assert len(view["critical_path"]) == n


def test_duplicate_ids_and_parent_cycles_still_show_every_span_once() -> None:
    trace = make_trace([("f", None, "root", 0, 10), ("a", "b", "x", 1, 3), ("b", "a", "y", 2, 4),
                        ("c", "c", "self", 3, 4), ("d", "f", "dup", 4, 5), ("d", "f", "dup", 5, 6)])
    view = views.trace_view(trace)
    assert sorted(s["name"] for s in view["spans"]) == ["dup", "dup", "root", "self", "x", "y"]
    assert view["critical_path"] == ids("f", "d", "d")  # both sequential duplicates, each once


@pytest.mark.parametrize("swap", [False, True], ids=["a-first", "b-first"])
def test_compare_numbers_repeated_names_and_keeps_one_sided_spans(swap: bool) -> None:
    a = make_trace([("f", None, "root", 0, 10), ("a", "f", "call", 1, 3), ("b", "f", "call", 4, 6)])
    b = make_trace([("f", None, "root", 0, 20), ("a", "f", "call", 1, 9), ("c", "f", "extra", 10, 12)],
                   trace_id="tr-" + "2" * 32)
    left, right = (b, a) if swap else (a, b)
    rows = {r["path"]: r for r in views.compare_view(left, right)["rows"]}
    assert set(rows) == {"/root", "/root/call", "/root/call[2]", "/root/extra"}
    delta = rows["/root/call"]["duration_delta_ms"]
    assert delta == pytest.approx(-6.0 if swap else 6.0)
    assert (rows["/root/call[2]"]["b" if swap else "a"]) is not None
    assert (rows["/root/call[2]"]["a" if swap else "b"]) is None


@pytest.mark.parametrize("cursor", ["", "%%%", "eyJrIjoiYSIsImlkcyI6W119", "eyJrIjoxLCJpZHMiOlsieCJdfQ=="],
                         ids=["empty", "not-base64", "key-not-number", "id-not-trace-id"])
def test_bad_cursor(cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        views.decode_cursor(cursor)


def test_cursor_round_trip() -> None:
    assert views.decode_cursor(views.encode_cursor(12.0, ["tr-ab"])) == (12.0, ["tr-ab"])
