"""Trace metadata that is the same for every trace of a process, resolved once.

Source name/type, git commit/branch/repo URL (read from ``.git`` directly, never GitPython,
never a subprocess on the request path), the active model id, and deployment env vars.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"
GIT_BRANCH = "mlflow.source.git.branch"
GIT_REPO_URL = "mlflow.source.git.repoURL"
MODEL_ID = "mlflow.modelId"


def strip_credentials(url: str) -> str:
    """Remove ``user:password@`` from a URL; scp-like ``git@host:path`` stays as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / ".git"
        if candidate.is_dir():
            return candidate
        if candidate.is_file():  # worktree or submodule: "gitdir: <path>"
            text = candidate.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return target if target.is_absolute() else (folder / target).resolve()
    return None


def _common_dir(git_dir: Path) -> Path:
    common = git_dir / "commondir"
    if common.is_file():
        return (git_dir / common.read_text().strip()).resolve()
    return git_dir


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    for base in (git_dir, _common_dir(git_dir)):
        loose = base / ref
        if loose.is_file():
            return loose.read_text().strip() or None
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(errors="replace").splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref and re.fullmatch(r"[0-9a-f]{40,64}", sha):
                    return sha
    return None


def _origin_url(git_dir: Path) -> str | None:
    config = _common_dir(git_dir) / "config"
    if not config.is_file():
        return None
    section = None
    for line in config.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == '[remote "origin"]' and line.startswith("url"):
            return line.partition("=")[2].strip() or None
    return None


def git_metadata(start: Path | None = None) -> dict[str, str]:
    """Commit, branch and origin URL of the repository holding ``start`` (absent keys if none)."""
    try:
        git_dir = _find_git_dir((start or Path.cwd()).resolve())
        if git_dir is None:
            return {}
        out: dict[str, str] = {}
        head = (git_dir / "HEAD").read_text().strip()
        if head.startswith("ref:"):
            ref = head[4:].strip()
            out[GIT_BRANCH] = ref.removeprefix("refs/heads/")
            commit = _resolve_ref(git_dir, ref)
        else:
            commit = head
        if commit:
            out[GIT_COMMIT] = commit
        url = _origin_url(git_dir)
        if url:
            out[GIT_REPO_URL] = strip_credentials(url)
        return out
    except OSError:
        return {}


def _source_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "")
    return os.path.basename(path) if path else "<unknown>"


def _source_type() -> str:
    if "ipykernel" in sys.modules:
        return "NOTEBOOK"
    main = sys.modules.get("__main__")
    return "LOCAL" if getattr(main, "__file__", None) else "UNKNOWN"


def process_metadata(
    metadata_from_env: tuple[tuple[str, str], ...], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Metadata shared by all traces of this process."""
    env = os.environ if environ is None else environ
    out = {SOURCE_NAME: _source_name(), SOURCE_TYPE: _source_type()}
    if env.get("APP_ENVIRONMENT"):
        out[SOURCE_TYPE] = env["APP_ENVIRONMENT"].upper()
    out.update(git_metadata())
    if env.get("MLFLOW_ACTIVE_MODEL_ID"):
        out[MODEL_ID] = env["MLFLOW_ACTIVE_MODEL_ID"]
    for key, var in metadata_from_env:
        value = env.get(var)
        if value:
            out[key] = value
    return out
