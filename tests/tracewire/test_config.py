from __future__ import annotations

import logging
from pathlib import Path

import pytest

import tracewire
from tracewire import config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults() -> None:
    settings = config.load({})
    assert settings.enabled is False
    assert settings.destination == ("delta:./traces",)
    assert settings.sample_rate == 1.0
    assert settings.sampling_size_threshold == 65536
    assert settings.max_trace_bytes == 1048576
    assert settings.max_value_bytes == 262144
    assert settings.capture_bodies is True
    assert settings.queue_max_traces == 10000
    assert settings.queue_max_bytes == 64 * 1024 * 1024
    assert dict(settings.metadata_from_env)["app_version"] == "APP_VERSION"


def test_env_values_are_parsed() -> None:
    settings = config.load({
        "ENABLE_TRACING": "TRUE",
        "TRACING_DESTINATION": "memory:, jsonl:/tmp/x.jsonl",
        "TRACING_SAMPLE_RATE": "0.25",
        "TRACING_EXCLUDE_PATHS": "^/health$,^/metrics",
        "TRACING_METADATA_FROM_ENV": "ver=MY_VERSION",
        "TRACING_KAFKA_ACKS": "all",
    })
    assert settings.enabled is True
    assert settings.destination == ("memory:", "jsonl:/tmp/x.jsonl")
    assert settings.sample_rate == 0.25
    assert settings.exclude_paths == ("^/health$", "^/metrics")
    assert settings.metadata_from_env == (("ver", "MY_VERSION"),)
    assert settings.extra["kafka_acks"] == "all"


def test_keyword_arguments_win_over_env() -> None:
    settings = config.load({"TRACING_SAMPLE_RATE": "0.5", "ENABLE_TRACING": "true"},
                           sample_rate=0.1, enabled=False)
    assert settings.sample_rate == 0.1
    assert settings.enabled is False


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("TRACING_SAMPLE_RATE", "2.0"),
        ("TRACING_SAMPLE_RATE", "lots"),
        ("TRACING_MAX_TRACE_BYTES", "-5"),
        ("ENABLE_TRACING", "maybe"),
        ("TRACING_EXCLUDE_PATHS", "(unclosed"),
        ("TRACING_METADATA_FROM_ENV", "novalue"),
        ("TRACING_REQUEST_ID_HEADER", "bad header"),
    ],
    ids=lambda v: str(v),
)
def test_bad_env_value_warns_and_uses_default(
    env: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tracewire.config"):
        settings = config.load({env: value})
    default = config.load({})
    name = next(s.name for s in config.SETTINGS if s.env == env)
    assert getattr(settings, name) == getattr(default, name)
    assert env in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"max_trace_bytes": "big"}, "max_trace_bytes"),
        ({"enabled": "perhaps"}, "enabled"),
        ({"exclude_paths": ["("]}, "bad regex"),
        ({"no_such_setting": 1}, "unknown tracewire setting"),
    ],
    ids=["rate", "bytes", "enabled", "regex", "unknown"],
)
def test_bad_argument_raises_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config.load({}, **kwargs)


def test_configure_rejects_bad_destination_and_bad_sinks() -> None:
    with pytest.raises(ValueError, match="unknown destination scheme"):
        tracewire.configure(destination="ftp://x")
    with pytest.raises(ValueError, match="no scheme"):
        tracewire.configure(destination="just-a-path")
    with pytest.raises(ValueError, match="Sink instances"):
        tracewire.configure(sinks=["memory:"])


def test_every_setting_is_documented_in_readme() -> None:
    text = README.read_text()
    for setting in config.SETTINGS:
        assert f"`{setting.env}`" in text, setting.env
        assert f"`{setting.name}`" in text, setting.name
