"""Where the command line reads traces from, and the errors a user meets there, in one line each.

``resolve`` turns what the user typed (``./traces``, ``delta:./traces``, ``s3://bucket/t``,
``./traces.jsonl``, ``jsonl:./traces.jsonl``) into a Delta table or a JSON-lines file, and says
what to do when it is neither.  ``check_object_store`` fails with one clear line instead of
letting the object-store client probe the cloud metadata address (and log a warning per retry)
when no credentials are configured.  ``explain`` turns a storage exception (deltalake's carry
Rust debug text) into one line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

_S3_SCHEMES = ("s3://", "s3a://")
_CREDENTIAL_KEYS = (
    "aws_access_key_id", "access_key_id", "aws_profile", "profile", "aws_web_identity_token_file",
    "aws_container_credentials_relative_uri", "aws_container_credentials_full_uri", "aws_session_token",
)
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")


@dataclasses.dataclass(frozen=True)
class Source:
    """A place holding traces: ``kind`` is ``"delta"`` or ``"jsonl"``; ``path`` a path or URI."""

    kind: str
    path: str


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _has_jsonl(folder: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(folder) if name.endswith(_JSONL_SUFFIXES))
    except OSError:
        return []


def resolve(location: str, *, jsonl: bool = True) -> Source:
    """The Delta table or JSON-lines file ``location`` names; ``ValueError`` (one line) when it
    names neither.  ``jsonl=False``: only Delta tables will do (compact, ui)."""
    text = location.strip()
    if not text:
        raise ValueError("no table given: pass a Delta table directory, a .jsonl file or a URI")
    kind = None
    if text.lower().startswith("jsonl:"):
        kind, text = "jsonl", text[len("jsonl:"):].removeprefix("//")
    elif text.lower().startswith("delta:"):
        kind, text = "delta", text[len("delta:"):]
    if not text:
        raise ValueError(f"{location!r} names no path: e.g. delta:./traces or jsonl:./traces.jsonl")
    delta_only = (f"{location}: this command reads Delta tables only, not JSON-lines files (copy the "
                  "file into a table with: tracewire push FILE --to delta:./traces)")
    if kind == "jsonl" and not jsonl:
        raise ValueError(delta_only)
    if _is_remote(text):
        if kind == "jsonl":
            raise ValueError(f"{location}: JSON-lines files are read from local paths only")
        return Source("delta", text)
    local = text.removeprefix("file://")
    if os.path.isfile(local):
        if not jsonl:
            raise ValueError(delta_only)
        if kind == "delta":
            raise ValueError(f"{location} is a file, not a Delta table directory (for a JSON-lines "
                             f"file use: jsonl:{local})")
        return Source("jsonl", local)
    if os.path.isdir(local):
        if kind == "jsonl":
            raise ValueError(f"{location} is a directory, not a JSON-lines file")
        if not os.path.isdir(os.path.join(local, "_delta_log")):
            files = _has_jsonl(local) if jsonl else []
            hint = (f"; it holds {files[0]}: pass {os.path.join(text, files[0])}" if files
                    else "; pass the directory the delta: destination wrote (it holds _delta_log/)")
            raise ValueError(f"{location} is not a Delta table (no _delta_log/ inside){hint}")
        return Source("delta", text)
    what = "file" if kind == "jsonl" or local.endswith(_JSONL_SUFFIXES) else "table or file"
    raise ValueError(f"no such {what}: {location} (check the path; traces are where "
                     "TRACING_DESTINATION pointed, ./traces by default)")


_RUST_DEBUG = re.compile(r"\s*(?:Os\s*\{|Custom\s*\{|Generic\s*\{|source:|backtrace:).*", re.DOTALL)


def explain(exc: BaseException, location: str) -> str:
    """One line for a storage error: what went wrong at ``location``, without Rust debug text."""
    name = type(exc).__name__
    text = str(exc).strip()
    first = _RUST_DEBUG.sub("", text.splitlines()[0] if text else "").strip().rstrip(":,")
    lowered = text.lower()
    if name == "TableNotFoundError" or "no files in log segment" in lowered or "not a delta table" in lowered:
        return f"{location} is not a Delta table (no _delta_log/ there); check the path"
    if "notfound" in lowered.replace(" ", "") or "not found" in lowered or "does not exist" in lowered:
        return f"not found: {location} ({first or name}); check the path"
    if "credential" in lowered or "accessdenied" in lowered.replace(" ", "") or "forbidden" in lowered:
        return (f"cannot read {location}: access denied or no credentials ({first or name}); "
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and AWS_ENDPOINT_URL")
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read {location}: {exc.strerror}"
    return f"cannot read {location}: {first or name}"


def check_object_store(uri: str, storage_options: Mapping[str, str] | None = None,
                       env: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` when ``uri`` is on S3 and no credential source is configured.

    Credentials may come from ``storage_options`` or the environment (keys, ``AWS_PROFILE``, web
    identity, container credentials, ``~/.aws/credentials``).  The EC2 instance-metadata service is
    used only when explicitly allowed with ``AWS_EC2_METADATA_DISABLED=false``.
    """
    uri = uri.removeprefix("delta:")
    if not uri.lower().startswith(_S3_SCHEMES):
        return
    env = os.environ if env is None else env
    options = {k.lower(): v for k, v in (storage_options or {}).items() if v}
    environment = {k.lower(): v for k, v in env.items() if k.upper().startswith("AWS_") and v}
    if any(key in options or key in environment for key in _CREDENTIAL_KEYS):
        return
    if environment.get("aws_ec2_metadata_disabled", "").lower() == "false":
        return
    home = env.get("HOME") or os.path.expanduser("~")
    shared = environment.get("aws_shared_credentials_file") or os.path.join(home, ".aws", "credentials")
    if os.path.isfile(shared):
        return
    raise ValueError(
        f"no AWS credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
        "and AWS_ENDPOINT_URL for an S3-compatible server; to use an EC2 instance role, set "
        "AWS_EC2_METADATA_DISABLED=false"
    )
