"""Write self-contained kubeconfig files (certificates embedded, so they can be copied anywhere)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from .pki import KeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write(
    path: Path,
    server: str,
    ca_cert: Path,
    *,
    user: str,
    client: KeyPair | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a kubeconfig for ``user`` that authenticates with a client cert or a bearer token."""
    credentials: dict[str, str] = {}
    if client is not None:
        credentials = {"client-certificate-data": _b64(client.cert), "client-key-data": _b64(client.key)}
    elif token is not None:
        credentials = {"token": token}
    context: dict[str, str] = {"cluster": "local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@local", "context": context}],
        "current-context": f"{user}@local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
