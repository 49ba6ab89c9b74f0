"""Shared request logic: header validation, W3C trace context, body decoding and redaction."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from middleware._body import REDACTED, BodyCapture, Redactor, decode
from middleware._request import RequestConfig, clean_header, resolve
from middleware._tracecontext import parse_traceparent
from tracewire import config

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
REDACT = Redactor()  # the default policy


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (VALID, ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")),
        ("  " + VALID + " ", ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01")),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-future",
         ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "00")),
        (VALID + "-extra", None),  # version 00 has exactly four fields
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),  # upper case is invalid
        ("00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1", None),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", None),
        ("", None),
        ("garbage", None),
    ],
    ids=["valid", "whitespace", "future-version", "v00-extra-field", "version-ff", "zero-trace",
         "zero-parent", "uppercase", "short-trace", "short-parent", "short-flags",
         "future-no-dash", "empty", "garbage"],
)
def test_parse_traceparent(header: str, expected: tuple[str, str, str] | None) -> None:
    assert parse_traceparent(header) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"req-123", "req-123"),
        (b" padded\t", "padded"),
        ("caf\u00e9".encode(), "caf\u00e9"),
        (b"x" * 256, "x" * 256),
        (b"x" * 257, None),
        (b"bad\x01value", None),
        (b"bad\x7fvalue", None),
        (b"tab\tinside", None),
        (b"\xff\xfe", None),
    ],
    ids=["plain", "ows-stripped", "utf8", "256-chars", "257-chars", "control", "del", "tab-inside",
         "undecodable"],
)
def test_clean_header(raw: bytes, expected: str | None) -> None:
    assert clean_header(raw) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"a": 1, "b": [1, 2]}', "application/json", {"a": 1, "b": [1, 2]}),
        (b'{"a": 1}', "application/vnd.api+json; charset=utf-8", {"a": 1}),
        (b'{"a": 1}', "", {"a": 1}),
        (b"{not json", "application/json", "{not json"),
        (b"a=1&b=two&a=3&empty=", "application/x-www-form-urlencoded",
         {"a": ["1", "3"], "b": "two", "empty": ""}),
        (b"hello", "text/plain", "hello"),
        (b'{"a": 1}', "text/plain", {"a": 1}),
        (b"\x89PNG\r\n\x1a\n\xff", "image/png", {"tracewire.binary": True, "content_type": "image/png",
                                                  "size": 9}),
    ],
    ids=["json", "json-suffix", "json-untyped", "bad-json", "form", "text", "text-braces", "binary"],
)
def test_decode(body: bytes, content_type: str, expected: Any) -> None:
    value = decode(body, content_type, REDACT)
    if isinstance(value, orjson.Fragment):  # clean JSON is recorded as the very text received
        assert orjson.dumps(value) == body
        value = orjson.loads(body)
    assert value == expected


def test_redaction_is_nested_and_case_insensitive() -> None:
    value = {
        "user": "ann",
        "Password": "hunter2",
        "nested": {"X-API_KEY-Primary": "k", "items": [{"refresh_token": "t", "keep": 1}]},
        "list": [["secret-ish"], {"client_secret": {"deep": "x"}}],
    }
    assert REDACT.redact(value) == {
        "user": "ann",
        "Password": REDACTED,
        "nested": {"X-API_KEY-Primary": REDACTED, "items": [{"refresh_token": REDACTED, "keep": 1}]},
        "list": [["secret-ish"], {"client_secret": REDACTED}],
    }


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("access_token", True), ("accessToken", True), ("X-API-Key", True), ("api key", True),
        ("APIKEY", True), ("client_secret", True), ("password_hash", True), ("Authorization", True),
        ("max_tokens", False), ("input_tokens", False), ("tokenizer", False), ("secretary", False),
        ("token_delay_ms", False), ("passwords", True), ("api_keys", True), ("secrets", True),
    ],
    ids=lambda v: str(v),
)
def test_secret_words_do_not_run_on_into_other_words(name: str, secret: bool) -> None:
    redactor = Redactor()
    assert redactor.is_secret(name) is secret
    assert (redactor.redact({name: "v"}) == {name: REDACTED}) is secret
    assert ("v" not in redactor.redact_json_text(f'{{"{name}": "v"}}')) is secret


def test_redaction_of_truncated_previews() -> None:
    text = '{"user": "ann", "password": "hunter2", "api_key": 12345, "n'
    assert "hunter2" not in REDACT.redact_json_text(text)
    assert "12345" not in REDACT.redact_json_text(text)
    assert "hunter2" not in REDACT.redact_form_text("user=ann&password=hunter2&x=1")


def test_body_capture_stops_at_the_cap() -> None:
    capture = BodyCapture(cap=100)
    for _ in range(50):
        capture.add(b"x" * 64)
    capture.add(b"")
    assert capture.size == 3200
    assert capture.kept == 100
    assert capture.truncated
    marker = capture.value("application/octet-stream", REDACT)
    assert marker["tracewire.truncated"] is True
    assert marker["original_size"] == 3200
    assert marker["preview"] == "x" * 100


def test_body_capture_empty_is_none() -> None:
    assert BodyCapture(cap=100).value("application/json", REDACT) is None


def test_secret_headers_cannot_be_configured_for_capture() -> None:
    settings = config.load({}, request_id_header="Authorization")
    with pytest.raises(ValueError, match="credentials"):
        RequestConfig(settings)


def test_bad_argument_raises() -> None:
    with pytest.raises(ValueError, match="exclude_paths"):
        resolve({"exclude_paths": ["(unclosed"]})
    with pytest.raises(ValueError, match="unknown tracewire setting"):
        resolve({"no_such_setting": 1})


def test_middleware_keyword_arguments_are_every_setting() -> None:
    """The typed keyword arguments of both middleware constructors (``MiddlewareSettings``) are
    exactly the settings (``config.SETTINGS``) plus ``sinks``: they cannot drift apart."""
    from middleware._request import MiddlewareSettings

    assert set(MiddlewareSettings.__annotations__) == {s.name for s in config.SETTINGS} | {"sinks"}
