"""The redaction policy: the word rule, structured values, tolerant text; generated spellings."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracewire
from middleware._body import BodyCapture, decode
from sinks import MemorySink
from tracewire.encoding import dumps
from tracewire.redaction import REDACTED, Redactor

POLICY = Redactor()
SECRET = "zq9-SECRET-4ab"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True), ("Passwords", True), ("passwd", True), ("user_password_hash", True),
        ("secret", True), ("secrets", True), ("client_secret", True), ("secretary", False),
        ("api_key", True), ("api_keys", True), ("apiKey", True), ("X-API-Key", True), ("APIKEY", True),
        ("api key", True), ("apikeys", True), ("token", True), ("access_token", True),
        ("refreshToken", True), ("X-Auth-Token", True), ("id_token", True),
        ("token_delay_ms", False), ("max_tokens", False), ("input_tokens", False),
        ("total_tokens", False), ("output_tokens", False), ("tokenizer", False), ("tokens", False),
        ("token_type", False), ("authorization", True), ("Proxy-Authorization", True),
        ("private_key", True), ("privateKey", True), ("credentials", True), ("credential", True),
        ("cookie", True), ("Set-Cookie", True), ("cookies", True), ("passphrase", True),
        ("username", False), ("question", False), ("keyword", False), ("monkey", False),
    ],
    ids=lambda v: str(v),
)
def test_names_match_by_word(name: str, secret: bool) -> None:
    assert POLICY.is_secret(name) is secret


def test_policy_is_configurable() -> None:
    custom = Redactor(("ssn", "*pin"))
    assert custom.is_secret("customer_ssn") and custom.is_secret("cardPin")
    assert not custom.is_secret("pin_length") and not custom.is_secret("password")
    assert Redactor(()).redact({"password": "x"}) == {"password": "x"}


def test_structured_values_keep_identity_when_nothing_is_secret() -> None:
    value = {"a": [1, {"b": "c"}], "max_tokens": 3}
    assert POLICY.redact(value) is value


@dataclasses.dataclass
class Credentials:
    user: str
    api_key: str


def test_dataclasses_and_pydantic_models_are_redacted() -> None:
    from pydantic import BaseModel

    class Login(BaseModel):
        username: str
        password: str

    assert POLICY.redact(Credentials("ann", SECRET)) == {"user": "ann", "api_key": REDACTED}
    login = Login(username="ann", password=SECRET)
    assert POLICY.redact([login]) == [{"username": "ann", "password": REDACTED}]
    keep = Credentials.__new__(Credentials)
    keep.user, keep.api_key = "ann", "x"
    assert Redactor(("password",)).redact(keep) is keep


@pytest.mark.parametrize(
    "text",
    [
        '{"password": "S", "a": 1,}',
        '{"pass\\u0077ord": "S"}',
        '{"api_key": ["a", "S", {"x": "S"}], "b": 2',
        '{"auth": {"token": "S"',
        '{"credentials": {"user": "u", "pw": "S"}}',
        '[{"secrets": [["S"]]}]',
        '{password: "S"}',
        '{"password"  :\n  "S\\"still secret"}',
        '{"password": "S',
    ],
)
def test_tolerant_json_text(text: str) -> None:
    out = POLICY.redact_json_text(text)
    assert "S" not in out.replace("SECRET", ""), out
    assert REDACTED in out


def test_tolerant_json_text_with_a_limit_redacts_before_it_cuts() -> None:
    text = '{"password": "' + "S" * 5000 + '", "n": "' + "v" * 5000 + '"}'
    out = POLICY.redact_json_text(text, 100)
    assert out.startswith('{"password": "[REDACTED]", "n": "vvv') and len(out) == 100


# -- generated spellings, nesting, escapes, cuts ----------------------------------------------------

BASES = [["password"], ["passwords"], ["passwd"], ["secret"], ["secrets"], ["api", "key"], ["api", "keys"],
         ["apikey"], ["client", "secret"], ["private", "key"], ["credentials"], ["cookie"],
         ["authorization"], ["access", "token"], ["refresh", "token"], ["token"]]
AFFIXES = st.lists(st.sampled_from(["x", "user", "my", "new", "primary", "db", "2"]), max_size=2)


def render(words: list[str], style: str) -> str:
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "upper":
        return "_".join(words).upper()
    return {"snake": "_", "kebab": "-", "space": " ", "dot": "."}[style].join(words)


@st.composite
def secret_names(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(BASES))
    before = draw(AFFIXES)
    after = [] if base[-1] == "token" else draw(AFFIXES)  # token counts only as the last word
    style = draw(st.sampled_from(["snake", "kebab", "space", "dot", "camel", "pascal", "upper"]))
    return render([*before, *base, *after], style)


secret_values = st.sampled_from([SECRET, [SECRET], ["a", SECRET], {"v": SECRET}, [[{"x": SECRET}]]])


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, str]:
    """A JSON value holding a secret at a random depth, and the secret's key."""
    key = draw(secret_names())
    value: Any = {key: draw(secret_values), "keep": "VISIBLE"}
    for _ in range(draw(st.integers(0, 6))):
        wrap = draw(st.sampled_from(["list", "dict"]))
        value = [1, value] if wrap == "list" else {draw(st.sampled_from(["data", "items", "payload"])): value}
    return value, key


