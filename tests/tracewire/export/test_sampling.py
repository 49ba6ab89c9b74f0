from __future__ import annotations

import random
import time

import orjson

from tracewire import config
from tracewire.export.finishing import build_trace, keep_probability, process
from tracewire.model import Trace
from tracewire.recording.live import LiveTrace
from tracewire.recording.recorder import new_trace_hex


def big_trace(size: int, state_error: bool = False) -> Trace:
    live = LiveTrace("tr-" + new_trace_hex(), max_value_bytes=10**9, sampling_rate=1.0)
    root = live.new_span("root", None, "CHAIN")
    child = live.new_span("llm", root.span_id, "LLM")
    child.set_inputs("i" * (size // 3))
    child.set_outputs("o" * (size // 2))
    child.end()
    if state_error:
        root.set_status("ERROR")
    root.end_time_ns = time.time_ns()
    return build_trace(live)


def test_keep_probability() -> None:
    assert keep_probability(100, 1000, False) == 1.0
    assert keep_probability(4000, 1000, False) == 0.25
    assert keep_probability(4000, 1000, True) == 1.0


def test_small_trace_kept_with_fraction_one() -> None:
    settings = config.load({})
    record = process(big_trace(1000), settings, random.Random(1))
    assert record is not None
    assert record.sampling_fraction == 1.0
    assert record.metadata["tracewire.sampling_fraction"] == "1.0"
    assert int(record.metadata["tracewire.size_bytes"]) > 1000


def test_large_traces_kept_in_proportion() -> None:
    settings = config.load({}, sampling_size_threshold=10_000, max_trace_bytes=10**7)
    rng = random.Random(7)
    records = [process(big_trace(40_000), settings, rng) for _ in range(400)]
    kept = [r for r in records if r is not None]
    p = kept[0].sampling_fraction
    assert p == 10_000 / int(kept[0].metadata["tracewire.size_bytes"])
    assert 0.25 < p < 0.35  # the trace is a bit over 33 KB
    # Binomial(400, p): 4 standard deviations either side.
    sd = (400 * p * (1 - p)) ** 0.5
    assert abs(len(kept) - 400 * p) < 4 * sd
    reweighted = sum(1 / r.sampling_fraction for r in kept)
    assert abs(reweighted - 400) < 4 * sd / p


def test_error_traces_always_kept() -> None:
    settings = config.load({}, sampling_size_threshold=1000, max_trace_bytes=10**7)
    rng = random.Random(3)
    assert all(process(big_trace(50_000, True), settings, rng) is not None for _ in range(50))


def test_oversized_trace_is_truncated_under_cap_and_marked() -> None:
    settings = config.load({}, sampling_size_threshold=10**8, max_trace_bytes=100_000)
    record = process(big_trace(3_000_000), settings, random.Random(1))
    assert record is not None
    assert len(record.payload) <= 100_000
    assert record.metadata["tracewire.truncated"] == "true"
    assert "TRACE_TRUNCATED" in record.logging_error_codes
    trace = Trace.from_json(record.payload)
    llm = trace.search_spans(name="llm")[0]
    assert llm.outputs["tracewire.truncated"] is True
    assert llm.outputs["original_size"] >= 1_500_000
    assert orjson.loads(record.payload)["info"]["trace_id"] == record.trace_id
