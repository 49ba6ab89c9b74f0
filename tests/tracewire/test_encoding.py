from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire.encoding import dumps, dumps_capped

np = pytest.importorskip("numpy")


@dataclasses.dataclass
class Doc:
    id: int
    text: str


class Color(enum.Enum):
    RED = "red"


class NoDict:
    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = 1


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Exploding:
    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        raise RuntimeError("boom")


def test_common_values_are_readable() -> None:
    value = {
        "doc": Doc(1, "a"),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "id": uuid.UUID(int=1),
        "color": Color.RED,
        "tags": {"b", "a"},
        "pair": (1, 2),
        "blob": b"hello",
        "binary": b"\xff\x00",
        "error": ValueError("bad"),
        "array": np.arange(3),
        "scalar": np.float32(1.5),
        "big": 2**80,
        "dec": decimal.Decimal("1.5"),
        1: "int key",
    }
    decoded = orjson.loads(dumps(value))
    assert decoded["doc"] == {"id": 1, "text": "a"}
    assert decoded["when"].startswith("2024-01-02T03:04:05")
    assert decoded["id"] == str(uuid.UUID(int=1))
    assert decoded["color"] == "red"
    assert decoded["tags"] == ["a", "b"]
    assert decoded["pair"] == [1, 2]
    assert decoded["blob"] == "hello"
    assert decoded["binary"] == {"__bytes_base64__": "/wA="}
    assert decoded["error"] == {"type": "ValueError", "message": "bad"}
    assert decoded["array"] == [0, 1, 2]
    assert decoded["scalar"] == 1.5
    assert decoded["big"] == str(2**80)
    assert decoded["1"] == "int key"


def test_cycles_are_cut() -> None:
    a: dict[str, Any] = {"name": "a"}
    a["self"] = a
    items: list[Any] = [1]
    items.append(items)
    decoded = orjson.loads(dumps({"a": a, "items": items}))
    assert decoded["a"]["self"] == "<cycle>"
    assert decoded["items"] == [1, "<cycle>"]


def test_objects_without_dict_and_broken_ones_never_raise() -> None:
    assert "NoDict" in orjson.loads(dumps(NoDict()))
    assert orjson.loads(dumps(BadRepr())) == "<unrepresentable BadRepr>"
    assert isinstance(orjson.loads(dumps(Exploding())), str)


def test_pydantic_models() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Message(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        role: str
        content: str

    assert orjson.loads(dumps(Message(role="user", content="hi"))) == {"role": "user", "content": "hi"}


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children) | st.tuples(children),
    max_leaves=30,
))
def test_any_value_gives_valid_json(value: Any) -> None:
    orjson.loads(dumps(value))


def test_cap_replaces_large_values_with_marker() -> None:
    text, truncated = dumps_capped("x" * 5000, 1000)
    assert truncated
    marker = orjson.loads(text)
    assert marker["tracewire.truncated"] is True
    assert marker["original_size"] == 5000
    assert marker["preview"] == "x" * 1000
    text, truncated = dumps_capped({"k": "y" * 5000}, 1000)
    assert truncated and orjson.loads(text)["original_size"] > 5000
    assert dumps_capped({"k": "small"}, 1000) == ('{"k":"small"}', False)


def test_unserializable_span_values_never_reach_user_code(sink: MemorySink) -> None:
    loop: list[Any] = []
    loop.append(loop)

    @tracewire.trace
    def f(x: Any) -> Any:
        return BadRepr()

    f(loop)
    span = only_trace(sink).data.spans[0]
    assert span.inputs == {"x": ["<cycle>"]}
    assert span.outputs == "<unrepresentable BadRepr>"


def test_value_cap_marks_root_request(sink: MemorySink) -> None:
    tracewire.configure(enabled=True, sinks=[sink], max_value_bytes=1024)

    @tracewire.trace
    def root(body: str) -> str:
        return "ok"

    root("z" * 10_000)
    assert tracewire.flush()
    record = sink.records[0]
    assert "MAX_REQUEST_SIZE_EXCEEDED" in record.logging_error_codes
    assert record.metadata["tracewire.truncated"] == "true"
    span = record.to_trace().data.spans[0]
    assert span.inputs["tracewire.truncated"] is True


# -- one bad value spoils only itself (issue 12) -----------------------------------------------


class DumpRaises:
    """A pydantic-like model whose ``model_dump`` fails; its ``repr`` works."""

    def model_dump(self, mode: str = "json") -> Any:
        raise ValueError("cannot dump")

    def __repr__(self) -> str:
        return "DumpRaises()"


class DictRaises:
    """JSON encoding raises (its ``__dict__`` does); its ``repr`` works."""

    def __init__(self) -> None:
        self.kept = 1

    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        raise RuntimeError("no dict")

    def __repr__(self) -> str:
        return "DictRaises()"


class KeyRaises:
    def __hash__(self) -> int:
        return 1

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "KeyRaises()"


GOOD = {"n": 1, "items": [1, "two", None], "doc": {"id": 7}}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (DumpRaises(), "DumpRaises()"),
        (DictRaises(), "DictRaises()"),
        (BadRepr(), "<unrepresentable BadRepr>"),
        ("lone \udc80 surrogate", "lone \\x80 surrogate"),
        ("lone \ud800 high", "lone \\ud800 high"),
        ([1, DumpRaises(), {"deep": DictRaises()}], [1, "DumpRaises()", {"deep": "DictRaises()"}]),
    ],
    ids=["model_dump", "dict", "repr-raises", "escaped-byte", "surrogate", "nested"],
)
def test_one_bad_value_becomes_its_repr_alone(bad: Any, expected: Any) -> None:
    assert orjson.loads(dumps({**GOOD, "bad": bad})) == {**GOOD, "bad": expected}
    assert orjson.loads(dumps([bad, GOOD])) == [expected, GOOD]


def test_a_key_that_cannot_be_stringified_keeps_the_other_keys() -> None:
    decoded = orjson.loads(dumps({KeyRaises(): DumpRaises(), "ok": 1}))
    assert decoded == {"KeyRaises()": "DumpRaises()", "ok": 1}


@given(st.lists(st.sampled_from([DumpRaises(), DictRaises(), "s\udc80", 1, "x", None]), max_size=8))
def test_bad_values_never_touch_their_neighbours(values: list[Any]) -> None:
    decoded = orjson.loads(dumps({f"k{i}": v for i, v in enumerate(values)}))
    for i, v in enumerate(values):
        if isinstance(v, (int, type(None))) or v == "x":
            assert decoded[f"k{i}"] == v


def test_span_inputs_keep_json_beside_a_bad_argument(sink: MemorySink) -> None:
    @tracewire.trace
    def predict(query: str, model: Any, options: dict[str, Any], path: str) -> str:
        return "ok"

    predict("hello", DumpRaises(), {"temperature": 0.2, "stop": ["\n"]}, "/tmp/caf\udce9")
    predict("again", DictRaises(), {"top_k": 3}, "plain")
    assert tracewire.flush(timeout=10)
    spans = sorted((t.data.spans[0] for t in sink.traces), key=lambda s: s.inputs["query"])
    assert len(spans) == 2
    assert spans[0].inputs == {"query": "again", "model": "DictRaises()", "options": {"top_k": 3},
                               "path": "plain"}
    assert spans[1].inputs == {"query": "hello", "model": "DumpRaises()",
                               "options": {"temperature": 0.2, "stop": ["\n"]}, "path": "/tmp/caf\\xe9"}