def escaped(text: str, key: str, draw_mask: list[bool]) -> str:
    """``text`` with some characters of ``key`` written as \\uXXXX escapes."""
    spelled = "".join(f"\\u{ord(c):04x}" if (draw_mask[i % len(draw_mask)] and c.isalnum()) else c
                      for i, c in enumerate(key))
    return text.replace(json.dumps(key), '"' + spelled + '"')


HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(documents(), st.lists(st.booleans(), min_size=1, max_size=5),
       st.sampled_from(["application/json", "text/plain", "", "application/vnd.x+json"]))
def test_generated_json_bodies_never_keep_the_secret(doc: tuple[Any, str], mask: list[bool],
                                                      content_type: str) -> None:
    value, key = doc
    text = escaped(json.dumps(value), key, mask)
    for body in (text, text[:-1] + ",]" if text.endswith("]") else text[:-1] + ",}"):  # valid, then not
        decoded = decode(body.encode(), content_type, POLICY)
        out = orjson.dumps(decoded).decode() if isinstance(decoded, orjson.Fragment) else dumps(decoded)
        assert SECRET not in out, (body, out)
        assert "VISIBLE" in out


@HYPOTHESIS
@given(documents(), st.lists(st.booleans(), min_size=1, max_size=5), st.integers(1, 400),
       st.sampled_from(["application/json", "text/plain"]))
def test_generated_capped_bodies_preview_never_keeps_the_secret(
        doc: tuple[Any, str], mask: list[bool], cap: int, content_type: str) -> None:
    value, key = doc
    body = (escaped(json.dumps(value), key, mask) + " " * 2000).encode()
    capture = BodyCapture(cap)
    capture.add(body)
    marker = capture.value(content_type, POLICY)
    assert marker["tracewire.truncated"] is True
    assert SECRET not in marker["preview"]


@HYPOTHESIS
@given(st.lists(st.tuples(secret_names(), st.booleans()), min_size=1, max_size=4), st.integers(1, 300))
def test_generated_forms_never_keep_the_secret(names: list[tuple[str, bool]], cap: int) -> None:
    from urllib.parse import quote

    form = "&".join(f"{quote(n) if q else n.replace(' ', '+')}={SECRET}" for n, q in names) + "&keep=VISIBLE"
    boundary = "b0undary"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{SECRET}\r\n'
                    for n, _ in names)
    multipart = (parts + f"--{boundary}--\r\n").encode()
    for body, content_type in ((form.encode(), "application/x-www-form-urlencoded"),
                               (multipart, f"multipart/form-data; boundary={boundary}")):
        assert SECRET not in dumps(decode(body, content_type, POLICY))
        capture = BodyCapture(cap)
        capture.add(body + b"&pad=" + b"x" * 2000)
        assert SECRET not in capture.value(content_type, POLICY)["preview"]


@HYPOTHESIS
@given(secret_names(), st.integers(0, 3))
def test_generated_names_in_spans_metadata_and_tags(key: str, depth: int) -> None:
    sink = MemorySink()
    tracewire.configure(enabled=True, sinks=[sink], batch_interval=0.01)
    try:
        value: Any = {key: SECRET}
        for _ in range(depth):
            value = {"inner": [value]}
        with tracewire.start_span("root") as span:
            span.set_inputs(value)
            span.set_outputs([value])
            tracewire.update_current_trace(metadata={key: SECRET, "m": value}, tags={key: SECRET})
        assert tracewire.flush(timeout=10)
        [record] = sink.records
        assert SECRET.encode() not in record.payload
    finally:
        tracewire.shutdown(timeout=5)
        tracewire.configure(enabled=False)


def test_deep_and_cyclic_values(sink: MemorySink) -> None:
    deep: Any = {"password": SECRET}
    for _ in range(150):  # deeper than the walk's limit, within what orjson encodes natively
        deep = {"d": [deep]}
    loop: list[Any] = [{"api_key": SECRET}]
    loop.append(loop)
    with tracewire.start_span("root") as span:
        span.set_inputs({"deep": deep, "loop": loop})
    assert tracewire.flush(timeout=10)
    [record] = sink.records
    assert SECRET.encode() not in record.payload
    assert b"<cycle>" in record.payload and b"<max depth>" in record.payload
