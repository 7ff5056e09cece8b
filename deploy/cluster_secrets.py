"""Write a node's cluster secrets from AWS Secrets Manager to files only its user can read.

cluster.yaml's setup commands run ``python cluster_secrets.py SECRET_ID`` with the node's instance
profile, so no secret lies in the config, the repository or a command line: each key of the JSON
secret becomes ``~/.mammobench/secrets/<key>`` (mode 600), which the start commands read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SECRETS_DIR = Path.home() / ".mammobench" / "secrets"


def write_secret_files(values: dict[str, str], folder: Path = SECRETS_DIR) -> list[Path]:
    """Write each value to ``folder/<key>``, readable by this user only; a key is a plain name."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    paths = []
    for key, value in values.items():
        if not key or Path(key).name != key or key.startswith("."):
            raise ValueError(f"secret key {key!r} is not a plain file name")
        path = folder / key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(value))
        path.chmod(0o600)  # an older file keeps its mode through O_CREAT
        paths.append(path)
    return paths


def fetch_secret(secret_id: str) -> dict[str, str]:
    """The key/value pairs of a JSON secret in AWS Secrets Manager."""
    import boto3

    reply = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    return json.loads(reply["SecretString"])


if __name__ == "__main__":
    written = write_secret_files(fetch_secret(sys.argv[1]))
    print(f"{sys.argv[1]}: wrote {', '.join(p.name for p in written)} to {SECRETS_DIR}")
