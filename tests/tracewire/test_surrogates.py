"""Lone surrogates (what ``os.fsdecode`` returns for undecodable bytes) never raise into user
code and never cost the trace: the value is exported with the bytes escaped (issue 10 item 5)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracewire
from sinks import JsonlSink, MemorySink
from tests.conftest import only_trace
from tracewire.encoding import clean_str, dumps

# b"caf\xe9" decoded the way os.fsdecode does on a UTF-8 file system: "caf\udce9".
LONE = b"caf\xe9".decode("utf-8", "surrogateescape")
ESCAPED = "caf\\xe9"


def test_the_value_really_is_not_utf8() -> None:
    with pytest.raises(UnicodeEncodeError):
        LONE.encode("utf-8")
    if os.name == "posix":
        assert os.fsdecode(b"caf\xe9") == LONE


def exported(sink: MemorySink) -> dict[str, object]:
    trace = only_trace(sink)
    assert tracewire.stats()["processing_errors"] == 0
    (record,) = sink.records
    data: dict[str, object] = orjson.loads(record.payload)  # valid UTF-8 JSON
    assert trace.info.trace_id == record.trace_id
    return data


def root_attributes(data: dict[str, object]) -> dict[str, object]:
    spans = data["data"]["spans"]  # type: ignore[index]
    return {k: json.loads(v) for k, v in spans[0]["attributes"].items()}


def test_span_set_attribute(sink: MemorySink) -> None:
    with tracewire.start_span("read") as span:
        span.set_attribute("file", LONE)  # no TypeError into user code
        span.set_attribute(LONE, 1)
        span.set_attributes({"nested": {"path": [LONE]}})
    attributes = root_attributes(exported(sink))
    assert attributes["file"] == ESCAPED
    assert attributes[ESCAPED] == 1
    assert attributes["nested"] == {"path": [ESCAPED]}


def test_inputs_and_outputs(sink: MemorySink) -> None:
    @tracewire.trace
    def open_file(path: str) -> dict[str, str]:
        return {LONE: LONE}

    assert open_file(LONE) == {LONE: LONE}
    attributes = root_attributes(exported(sink))
    assert attributes["mlflow.spanInputs"] == {"path": ESCAPED}
    assert attributes["mlflow.spanOutputs"] == {ESCAPED: ESCAPED}


def test_metadata_tags_and_session_id(sink: MemorySink) -> None:
    with tracewire.start_span("request"):
        tracewire.update_current_trace(metadata={"file": LONE, LONE: "k"}, tags={"t": LONE},
                                       session_id=LONE, user=LONE, client_request_id=LONE)
    data = exported(sink)
    info = data["info"]
    assert info["trace_metadata"]["file"] == ESCAPED  # type: ignore[index]
    assert info["trace_metadata"][ESCAPED] == "k"  # type: ignore[index]
    assert info["trace_metadata"]["mlflow.trace.session"] == ESCAPED  # type: ignore[index]
    assert info["trace_metadata"]["mlflow.trace.user"] == ESCAPED  # type: ignore[index]
    assert info["tags"]["t"] == ESCAPED  # type: ignore[index]
    assert info["client_request_id"] == ESCAPED  # type: ignore[index]
    (record,) = sink.records
    assert record.session_id == ESCAPED and record.user_id == ESCAPED  # what sinks key on


def test_span_name_events_and_status(sink: MemorySink) -> None:
    with tracewire.start_span(LONE, span_type=LONE) as span:
        span.add_event(LONE, {"file": LONE})
        span.set_status("ERROR", LONE)
        with tracewire.start_span("child " + LONE):
            pass
    data = exported(sink)
    root, child = data["data"]["spans"]  # type: ignore[index]
    assert root["name"] == ESCAPED and child["name"] == "child " + ESCAPED
    assert root["events"][0] == {**root["events"][0], "name": ESCAPED, "attributes": {"file": ESCAPED}}
    assert root["status"]["message"] == ESCAPED
    assert json.loads(root["attributes"]["mlflow.spanType"]) == ESCAPED
    assert data["info"]["tags"]["mlflow.traceName"] == ESCAPED  # type: ignore[index]


def test_client_api(sink: MemorySink) -> None:
    client = tracewire.TracingClient()
    root = client.start_trace(LONE, inputs={"p": LONE}, tags={"t": LONE}, metadata={"m": LONE})
    root.set_attribute("a", LONE)
    client.end_trace(root.trace_id, outputs=LONE)
    data = exported(sink)
    attributes = root_attributes(data)
    assert attributes["mlflow.spanInputs"] == {"p": ESCAPED}
    assert attributes["mlflow.spanOutputs"] == ESCAPED and attributes["a"] == ESCAPED
    assert data["info"]["trace_metadata"]["m"] == ESCAPED  # type: ignore[index]


@pytest.fixture
def jsonl(tmp_path: os.PathLike[str]) -> Iterator[str]:
    path = os.path.join(tmp_path, "traces.jsonl")
    tracewire.configure(enabled=True, sinks=[JsonlSink(path)], batch_interval=0.01)
    yield path
    tracewire.shutdown(timeout=5)
    tracewire.configure(enabled=False)


def test_a_file_sink_writes_the_trace(jsonl: str) -> None:
    with tracewire.start_span(LONE) as span:
        span.set_attribute("file", LONE)
        tracewire.update_current_trace(session_id=LONE, metadata={"m": LONE})
    assert tracewire.flush(10)
    stats = tracewire.stats()
    assert stats["processing_errors"] == 0 and not any(stats["export_errors"].values())
    with open(jsonl, encoding="utf-8") as f:
        (line,) = f.read().splitlines()
    trace = tracewire.Trace.from_json(line)
    assert trace.info.session_id == ESCAPED and trace.data.spans[0].name == ESCAPED


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, blacklist_categories=())))
def test_any_str_encodes(text: str) -> None:
    cleaned = clean_str(text)
    cleaned.encode("utf-8")
    if not any("\ud800" <= c <= "\udfff" for c in text):
        assert cleaned == text  # valid text is never touched
    assert orjson.loads(dumps({text: [text]})) == {cleaned: [cleaned]}
