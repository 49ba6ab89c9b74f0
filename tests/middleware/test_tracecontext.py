"""W3C trace context, checked case by case against the spec and differentially against
OpenTelemetry's ``TraceContextTextMapPropagator`` / ``TraceState`` on generated headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from middleware._tracecontext import MAX_TRACESTATE_CHARS, parse_traceparent, parse_tracestate

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def otel_state(lines: list[str]) -> str | None:
    state = TraceState.from_header(lines)
    return state.to_header() or None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["foo=1,bar=2"], "foo=1,bar=2"),
        (["foo=1 ,\tbar=2"], "foo=1,bar=2"),
        (["foo=1", "bar=2"], "foo=1,bar=2"),
        (["foo=1,,bar=2, "], "foo=1,bar=2"),
        (["foo=a b"], "foo=a b"),
        (["k" * 256 + "=v"], "k" * 256 + "=v"),
        (["tenant@vendor=v"], "tenant@vendor=v"),
        (["FOO=1"], None),
        (["foo=bar=baz"], None),
        (["@foo=1"], None),
        (["foo=1,foo=2"], None),
        ([",".join(f"k{i}=v" for i in range(33))], None),
        ([",".join(f"k{i}=v" for i in range(32))], ",".join(f"k{i}=v" for i in range(32))),
        (["foo=a\tb"], None),
        (["foo=trailing "], "foo=trailing"),  # the OWS before a comma/end is not the value's
        (["k" * 257 + "=v"], None),
        (["foo="], None),
    ],
    ids=["two", "ows-tabs", "two-lines", "empty-members", "inner-space", "256-char-key",
         "multi-tenant", "upper-key", "two-equals", "at-first", "duplicate", "33-members",
         "32-members", "tab-in-value", "trailing-space", "257-char-key", "empty-value"],
)
def test_tracestate_cases(lines: list[str], expected: str | None) -> None:
    assert parse_tracestate([line.encode() for line in lines]) == expected


def test_long_tracestate_is_cut_on_member_boundaries_large_members_first() -> None:
    big = "big=" + "x" * 200
    small = [f"k{i}=" + "v" * 20 for i in range(22)]
    result = parse_tracestate([",".join([small[0], big, *small[1:]]).encode()])
    assert result is not None and len(result) <= MAX_TRACESTATE_CHARS
    members = result.split(",")
    assert big not in members  # the large member went first
    assert members == small[: len(members)]  # whole members, in order, from the front
    assert all(m in small for m in members)


_key_chars = st.sampled_from("abcz09_-*/@AZ=, \t")
_value_chars = st.sampled_from("abc XYZ09!~=,\t;")
_member = st.builds(
    lambda k, v: f"{k}={v}", st.text(_key_chars, min_size=0, max_size=6), st.text(_value_chars, max_size=6)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_member, max_size=5).map(",".join), min_size=1, max_size=3))
def test_tracestate_matches_opentelemetry(lines: list[str]) -> None:
    ours = parse_tracestate([line.encode() for line in lines])
    theirs = otel_state(lines)
    assert ours == theirs


_hex = st.text("0123456789abcdef", min_size=0, max_size=34)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.builds(lambda v, t, p, f, rest: f"{v}-{t}-{p}-{f}{rest}",
                  st.sampled_from(["00", "01", "ff", "0g", "0"]),
                  st.one_of(_hex, st.just("0" * 32), st.just("0af7651916cd43dd8448eb211c80319c")),
                  st.one_of(_hex, st.just("0" * 16), st.just("b7ad6b7169203331")),
                  st.sampled_from(["01", "00", "1", "zz"]),
                  st.sampled_from(["", "-", "-x", "x", " ", "\t"])),
        st.text(max_size=60),
    )
)
def test_traceparent_matches_opentelemetry(header: str) -> None:
    ctx = TraceContextTextMapPropagator().extract({"traceparent": header})
    from opentelemetry import trace

    span_context = trace.get_current_span(ctx).get_span_context()
    theirs = (
        (format(span_context.trace_id, "032x"), format(span_context.span_id, "016x"),
         format(span_context.trace_flags, "02x"))
        if span_context.is_valid else None
    )
    ours = parse_traceparent(header)
    # OTel keeps only the sampled bit of the flags; compare ids and that bit.
    if ours is not None:
        ours = (ours[0], ours[1], format(int(ours[2], 16) & 1, "02x"))
    assert ours == theirs, header
