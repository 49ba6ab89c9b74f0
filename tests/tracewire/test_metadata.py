from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import tracewire
from sinks import MemorySink
from tests.conftest import only_trace
from tracewire import metadata


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:ghp_secret@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://token@gitlab.com/org/repo", "https://gitlab.com/org/repo"),
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git:pw@host:22/repo", "ssh://host:22/repo"),
    ],
    ids=["user-pass", "token", "clean", "scp", "ssh"],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert metadata.strip_credentials(url) == expected


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
             "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()


def test_git_metadata_read_from_dot_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "feature/x")
    _git(repo, "remote", "add", "origin", "https://bot:s3cret@example.com/acme/svc.git")
    (repo / "f").write_text("x")
    _git(repo, "add", "f")
    _git(repo, "commit", "-q", "-m", "c")
    sub = repo / "pkg"
    sub.mkdir()
    info = metadata.git_metadata(sub)
    assert info[metadata.GIT_COMMIT] == _git(repo, "rev-parse", "HEAD")
    assert info[metadata.GIT_BRANCH] == "feature/x"
    assert info[metadata.GIT_REPO_URL] == "https://example.com/acme/svc.git"
    _git(repo, "pack-refs", "--all")
    assert metadata.git_metadata(sub)[metadata.GIT_COMMIT] == _git(repo, "rev-parse", "HEAD")


def test_no_git_means_no_keys(tmp_path: Path) -> None:
    assert metadata.git_metadata(tmp_path) == {} or not (tmp_path / ".git").exists()


def test_deployment_env_mapping() -> None:
    env = {"APP_VERSION": "1.2.3", "REGION": "eu-west-1", "APP_ENVIRONMENT": "production",
           "MLFLOW_ACTIVE_MODEL_ID": "m-42", "CUSTOM": "c"}
    out = metadata.process_metadata((("app_version", "APP_VERSION"), ("region", "REGION"),
                                     ("environment", "APP_ENVIRONMENT"),
                                     ("deployment_id", "DEPLOYMENT_ID"), ("custom", "CUSTOM")), env)
    assert out["app_version"] == "1.2.3"
    assert out["region"] == "eu-west-1"
    assert out["environment"] == "production"
    assert out["custom"] == "c"
    assert "deployment_id" not in out
    assert out[metadata.MODEL_ID] == "m-42"
    assert out[metadata.SOURCE_TYPE] == "PRODUCTION"
    assert out[metadata.SOURCE_NAME]


def test_metadata_lands_in_every_trace(sink: MemorySink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_VERSION", "9.9")
    monkeypatch.setenv("DEPLOYMENT_ID", "dep-1")
    tracewire.configure(enabled=True, sinks=[sink])
    with tracewire.start_span("root"):
        pass
    meta = only_trace(sink).info.trace_metadata
    assert meta["app_version"] == "9.9"
    assert meta["deployment_id"] == "dep-1"
    assert meta["mlflow.trace_schema.version"] == "3"
    assert meta["mlflow.source.name"]
