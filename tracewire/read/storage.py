"""Object-store checks shared by the command line: fail with one clear line instead of letting
the object-store client probe the cloud metadata address (and log a warning per retry) when no
credentials are configured."""

from __future__ import annotations

import os
from collections.abc import Mapping

_S3_SCHEMES = ("s3://", "s3a://")
_CREDENTIAL_KEYS = (
    "aws_access_key_id", "access_key_id", "aws_profile", "profile", "aws_web_identity_token_file",
    "aws_container_credentials_relative_uri", "aws_container_credentials_full_uri", "aws_session_token",
)


def check_object_store(uri: str, storage_options: Mapping[str, str] | None = None,
                       env: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` when ``uri`` is on S3 and no credential source is configured.

    Credentials may come from ``storage_options`` or the environment (keys, ``AWS_PROFILE``, web
    identity, container credentials, ``~/.aws/credentials``).  The EC2 instance-metadata service is
    used only when explicitly allowed with ``AWS_EC2_METADATA_DISABLED=false``.
    """
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
