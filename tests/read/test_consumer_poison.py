"""Malformed messages never stop a partition (issue 10, item 2).

Valid traces are corrupted field by field (types, ranges, nulls, sizes).  Unit level: every
corruption either becomes a row that is valid in every column or a ``PoisonMessage``.  Real
topic: ``consume`` never crashes and every record lands exactly once, in the table or in the
dead-letter table.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kafka_broker import Broker, unique_topic
from tests.read.test_consumer import make_payloads, produce
from tracewire.read.consumer import PoisonMessage, TraceConsumer, record_from_message

pytest.importorskip("aiokafka")
deltalake = pytest.importorskip("deltalake")

from tracewire.export.table import records_to_table  # noqa: E402

_BASE: list[dict[str, Any]] = []


def base_traces() -> list[dict[str, Any]]:
    if not _BASE:
        _BASE.extend(json.loads(p) for p in make_payloads(40, prefix="poison"))
    return _BASE


# Where a corruption goes: a path into the trace dict ("*root*" = the root span).
FIELDS = [
    ("info", "tags"), ("info", "client_request_id"), ("data",), ("data", "spans"),
    ("*root*", "attributes"), ("info", "request_time"), ("info", "execution_duration_ms"),
    ("info", "trace_metadata", "tracewire.sampling_fraction"),
    ("info", "trace_metadata", "mlflow.trace.session"),
    ("info", "trace_metadata", "mlflow.trace.user"), ("info", "trace_metadata"), ("info", "state"),
    ("info", "trace_id"), ("info",), ("*root*", "attributes", "http.status_code"),
    ("*root*", "attributes", "mlflow.spanInputs"), ("*root*", "attributes", "mlflow.spanOutputs"),
    ("info", "tags", "mlflow.traceName"), ("info", "trace_metadata", "tracewire.logging_error_codes"),
    ("info", "trace_metadata", "mlflow.trace_schema.version"), ("*root*", "parent_span_id"), ("*root*",),
]
DELETE = object()
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([10**17, -(10**17), 2**31, 2**63, -1, 0, 10**29 + 7]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["", "NaN", "-1", "1e400", "0.0", "2.5", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
                     "1970-01-01T00:00:00Z", "99999", "x" * 5000]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
corruption = st.tuples(st.sampled_from(FIELDS), st.one_of(st.just(DELETE), json_values))


def corrupt(trace: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]], serial: int) -> bytes:
    trace = json.loads(json.dumps(trace))
    for path, value in changes:
        node: Any = trace
        keys = list(path)
        if keys[0] == "*root*":
            spans = trace.get("data", {}).get("spans") if isinstance(trace.get("data"), dict) else None
            if not isinstance(spans, list) or not spans or not isinstance(spans[0], dict):
                continue
            if len(keys) == 1:
                spans[0] = None if value is DELETE else value
                continue
            node, keys = spans[0], keys[1:]
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    trace["serial"] = serial  # every message distinct, whatever the corruption
    return json.dumps(trace).encode()


def assert_valid_or_poison(value: bytes) -> bool:
    """True when it became a row (and that row is valid in every column)."""
    try:
        record = record_from_message(value)
    except PoisonMessage as exc:
        assert str(exc)
        return False
    table = records_to_table([record])
    assert table.num_rows == 1
    row = table.to_pylist()[0]
    assert row["request_time"] is not None and row["trace_id"].startswith("tr-")
    assert 0 < row["sampling_fraction"] <= 1
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, 39), changes=st.lists(corruption, min_size=1, max_size=3))
def test_every_corruption_is_a_valid_row_or_a_poison_message(index: int, changes: list[Any]) -> None:
    assert_valid_or_poison(corrupt(base_traces()[index], changes, index))


@pytest.mark.parametrize(("path", "value"), [
    (("info", "tags"), ["a"]), (("info", "client_request_id"), 7), (("data",), ["x"]),
    (("*root*", "attributes"), ["x"]), (("info", "request_time"), 10**17),
    (("info", "execution_duration_ms"), 10**29 + 7),
    (("info", "trace_metadata", "tracewire.sampling_fraction"), None),
    (("info", "trace_metadata", "mlflow.trace.session"), {"id": 1}),
    (("info", "request_time"), DELETE), (("info", "request_time"), None),
    (("info", "trace_metadata", "tracewire.sampling_fraction"), "0"),
    (("*root*", "attributes", "http.status_code"), "99999999999"),
])
def test_the_reported_poison_messages_are_dead_letters(path: tuple[str, ...], value: Any) -> None:
    with pytest.raises(PoisonMessage):
        record_from_message(corrupt(base_traces()[0], [(path, value)], 0))


def test_an_untouched_trace_is_a_row() -> None:
    assert assert_valid_or_poison(corrupt(base_traces()[0], [], 0))


@pytest.mark.kafka
@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(messages=st.lists(st.tuples(st.integers(0, 39), st.lists(corruption, max_size=2)),
                         min_size=80, max_size=120))
def test_consume_never_stops_on_poison_and_writes_each_record_once(
    broker: Broker, messages: list[tuple[int, list[Any]]]
) -> None:
    values = [corrupt(base_traces()[index], changes, serial)
              for serial, (index, changes) in enumerate(messages)]
    values[len(values) // 2] = b"\xff\xfe not even utf-8"
    topic = unique_topic()
    asyncio.run(produce(broker.bootstrap, topic, values, partitions=3))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "traces"
        consumer = TraceConsumer(broker.bootstrap, topic, "poison", str(table), max_batch=30)

        def done(stats: Any) -> None:
            if stats.written + stats.dead_letters >= len(values):
                consumer.stop()

        consumer.progress = done
        stats = asyncio.run(consumer.run(idle_exit=20))  # returns, never raises
        assert stats.written + stats.dead_letters == len(values)
        written = deltalake.DeltaTable(str(table)).to_pyarrow_table(columns=["trace"])
        rows = written.column("trace").to_pylist()
        dead_table = Path(tmp) / "traces_dead_letter"
        dead = (deltalake.DeltaTable(str(dead_table)).to_pyarrow_table().to_pylist()
                if dead_table.exists() else [])
        assert all(d["error"] and d["topic"] == topic and d["offset"] >= 0 for d in dead)
        landed = Counter([r.encode() for r in rows] + [d["value"] for d in dead])
        assert landed == Counter(values)
        assert len(rows) == sum(assert_valid_or_poison(v) for v in values)
